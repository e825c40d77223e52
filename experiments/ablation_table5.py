"""Regenerate the paper's Table 5 (ablations on Market-1501).

Trains every row as a Ray Tune grid of Ray Train trials, records each in MLflow and writes
results/table5.md and results/table5.csv from the store. Without --data-root it runs the smoke profile on
the embedded synthetic data set (CPU, minutes). `python experiments/ablation_table5.py --help` lists the options.
"""

import sys

from orchestration.tables.command import main

if __name__ == "__main__":
    sys.exit(main("table5", script="experiments/ablation_table5.py"))
