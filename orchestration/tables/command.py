"""The driver behind ``experiments/*.py``: its command line, then the plan (``orchestration.tables.planning``)
and the grid (``orchestration.tables.grid``). Bad input fails before Ray is imported.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from mgn.backbone import PretrainedWeightsMissing
from mgn.config import ConfigError, Profile
from mgn.data.records import DatasetError
from orchestration.runtime.storage import Storage, StorageError
from orchestration.runtime.tracking import (
    PROJECT_ROOT,
    TrackingUnavailable,
    check_reachable,
    redact,
    resolve_tracking_uri,
)
from orchestration.study.lock import GridLocked, acquire, release
from orchestration.tables.planning import (
    GridOptions,
    UsageError,
    check_data,
    describe,
    grid_folder,
    make_plan,
)
from orchestration.tables.registry import TABLES
from orchestration.tables.rehearsal import rehearse
from orchestration.tables.resuming import resumed_plan
from orchestration.tables.spec import PaperTable


def add_run_options(p: argparse.ArgumentParser, experiment_name: str, written: str) -> None:
    """Where trials run and their results go: the options a table script and the recipe search share."""
    p.add_argument("--address", help="a running Ray cluster (default: start one on this machine)")
    p.add_argument(
        "--storage-path",
        default=str(PROJECT_ROOT / "ray_results"),
        metavar="PATH_OR_URI",
        help="where trials, checkpoints and features go: a local folder (default ./ray_results) or an "
        "object store every node reaches (s3://bucket/prefix; endpoint and credentials from the "
        "environment)",
    )
    p.add_argument("--shared-storage", action="store_true",
                   help="the local --storage-path is a shared filesystem (NFS) mounted at the same path on every "
                        "node; without it a multi-node cluster needs an object-store URI")  # fmt: skip
    p.add_argument(
        "--tracking-uri", help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    p.add_argument("--experiment-name", default=experiment_name, help="MLflow experiment")
    p.add_argument("--results-dir", type=Path, default=PROJECT_ROOT / "results", help=f"where {written}")
    p.add_argument(
        "--max-failures", type=int, default=2, help="restarts of a failing trial before it is given up"
    )
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--placement-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --address: how long to wait for a node that can hold a trial (an autoscaler "
                        "adding one) before giving up with a message")  # fmt: skip
    p.add_argument("--num-cpus", type=int, help=argparse.SUPPRESS)  # size of a local Ray instance (tests)


def run_options(
    args: argparse.Namespace, log_checkpoint: bool = False, register: bool = False
) -> GridOptions:
    """The ``add_run_options`` of a parsed command line, as the grid (and the search) take them."""
    return GridOptions(
        experiment_name=args.experiment_name,
        results_dir=args.results_dir,
        address=args.address,
        num_cpus=args.num_cpus,
        max_failures=args.max_failures,
        max_concurrent=args.max_concurrent,
        log_checkpoint=log_checkpoint,
        register=register,
        shared_storage=args.shared_storage,
        placement_timeout_s=args.placement_timeout,
    )


def parser(spec: PaperTable, script: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=script,
        description=f"Train and regenerate {spec.title} (Wang et al., 2018). Without --data-root it runs the smoke "
        "profile on the embedded synthetic data set.",
    )
    p.add_argument(
        "--profile",
        choices=[p.value for p in Profile],
        help="recipe (default: smoke without --data-root, else paper)",
    )
    p.add_argument(
        "--config", type=Path, help="a YAML file of the full config (the file form of ExperimentConfig)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set train.epochs=5 (repeatable)")  # fmt: skip
    p.add_argument(
        "--data-root", help=f"folder holding the data set ({spec.dataset.value}); see README for layouts"
    )
    p.add_argument("--rows", action="append", metavar="NAME", help="train only these rows (repeatable)")
    p.add_argument("--seeds", type=int, default=1, help="run every row with seeds 0..N-1 (default 1)")
    p.add_argument("--workers", type=int, help="Ray Train workers per trial (scaling.num_workers)")
    p.add_argument("--cpus-per-worker", type=int, help="CPUs per worker (scaling.cpus_per_worker)")
    p.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on GPUs (default: if the cluster has them)",
    )
    add_run_options(p, spec.experiment_name, "the table is written")
    p.add_argument("--resume", nargs="?", const="latest", metavar="GRID",
                   help="finish an interrupted grid (the latest of this table, or the named folder) without retraining finished trials")  # fmt: skip
    p.add_argument("--log-checkpoint", action="store_true",
                   help="log each trial's trained embedding network to MLflow: an MLflow Model (ONNX, with "
                        "signature and input example) and the weights file the mgn commands read")  # fmt: skip
    p.add_argument("--register", action="store_true",
                   help="with --log-checkpoint: register each model in MLflow's registry, one name per table row "
                        "(e.g. mgn-table5-mgn), so that `mgn extract models:/mgn-table5-mgn/1` finds it")  # fmt: skip
    p.add_argument("--dry-run", type=int, nargs="?", const=1, metavar="STEPS",
                   help="train every row for STEPS steps (default 1) at full shape and embed one test batch, "
                        "print time and peak memory per row and forecast the grid; no Ray, no MLflow")  # fmt: skip
    return p


def check_results_dir(folder: Path) -> None:
    """The table is written after all training: a folder it cannot be written to fails now."""
    folder = folder.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--results-dir {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {folder}: {existing} is not writable; pass a folder you can write")


def run(spec: PaperTable, argv: list[str] | None, script: str) -> int:
    args = parser(spec, script).parse_args(argv)
    command = " ".join(
        ["python", script, *(shlex.quote(redact(a)) for a in (argv if argv is not None else sys.argv[1:]))]
    )
    try:
        if args.dry_run is not None and args.dry_run < 1:
            raise UsageError(f"--dry-run {args.dry_run}: give at least one step")
        plan = make_plan(spec, args)
        print(
            f"{spec.title}: profile {plan.base.profile.value}, {len(plan.rows)} rows x {len(plan.seeds)} seeds = {len(plan.configs)} trials"
        )
        storage = Storage.parse(args.storage_path)
        storage.check()  # an unreachable store or a missing bucket, before the data are decoded
        folder, state = grid_folder(storage, spec, plan.base, args.resume)
        if state is not None:
            plan = resumed_plan(spec, args, plan, folder, state)
            command = state.command  # the table says how to reproduce the grid, not how it was resumed
        shapes, datasets = check_data(plan)
        print("plan (the grid's time left is printed from the measured rate once epochs finish):")
        print("\n".join(describe(plan, shapes)))
        if args.dry_run is not None:
            return rehearse(plan, shapes, datasets, args.dry_run)
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        check_results_dir(args.results_dir)
        lock = acquire(folder)
    except (
        ConfigError, DatasetError, GridLocked, PretrainedWeightsMissing, StorageError, TrackingUnavailable,
        UsageError,
    ) as error:  # fmt: skip
        print(f"error: {error}", file=sys.stderr)
        return 2
    from orchestration.tables.grid import run_grid  # Ray is imported only once the input is known to be good

    options = run_options(args, log_checkpoint=args.log_checkpoint or args.register, register=args.register)
    try:
        return run_grid(plan, options, uri, folder, state, command)
    finally:
        release(folder, lock)


def main(table: str, argv: list[str] | None = None, script: str | None = None) -> int:
    return run(TABLES[table], argv, script or TABLES[table].script)
