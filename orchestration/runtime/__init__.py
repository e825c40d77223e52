"""What every study shares to run a trial anywhere on a cluster: joining the cluster (``cluster``),
grid storage on a local disk or an object store (``storage``), the one door to MLflow (``tracking``)
and its spool for when the store is away (``spool``, ``replay``), one trial as a Ray Train
``TorchTrainer`` (``trial``), its worker function (``worker``), its files (``trial_files``),
checkpoints, injected faults and progress lines."""
