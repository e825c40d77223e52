"""What Ray Tune + Ray Train + MLflow cost on top of a plain training run.

The same trial (MGN of the smoke profile, 5 epochs: about a minute on 2 cores, with its final
evaluation) is run twice: directly with ``mgn.training.fit``, and as a one-row grid through
``experiments/ablation_table5.py`` (a Tune trial running a TorchTrainer in local mode, every epoch
reported and logged to MLflow, pictures and the table written). Both use 2 threads.

Printed: the direct time; the trial's own time in the grid (Tune's ``time_total_s``) and its ratio
to the direct time (target <= 1.10); and the whole invocation (Ray start, data check, table) for
completeness.

Run: ``python benchmarks/orchestration_overhead.py`` (about 3 minutes).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.data import load_dataset  # noqa: E402
from mgn.recipes import smoke  # noqa: E402
from mgn.table5 import ROWS_BY_NAME  # noqa: E402
from mgn.training import fit  # noqa: E402
from orchestration.tables.command import main as run_table  # noqa: E402

EPOCHS = 5


def main() -> None:
    torch.set_num_threads(2)
    config = ROWS_BY_NAME["MGN"].config(smoke())
    config = replace(
        config,
        train=replace(config.train, epochs=EPOCHS),
        optimizer=replace(config.optimizer, warmup_epochs=1, milestones=(4,)),
    )
    dataset = load_dataset(config.data)
    began = time.perf_counter()
    fit(config, dataset)
    direct = time.perf_counter() - began
    print(f"direct fit():                      {direct:6.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        args = ["--rows", "MGN", "--cpus-per-worker", "2", "--storage-path", f"{tmp}/ray", "--tracking-uri",
                f"sqlite:///{tmp}/mlflow.db", "--results-dir", f"{tmp}/results", "--set", f"train.epochs={EPOCHS}",
                "--set", "optimizer.warmup_epochs=1", "--set", "optimizer.milestones=[4]"]  # fmt: skip
        began = time.perf_counter()
        assert run_table("table5", args) == 0
        invocation = time.perf_counter() - began
        (result,) = Path(tmp, "ray").rglob("result.json")
        trial = json.loads(result.read_text().splitlines()[-1])["time_total_s"]
    print(f"the same trial in a Tune grid:     {trial:6.1f} s   ratio {trial / direct:.3f} (target <= 1.10)")
    print(
        f"the whole invocation (Ray start-up, data check, MLflow, pictures, table): {invocation:6.1f} s   ratio {invocation / direct:.3f}"
    )


if __name__ == "__main__":
    main()
