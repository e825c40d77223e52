"""``--dry-run``: every row of a planned grid trained for a step at its full shape, then a forecast.

No Ray, no MLflow, no grid folder: the data set(s) the plan checked, each row's network built at
the recipe's input size, ``steps`` real training steps (loader, augmentation, forward, losses,
backward, optimiser) and one test batch embedded, with the time and peak memory they took. The
grid's training time on this machine follows from the measured step time and the plan's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mgn.config import ExperimentConfig
from mgn.dry_run import dry_run
from orchestration.study.preflight import K, Preflight
from orchestration.tables.planning import GridKey, Plan

GIB = 1024**3


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )


def rehearse(plan: Plan, checked: Preflight[GridKey], steps: int, log: Callable[[str], None] = print) -> int:
    """Dry-run every row of a table's grid (its first seed); returns the exit code (0)."""
    rows = {row: (row, plan.seeds[0]) for row in plan.rows}
    return rehearse_trials(rows, plan.configs, len(plan.seeds), checked, steps, log)


def rehearse_trials(
    trials: Mapping[str, K],
    configs: Mapping[K, ExperimentConfig],
    seeds: int,
    checked: Preflight[K],
    steps: int,
    log: Callable[[str], None] = print,
) -> int:
    """Dry-run each of ``trials`` (name -> its key in ``configs`` and ``checked.shapes``), trained
    for ``seeds`` seeds each, and print what it cost; returns the exit code (0)."""
    log(f"dry run: {steps} training step(s) and one test batch per row, at full shape, on this machine")
    grid_seconds = 0.0
    for name, key in trials.items():
        config, shape = configs[key], checked.shapes[key]
        report = dry_run(config, checked.datasets[config.data], steps)
        trial_steps = shape.steps_per_epoch * config.train.epochs
        grid_seconds += trial_steps * report.step_seconds * seeds
        log(
            f"  {name}: {report.images_per_step} images of {config.data.height}x{config.data.width} per step, "
            f"{report.step_seconds:.1f} s per step ({report.images_per_step / report.step_seconds:.1f} img/s), "
            f"loss {report.loss:.3f}; a test batch of {report.eval_images} in {report.eval_seconds:.1f} s "
            f"({report.feature_dim}-d); peak memory {report.peak_memory_bytes / GIB:.2f} GiB "
            f"({report.peak_memory_scope}); "
            f"its {trial_steps:,} steps would take {_duration(trial_steps * report.step_seconds)} here"
        )
    log(
        f"  the grid's training at these rates: {grid_seconds / 3600:.1f} h on this machine (evaluation not counted)"
    )
    return 0
