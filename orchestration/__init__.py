"""Ray Train workers, Ray Tune studies, MLflow records, the paper's tables, cluster submission.

The only package that imports Ray and MLflow; ``mgn`` stays a plain library. Its wings:

- ``runtime/``: running one trial anywhere on a cluster (storage, tracking, Train trial and worker).
- ``study/``: one driver for every study (command line, pre-flight, state, lock, Tune driver).
- ``tables/``: the paper's Tables 2-5 as grids, rendered from MLflow.
- ``recipe_search/``: the recipe search (TPE + ASHA on held-out identities, then the test set).
- ``submit``: a study as a Ray job on a cluster.
"""
