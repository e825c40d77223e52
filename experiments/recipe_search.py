"""Find the training recipe with the best validation mAP, then compare it with the base recipe on the test set.

A Ray Tune search (Optuna's TPE proposing, ASHA stopping poor trials early) over the typed space of
``mgn.recipe_search`` trains every candidate as a Ray Train trial on the training identities less a held-out
validation split, records each as an MLflow child run with its validation curve, and never reads the
test set. The winner is written as results/recipe_search.yaml; it and the base recipe are then trained
on every training identity with several seeds and evaluated once on the test set: results/recipe_search.md.
Without --data-root it searches around smoke() on the embedded synthetic data set (~12 minutes, 2 cores).
`python experiments/recipe_search.py --help` lists the options.
"""

import sys

from orchestration.recipe_search.command import main

if __name__ == "__main__":
    sys.exit(main())
