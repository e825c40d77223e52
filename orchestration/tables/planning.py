"""Planning a grid, without Ray: every trial's config, the data checked, the grid folder and its
state, the parent run. ``orchestration.tables.grid`` runs what is planned here.

Order of work, so that bad input fails before any compute and nothing finished is lost:

1. Build and validate every trial's config (profile, ``--config``, ``--set``, rows, seeds).
2. Read the data set(s) and decode every image once; find ImageNet weights; fill the P x K sampler.
3. Find the grid folder (new, or the one to resume with its saved state).
4. Create the MLflow parent run (or find it again with ``--resume``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from mgn.backbone import find_pretrained, pretrained_identity
from mgn.config import DataConfig, DatasetName, Epoch, ExperimentConfig, Init, ModelConfig, Profile
from mgn.config_io import apply_overrides, flatten, load_yaml
from mgn.data.folders import OFFICIAL
from mgn.data.loading import load_dataset
from mgn.data.records import DatasetError, ReidDataset
from mgn.data.sampler import PKBatchSampler
from mgn.flops import training_flops_per_image
from mgn.recipes import deviations, paper, recipe
from orchestration.runtime.naming import slug
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker, git_commit, redact, source_tags
from orchestration.tables.registry import TABLES
from orchestration.tables.spec import PaperTable

STATE_FILE = "mgn_grid.json"


class UsageError(ValueError):
    """Bad command-line input, found before any compute."""


@dataclass(frozen=True)
class GridOptions:
    """How a planned grid runs and where its results go (``orchestration.tables.grid.run_grid``)."""

    experiment_name: str  # MLflow experiment
    results_dir: Path
    address: str | None = None  # a running Ray cluster; None: start one here
    num_cpus: int | None = None  # size of a Ray instance started here
    max_failures: int = 2
    max_concurrent: int | None = None
    log_checkpoint: bool = False
    register: bool = False  # register each trial's logged model under its table row's name
    shared_storage: bool = False  # a local storage path that every node mounts (NFS)
    placement_timeout_s: float = 300.0  # how long a cluster given by --address may take to fit a trial


@dataclass(frozen=True)
class GridState:
    """What a grid folder records so that ``--resume`` finds its MLflow runs again and continues
    the same plan (``orchestration.tables.resuming``)."""

    parent_run_id: str
    experiment_id: str
    table: str
    command: str
    created: str
    config: dict = field(default_factory=dict)  # the plan's base config (empty: an older grid)
    rows: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def write(self, folder: Storage) -> None:
        (folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, folder: Storage) -> GridState:
        return cls(**json.loads((folder / STATE_FILE).read_text()))


@dataclass(frozen=True)
class Plan:
    spec: PaperTable
    base: ExperimentConfig
    rows: list[str]
    seeds: list[int]
    configs: dict[tuple[str, int], ExperimentConfig]


def base_config(spec: PaperTable, args: argparse.Namespace) -> ExperimentConfig:
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
    config = apply_overrides(replace(config, scaling=scaling), args.overrides)
    if config.data.root and not Path(config.data.root).is_absolute():
        # Relative to where the command was typed: Ray's workers run in another folder.
        config = replace(config, data=replace(config.data, root=str(Path(config.data.root).absolute())))
    return config


def make_plan(spec: PaperTable, args: argparse.Namespace) -> Plan:
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be >= 1")
    if args.max_failures < 0:
        raise UsageError(
            f"--max-failures {args.max_failures}: must be >= 0 (a deterministic error would be retried forever)"
        )
    base = base_config(spec, args)
    try:
        rows = [t.name for t in spec.select(tuple(args.rows) if args.rows else None)]
    except ValueError as error:
        raise UsageError(str(error)) from None
    seeds = [base.train.seed + i for i in range(args.seeds)]  # --set train.seed=5 --seeds 3: 5, 6, 7
    configs = {(row, seed): trial_config(spec.key, base, row, seed) for row in rows for seed in seeds}
    return Plan(spec, base, rows, seeds, configs)


@dataclass(frozen=True)
class TrialShape:
    """What the data gives a trial: optimisation steps per epoch and training identities."""

    steps_per_epoch: int
    num_classes: int


def check_data(
    plan: Plan, log=print
) -> tuple[dict[tuple[str, int], TrialShape], dict[DataConfig, ReidDataset]]:
    """Read every distinct data set of the plan, decode its images, find the ImageNet weights, and
    check that each trial's P x K sampler can be filled on its number of workers: errors before
    any training. Returns each trial's shape and the data sets read."""
    datasets, shapes = {}, {}
    for key, config in plan.configs.items():
        data = config.data
        if data not in datasets:
            if data.dataset is not DatasetName.SYNTHETIC and data.root is None:
                name = data.dataset.value
                raise DatasetError(
                    f"{plan.spec.title} needs {name}, and no --data-root was given. Download it from "
                    f"{OFFICIAL.get(name, OFFICIAL['market1501']).download} and pass --data-root /path/to/datasets "
                    f"(or run without --data-root for the smoke profile on the embedded synthetic data set)."
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                datasets[data] = load_dataset(data)
            for warning in caught:
                log(f"warning: {warning.message}")
            log(f"data: {datasets[data].summary()}")
            _check_cross_camera_matches(datasets[data])
        if config.model.init is Init.IMAGENET:
            find_pretrained(
                config.model.backbone, config.model.pretrained_path, config.model.imagenet_weights
            )
        sampler = PKBatchSampler(
            [r.pid for r in datasets[data].train],
            data.p,
            data.k,
            world_size=config.scaling.num_workers,
            with_replacement=data.sample_with_replacement,
            identity_epochs=data.epoch is Epoch.IDENTITIES,
        )
        shapes[key] = TrialShape(len(sampler), datasets[data].num_train_ids)
    return shapes, datasets


def _check_cross_camera_matches(dataset: ReidDataset) -> None:
    """The protocol scores a query only against its identity in *other* cameras: a data set where
    no query has such a match (one camera, say) would train for days and score nothing."""
    gallery = {(r.pid, r.camid) for r in dataset.gallery}
    cameras_of = {}
    for pid, camid in gallery:
        cameras_of.setdefault(pid, set()).add(camid)
    if not any(cameras_of.get(q.pid, set()) - {q.camid} for q in dataset.query):
        cameras = sorted({r.camid + 1 for r in (*dataset.query, *dataset.gallery)})
        raise DatasetError(
            f"{dataset.name}: no query has an image of its identity from another camera in the gallery (cameras "
            f"found: {cameras}), so every query would be skipped by the Market-1501 protocol. Re-ID data needs "
            f"at least two cameras: check the <pid>_c<camera> names."
        )


def describe(plan: Plan, shapes: dict[tuple[str, int], TrialShape]) -> list[str]:
    """The plan before compute: per row its epochs, steps, images and training FLOPs (per seed)."""
    lines, steps_total, flops_total = [], 0, 0.0
    for row in plan.rows:
        config, shape = plan.configs[(row, plan.seeds[0])], shapes[(row, plan.seeds[0])]
        steps = shape.steps_per_epoch * config.train.epochs
        images = steps * config.global_batch_size
        per_image = training_flops_per_image(config.model, config.loss, config.data, shape.num_classes)
        steps_total += steps * len(plan.seeds)
        flops_total += images * per_image * len(plan.seeds)
        lines.append(
            f"  {row}: {config.train.epochs} epochs x {shape.steps_per_epoch} steps = {steps:,} steps of "
            f"{config.global_batch_size} images ({images:,} images), {per_image / 1e9:.1f} GFLOP per image = "
            f"{images * per_image / 1e15:.3g} PFLOP"
        )
    seeds = f" x {len(plan.seeds)} seeds" if len(plan.seeds) > 1 else ""
    lines.append(
        f"  all {len(plan.configs)} trials{seeds}: {steps_total:,} steps, {flops_total / 1e15:.3g} PFLOP of training"
    )
    return lines


def run_folder(storage: Storage, prefix: str, state_file: str, resume: str | None, what: str) -> Storage:
    """A new folder ``<prefix>-<time>-<random>`` (unique: two runs started in the same second get
    two), or with ``resume`` the latest (``"latest"``) or named one holding ``state_file``."""
    if resume is None:
        return storage / f"{prefix}-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    if resume == "latest":
        found = [
            g for g in storage.children() if g.name.startswith(f"{prefix}-") and (g / state_file).exists()
        ]
        folder = found[-1] if found else None
    else:
        folder = storage / resume
    if folder is None or not (folder / state_file).exists():
        raise UsageError(f"--resume: no {what} ({prefix}-*) to resume in {storage}")
    return folder


def grid_folder(
    storage: Storage, spec: PaperTable, base: ExperimentConfig, resume: str | None
) -> tuple[Storage, GridState | None]:
    """A new grid folder, or the one to resume (with its saved state)."""
    prefix = f"{spec.key}-{base.profile.value}-{base.data.dataset.value}"
    folder = run_folder(storage, prefix, STATE_FILE, resume, f"grid of {spec.key}")
    return folder, (GridState.read(folder) if resume is not None else None)


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


def trial_config(table: str, base: ExperimentConfig, row: str, seed: int) -> ExperimentConfig:
    """The full config of one trial: the row's variant of the base recipe, with its seed."""
    config = TABLES[table].trial(row).make(base)
    return replace(config, train=replace(config.train, seed=seed))


def trial_folder(grid: Storage, row: str, seed: int) -> Storage:
    """Done marker, features and spooled records of one trial; the same folder when a grid is resumed."""
    return grid / "trials" / slug(row) / f"seed{seed}"


def is_local(config: ExperimentConfig, use_gpu: bool) -> bool:
    return config.scaling.num_workers == 1 and not use_gpu


def _papers(plan: Plan, row: str) -> ExperimentConfig:
    """The paper's recipe for ``row``: what a trial's deviations are measured against."""
    return plan.spec.trial(row).make(paper())


@lru_cache
def _weights(model: ModelConfig) -> dict[str, str]:
    return pretrained_identity(model)  # hashing ~100 MB once per file, not per trial


def trial_tags(plan: Plan, row: str, seed: int) -> dict[str, str]:
    """What a trial's run records beyond its row and seed: how it departs from the paper's recipe for
    the same row (``deviations``), its arithmetic, and the ImageNet file it starts from (name, sha256)."""
    config = plan.configs[(row, seed)]
    found = deviations(config, _papers(plan, row))
    return {
        "deviations": "; ".join(found) or "none",
        "amp": str(config.train.amp).lower(),
        "eval_precision": config.eval.precision.value,
        "row_order": f"{plan.rows.index(row):02d}",  # the run list sorts like the table
        "backbone": config.model.backbone.value,
        **_weights(config.model),
    }


def trial_run_name(plan: Plan, row: str, seed: int) -> str:
    """``MGN seed0``; a smoke stand-in says what it trained (``ResNet-50 seed0 (resnet18)``)."""
    backbone = plan.configs[(row, seed)].model.backbone
    stand_in = backbone is not _papers(plan, row).model.backbone
    return f"{row} seed{seed}" + (f" ({backbone.value})" if stand_in else "")


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
        "deviations": _union_of_deviations(plan),
        "tracking_uri": redact(uri),
    }


def parent_run_name(plan: Plan) -> str:
    """What tells two invocations of one table apart comes first (the experiment names the table):
    ``smoke synthetic 2 rows x1 11-24 16:20``."""
    rows = "all rows" if plan.spec.covers(plan.rows) else (
        plan.rows[0] if len(plan.rows) == 1 else f"{len(plan.rows)} rows"
    )  # fmt: skip
    datasets = "+".join(sorted({c.data.dataset.value for c in plan.configs.values()}))
    return f"{plan.base.profile.value} {datasets} {rows} x{len(plan.seeds)} {dt.datetime.now():%m-%d %H:%M}"


def record_parent(tracker: Tracker, plan: Plan, experiment_id: str, command: str, uri: str) -> str:
    name = parent_run_name(plan)
    description = (
        f"{plan.spec.title}: {len(plan.rows)} rows x {len(plan.seeds)} seeds, profile {plan.base.profile.value}. "
        f"The table replaces this description when the grid finishes.\n\n`{command}`"
    )
    run_id = tracker.start_parent(
        experiment_id, name, parent_tags(plan, command, uri), source_tags(command, description)
    )
    tracker.log_params(run_id, flatten(plan.base))
    return run_id


def _union_of_deviations(plan: Plan) -> str:
    found = dict.fromkeys(
        item
        for row, seed in plan.configs
        for item in deviations(plan.configs[(row, seed)], _papers(plan, row))
    )
    return "; ".join(found) or "none"
