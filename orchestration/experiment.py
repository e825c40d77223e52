"""The driver behind ``experiments/*.py``: one call trains a table's grid and writes the table.

Order of work, so that bad input fails before any compute and nothing finished is lost:

1. Build and validate every trial's config (profile, ``--config``, ``--set``, rows, seeds).
2. Read the data set(s) and decode every image once.
3. Check the MLflow store and the Ray cluster (address, GPUs, room for one trial).
4. Create the MLflow parent run (or find it again with ``--resume``) and run the Tune grid:
   one trial per (row, seed), each a ``TorchTrainer``, each recorded as a child run.
5. Evaluate ensemble rows from the saved features, build the table from the store, write it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from mgn.backbone import PretrainedWeightsMissing, find_pretrained
from mgn.config import ConfigError, DatasetName, ExperimentConfig, Init, Profile
from mgn.config_io import apply_overrides, flatten, load_yaml
from mgn.data.folders import OFFICIAL
from mgn.data.loading import load_dataset
from mgn.data.records import DatasetError
from mgn.data.sampler import PKBatchSampler
from mgn.recipes import recipe
from orchestration.paper_tables import TABLES, TableSpec
from orchestration.tracking import (
    PROJECT_ROOT,
    Tracker,
    TrackingUnavailable,
    check_reachable,
    git_commit,
    redact,
    resolve_tracking_uri,
)
from orchestration.trial import is_local, trial_config

STATE_FILE = "mgn_grid.json"


class UsageError(ValueError):
    """Bad command-line input, found before any compute."""


def parser(spec: TableSpec, script: str) -> argparse.ArgumentParser:
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


@dataclass(frozen=True)
class Plan:
    spec: TableSpec
    base: ExperimentConfig
    rows: list[str]
    seeds: list[int]
    configs: dict[tuple[str, int], ExperimentConfig]


def base_config(spec: TableSpec, args: argparse.Namespace) -> ExperimentConfig:
    """Profile (or --config file), then --data-root, scaling flags and --set overrides."""
    profile = args.profile or (Profile.SMOKE.value if args.data_root is None else Profile.PAPER.value)
    config = load_yaml(args.config) if args.config else recipe(profile)
    if args.data_root is not None:
        if config.data.dataset is DatasetName.SYNTHETIC:
            config = replace(config, data=replace(config.data, dataset=spec.dataset))
        config = replace(config, data=replace(config.data, root=str(Path(args.data_root).absolute())))
    scaling = config.scaling
    if args.workers is not None:
        scaling = replace(scaling, num_workers=args.workers)
    if args.cpus_per_worker is not None:
        scaling = replace(scaling, cpus_per_worker=args.cpus_per_worker)
    if args.gpu is not None:
        scaling = replace(scaling, use_gpu=args.gpu)
    return apply_overrides(replace(config, scaling=scaling), args.overrides)


def make_plan(spec: TableSpec, args: argparse.Namespace) -> Plan:
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be >= 1")
    base = base_config(spec, args)
    try:
        rows = [r.name for r in spec.trials(tuple(args.rows) if args.rows else None)]
    except ValueError as error:
        raise UsageError(str(error)) from None
    seeds = list(range(args.seeds))
    configs = {(row, seed): trial_config(spec.key, base, row, seed) for row in rows for seed in seeds}
    return Plan(spec, base, rows, seeds, configs)


def check_data(plan: Plan, log=print) -> None:
    """Read every distinct data set of the plan, decode its images, find the ImageNet weights, and
    check that each trial's P x K sampler can be filled on its number of workers: errors before
    any training."""
    datasets = {}
    for config in plan.configs.values():
        data = config.data
        if data not in datasets:
            if data.dataset is not DatasetName.SYNTHETIC and data.root is None:
                key = data.dataset.value
                raise DatasetError(
                    f"{plan.spec.title} needs {key}, and no --data-root was given. Download it from "
                    f"{OFFICIAL.get(key, OFFICIAL['market1501']).download} and pass --data-root /path/to/datasets "
                    f"(or run without --data-root for the smoke profile on the embedded synthetic data set)."
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                datasets[data] = load_dataset(data)
            for warning in caught:
                log(f"warning: {warning.message}")
            log(f"data: {datasets[data].summary()}")
        if config.model.init is Init.IMAGENET:
            find_pretrained(config.model.backbone, config.model.pretrained_path)
        PKBatchSampler(
            [r.pid for r in datasets[data].train],
            data.p,
            data.k,
            world_size=config.scaling.num_workers,
            with_replacement=data.sample_with_replacement,
        )


def _grids(storage: Path, prefix: str) -> list[Path]:
    return sorted(
        (p for p in storage.glob(f"{prefix}-*") if (p / STATE_FILE).is_file()), key=lambda p: p.name
    )


def grid_folder(
    storage: Path, spec: TableSpec, base: ExperimentConfig, resume: str | None
) -> tuple[Path, dict | None]:
    """A new grid folder, or the one to resume (with its saved state)."""
    prefix = f"{spec.key}-{base.profile.value}-{base.data.dataset.value}"
    if resume is None:
        return storage / f"{prefix}-{dt.datetime.now():%Y%m%d-%H%M%S}", None
    folder = (_grids(storage, prefix) or [None])[-1] if resume == "latest" else storage / resume
    if folder is None or not (folder / STATE_FILE).is_file():
        raise UsageError(f"--resume: no grid of {spec.key} ({prefix}-*) to resume in {storage}")
    return folder, json.loads((folder / STATE_FILE).read_text())


def networks_tag(plan: Plan) -> str:
    """Each row's backbone and branches, and which synthetic set it trained on (a table's
    smoke stand-ins differ: Duke's has 8 cameras, CUHK03's 2)."""
    networks, data = [], []
    for row in plan.rows:
        config = plan.configs[(row, plan.seeds[0])]
        networks.append(f"{row}: {config.model.backbone.value} branches {list(config.model.branches)}")
        synthetic = config.data.synthetic
        data.append(
            f"synthetic data ({synthetic.num_cameras} cameras, box jitter {synthetic.bbox_jitter},"
            f" seed {synthetic.seed})"
            if config.data.dataset is DatasetName.SYNTHETIC
            else ""
        )
    if len(set(data)) == 1:
        return "; ".join(networks) + (f"; all on {data[0]}" if data[0] else "")
    return "; ".join(
        f"{network} on {where}" if where else network for network, where in zip(networks, data, strict=True)
    )


def run(spec: TableSpec, argv: list[str] | None, script: str) -> int:
    args = parser(spec, script).parse_args(argv)
    command = " ".join(
        ["python", script, *(shlex.quote(redact(a)) for a in (argv if argv is not None else sys.argv[1:]))]
    )
    try:
        plan = make_plan(spec, args)
        print(
            f"{spec.title}: profile {plan.base.profile.value}, {len(plan.rows)} rows x {len(plan.seeds)} seeds = {len(plan.configs)} trials"
        )
        check_data(plan)
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        args.storage_path = Path(args.storage_path).absolute()
        folder, state = grid_folder(args.storage_path, spec, plan.base, args.resume)
    except (ConfigError, DatasetError, PretrainedWeightsMissing, TrackingUnavailable, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from orchestration.grid import run_grid  # Ray is imported only once the input is known to be good

    return run_grid(plan, args, uri, folder, state, command)


def main(table: str, argv: list[str] | None = None, script: str | None = None) -> int:
    return run(TABLES[table], argv, script or TABLES[table].script)


def parent_tags(plan: Plan, command: str, uri: str) -> dict[str, str]:
    datasets = sorted({c.data.dataset.value for c in plan.configs.values()})
    return {
        "kind": "table",
        "table": plan.spec.key,
        "profile": plan.base.profile.value,
        "dataset": "+".join(datasets),
        "git_commit": git_commit(),
        "seeds": str(len(plan.seeds)),
        "rows": json.dumps(plan.rows),
        "command": command,
        "networks": networks_tag(plan),
        "tracking_uri": redact(uri),
    }


def record_parent(tracker: Tracker, plan: Plan, experiment_id: str, command: str, uri: str) -> str:
    name = f"{plan.spec.key} {plan.base.profile.value} {dt.datetime.now():%Y-%m-%d %H:%M}"
    run_id = tracker.start_parent(experiment_id, name, parent_tags(plan, command, uri))
    tracker.log_params(run_id, flatten(plan.base))
    return run_id


def is_local_plan(plan: Plan, use_gpu: bool) -> bool:
    return all(is_local(c, use_gpu) for c in plan.configs.values())
