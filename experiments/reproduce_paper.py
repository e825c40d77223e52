"""Reproduce the paper: every trial of Tables 2-5 (Wang et al., 2018) as one study on one cluster.

Each network is trained once however many tables read it (Table 2's MGN is Table 5's MGN row);
every table is written to results/ as its own script writes it, and results/paper.md sets ours
beside the paper's figures with 95% intervals and a verdict per cell. Without --data-root it runs
the smoke profile on the embedded synthetic stand-ins. `python experiments/reproduce_paper.py --help`
lists the options.
"""

import sys

from orchestration.sweep.command import main

if __name__ == "__main__":
    sys.exit(main())
