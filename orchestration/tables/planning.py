"""Planning a table's grid, without Ray: every trial's config from the command line, the trials
(``TrialSpec``, longest first) with their tags and names, and the parent run's record.
``orchestration.tables.grid`` runs what is planned here, through the study driver.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from mgn.backbone import pretrained_identity
from mgn.config import DatasetName, ExperimentConfig, ModelConfig, Profile
from mgn.config_io import apply_overrides, flatten, to_dict
from mgn.errors import UsageError
from mgn.flops import training_flops_per_image
from mgn.recipes import deviations, load_yaml, paper, recipe
from orchestration.datasets.cache import is_remote
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import (
    LIST_ORDER_TAG,
    Tracker,
    git_commit,
    list_order,
    redact,
    source_tags,
)
from orchestration.runtime.trial import TrialSpec
from orchestration.study.preflight import TrialShape
from orchestration.study.state import StudyState, study_folder
from orchestration.tables.registry import TABLES
from orchestration.tables.spec import PaperTable

GridKey = tuple[str, int]  # a grid trial: (row, seed)


@dataclass(frozen=True)
class Plan:
    spec: PaperTable
    base: ExperimentConfig
    rows: list[str]
    seeds: list[int]
    configs: dict[GridKey, ExperimentConfig]


def base_config(spec: PaperTable, args: argparse.Namespace) -> ExperimentConfig:
    """Profile (or --config file), then --data-root, scaling flags and --set overrides."""
    profile = args.profile or (Profile.SMOKE.value if args.data_root is None else Profile.PAPER.value)
    config = load_yaml(args.config) if args.config else recipe(profile)
    if args.data_root is not None:
        if config.data.dataset is DatasetName.SYNTHETIC:
            config = replace(config, data=replace(config.data, dataset=spec.dataset))
        root = args.data_root if is_remote(args.data_root) else str(Path(args.data_root).absolute())
        config = replace(config, data=replace(config.data, root=root))
    scaling = config.scaling
    if args.workers is not None:
        scaling = replace(scaling, num_workers=args.workers)
    if args.cpus_per_worker is not None:
        scaling = replace(scaling, cpus_per_worker=args.cpus_per_worker)
    if args.gpu is not None:
        scaling = replace(scaling, use_gpu=args.gpu)
    config = apply_overrides(replace(config, scaling=scaling), args.overrides)
    if config.data.root and not is_remote(config.data.root) and not Path(config.data.root).is_absolute():
        # Relative to where the command was typed: Ray's workers run in another folder.
        config = replace(config, data=replace(config.data, root=str(Path(config.data.root).absolute())))
    return config


MAX_SEEDS = 100


def make_plan(spec: PaperTable, args: argparse.Namespace) -> Plan:
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be >= 1")
    if args.seeds > MAX_SEEDS:  # each seed is a full training of every row; 10**6 planned for minutes, silently
        raise UsageError(
            f"--seeds {args.seeds}: at most {MAX_SEEDS} seeds per invocation (each is a full training of every row); "
            "run more in parts, each with its own --set train.seed=FIRST"
        )
    base = base_config(spec, args)
    try:
        rows = [t.name for t in spec.select(tuple(args.rows) if args.rows else None)]
    except ValueError as error:
        raise UsageError(str(error)) from None
    seeds = [base.train.seed + i for i in range(args.seeds)]  # --set train.seed=5 --seeds 3: 5, 6, 7
    configs = {(row, seed): trial_config(spec.key, base, row, seed) for row in rows for seed in seeds}
    return Plan(spec, base, rows, seeds, configs)


def describe(plan: Plan, shapes: Mapping[GridKey, TrialShape]) -> list[str]:
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


def grid_folder(
    storage: Storage, spec: PaperTable, base: ExperimentConfig, resume: str | None
) -> tuple[Storage, StudyState | None]:
    """A new grid folder, or the one to resume (with its saved state)."""
    prefix = f"{spec.key}-{base.profile.value}-{base.data.dataset.value}"
    return study_folder(storage, prefix, resume, f"grid of {spec.key}")


_DEPTH = {"resnet18": 1.0, "resnet34": 2.0, "resnet50": 2.3, "resnet101": 4.0}


def cost(config: ExperimentConfig) -> float:
    """Rough relative cost of a trial, to start the longest ones first."""
    branches = sum(2.5 if parts > 1 else 1.0 for parts in config.model.branches)
    return (1 + branches) * _DEPTH[config.model.backbone.value] * config.train.epochs


def trial_specs(plan: Plan) -> list[TrialSpec]:
    """Every (row, seed) of the plan as a typed trial, the longest first."""
    trials = [
        TrialSpec(row, seed, plan.configs[(row, seed)], trial_run_name(plan, row, seed),
                  tuple(sorted(trial_tags(plan, row, seed).items())))
        for row in plan.rows
        for seed in plan.seeds
    ]  # fmt: skip
    return sorted(trials, key=lambda t: -cost(t.config))


def record(plan: Plan) -> dict:
    """What the grid's folder records for ``--resume`` (``orchestration.tables.resuming``)."""
    return {"config": to_dict(plan.base), "rows": plan.rows, "seeds": plan.seeds}


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
        LIST_ORDER_TAG: list_order(plan.spec.key, plan.rows.index(row)),  # the run list sorts like the table
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


def record_parent(
    tracker: Tracker,
    plan: Plan,
    experiment_id: str,
    command: str,
    uri: str,
    under: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The table's parent run (nested ``under`` a sweep's run, with the sweep's ``tags``)."""
    name = parent_run_name(plan)
    description = (
        f"{plan.spec.title}: {len(plan.rows)} rows x {len(plan.seeds)} seeds, profile {plan.base.profile.value}. "
        f"The table replaces this description when the grid finishes.\n\n`{command}`"
    )
    run_id = tracker.start_parent(
        experiment_id,
        name,
        {**parent_tags(plan, command, uri), **(tags or {})},
        source_tags(command, description),
        under,
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
