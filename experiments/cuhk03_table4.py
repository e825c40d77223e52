"""Regenerate the paper's Table 4 (CUHK03-NP, labeled and detected).

Trains every row as a Ray Tune grid of Ray Train trials, records each in MLflow and writes
results/table4.md and results/table4.csv from the store. Without --data-root it runs the smoke profile on
the embedded synthetic data set (CPU, minutes). `python experiments/cuhk03_table4.py --help` lists the options.
"""

import sys

from orchestration.tables.command import main

if __name__ == "__main__":
    sys.exit(main("table4", script="experiments/cuhk03_table4.py"))
