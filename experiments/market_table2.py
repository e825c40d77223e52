"""Regenerate the paper's Table 2 (Market-1501, single and multiple query, with and without re-ranking).

Trains every row as a Ray Tune grid of Ray Train trials, records each in MLflow and writes
results/table2.md and results/table2.csv from the store. Without --data-root it runs the smoke profile on
the embedded synthetic data set (CPU, minutes). `python experiments/market_table2.py --help` lists the options.
"""

import sys

from orchestration.tables.command import main

if __name__ == "__main__":
    sys.exit(main("table2", script="experiments/market_table2.py"))
