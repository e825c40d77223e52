"""The driver behind ``experiments/*.py``: its command line, then the plan (``orchestration.planning``)
and the grid (``orchestration.grid``). Bad input fails before Ray is imported.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mgn.backbone import PretrainedWeightsMissing
from mgn.config import ConfigError, Profile
from mgn.data.records import DatasetError
from orchestration.paper_table import PaperTable
from orchestration.paper_tables import TABLES
from orchestration.planning import GridOptions, UsageError, check_data, describe, grid_folder, make_plan
from orchestration.tracking import (
    PROJECT_ROOT,
    TrackingUnavailable,
    check_reachable,
    redact,
    resolve_tracking_uri,
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
    p.add_argument("--address", help="a running Ray cluster (default: start one on this machine)")
    p.add_argument("--storage-path", type=Path, default=PROJECT_ROOT / "ray_results",
                   help="where grids, checkpoints and features go; all nodes must see it (NFS, or a URI)")  # fmt: skip
    p.add_argument(
        "--tracking-uri", help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    p.add_argument("--experiment-name", default=spec.experiment_name, help="MLflow experiment")
    p.add_argument("--resume", nargs="?", const="latest", metavar="GRID",
                   help="finish an interrupted grid (the latest of this table, or the named folder) without retraining finished trials")  # fmt: skip
    p.add_argument(
        "--results-dir", type=Path, default=PROJECT_ROOT / "results", help="where the table is written"
    )
    p.add_argument(
        "--max-failures", type=int, default=2, help="restarts of a failing trial before it is given up"
    )
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--log-checkpoint", action="store_true", help="log each trial's final weights to MLflow")
    p.add_argument("--num-cpus", type=int, help=argparse.SUPPRESS)  # size of a local Ray instance (tests)
    return p


def run(spec: PaperTable, argv: list[str] | None, script: str) -> int:
    args = parser(spec, script).parse_args(argv)
    command = " ".join(
        ["python", script, *(shlex.quote(redact(a)) for a in (argv if argv is not None else sys.argv[1:]))]
    )
    try:
        plan = make_plan(spec, args)
        print(
            f"{spec.title}: profile {plan.base.profile.value}, {len(plan.rows)} rows x {len(plan.seeds)} seeds = {len(plan.configs)} trials"
        )
        shapes = check_data(plan)
        print("plan (the grid's time left is printed from the measured rate once epochs finish):")
        print("\n".join(describe(plan, shapes)))
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        args.storage_path = Path(args.storage_path).absolute()
        folder, state = grid_folder(args.storage_path, spec, plan.base, args.resume)
    except (ConfigError, DatasetError, PretrainedWeightsMissing, TrackingUnavailable, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from orchestration.grid import run_grid  # Ray is imported only once the input is known to be good

    options = GridOptions(
        experiment_name=args.experiment_name,
        results_dir=args.results_dir,
        address=args.address,
        num_cpus=args.num_cpus,
        max_failures=args.max_failures,
        max_concurrent=args.max_concurrent,
        log_checkpoint=args.log_checkpoint,
    )
    return run_grid(plan, options, uri, folder, state, command)


def main(table: str, argv: list[str] | None = None, script: str | None = None) -> int:
    return run(TABLES[table], argv, script or TABLES[table].script)
