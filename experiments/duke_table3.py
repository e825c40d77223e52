"""Regenerate the paper's Table 3 (DukeMTMC-reID).

Trains every row as a Ray Tune grid of Ray Train trials, records each in MLflow and writes
results/table3.md and results/table3.csv from the store. Without --data-root it runs the smoke profile on
the embedded synthetic data set (CPU, minutes). `python experiments/duke_table3.py --help` lists the options.
"""

import sys

from orchestration.tables.command import main

if __name__ == "__main__":
    sys.exit(main("table3", script="experiments/duke_table3.py"))
