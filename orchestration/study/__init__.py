"""One driver for every study (a table's grid, the recipe search): the command-line layer and its
pre-flight (``command``, ``preflight``), the study's folder and state (``state``), the driver lock
(``lock``) and the driver itself (``driver``: join the cluster, build or restore a Tuner, run typed
trials, handle interruption, print the runs URL). A study says which trials and what to publish."""
