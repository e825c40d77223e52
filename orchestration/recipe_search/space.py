"""``mgn.recipe_search.SearchSpace`` in Ray Tune's terms, and a sampled point back as a ``Candidate``.

Optuna's TPE takes categorical choices of plain values only, so enums travel as their values and
milestone schedules as labels (``"0.5,0.75"``). Ray is imported by the functions that need it, so
that reading a candidate back does not load Ray.
"""

from __future__ import annotations

from typing import Any

from mgn.config import OptimizerKind, Pooling
from mgn.recipe_search import Candidate, Milestones, Range, SearchSpace


def _label(milestones: Milestones) -> str:
    return ",".join(f"{f:g}" for f in milestones)


def _unlabel(label: str) -> Milestones:
    return tuple(float(f) for f in label.split(","))


def _continuous(value: Range) -> Any:
    from ray import tune

    if value.low == value.high:
        return value.low
    return tune.loguniform(value.low, value.high) if value.log else tune.uniform(value.low, value.high)


def tune_space(space: SearchSpace) -> dict[str, Any]:
    """The ``param_space["candidate"]`` of the search's Tuner."""
    from ray import tune

    return {
        "lr": _continuous(space.lr),
        "weight_decay": _continuous(space.weight_decay),
        "optimizer": tune.choice([o.value for o in space.optimizer]),
        "warmup_epochs": tune.choice(list(space.warmup_epochs)),
        "epochs": tune.choice(list(space.epochs)),
        "milestones": tune.choice([_label(m) for m in space.milestones]),
        "triplet_weight": _continuous(space.triplet_weight),
        "random_erasing": _continuous(space.random_erasing),
        "pooling": tune.choice([p.value for p in space.pooling]),
    }


def as_params(candidate: Candidate) -> dict[str, Any]:
    """A candidate as Tune samples it (a point to evaluate first: the base recipe)."""
    return {
        "lr": candidate.lr,
        "weight_decay": candidate.weight_decay,
        "optimizer": candidate.optimizer.value,
        "warmup_epochs": candidate.warmup_epochs,
        "epochs": candidate.epochs,
        "milestones": _label(candidate.milestones),
        "triplet_weight": candidate.triplet_weight,
        "random_erasing": candidate.random_erasing,
        "pooling": candidate.pooling.value,
    }


def first_point(space: SearchSpace, candidate: Candidate) -> dict[str, Any]:
    """``candidate`` as a point the searcher evaluates before it proposes any (OptunaSearch wants
    the sampled knobs only, flattened: ``{"candidate/lr": 1e-3, ...}``)."""
    from ray.tune.search.sample import Domain

    sampled = tune_space(space)
    return {
        f"candidate/{knob}": value
        for knob, value in as_params(candidate).items()
        if isinstance(sampled[knob], Domain)
    }


def candidate_of(params: dict[str, Any]) -> Candidate:
    """What Tune sampled, typed again."""
    return Candidate(
        lr=float(params["lr"]),
        weight_decay=float(params["weight_decay"]),
        optimizer=OptimizerKind(params["optimizer"]),
        warmup_epochs=int(params["warmup_epochs"]),
        epochs=int(params["epochs"]),
        milestones=_unlabel(params["milestones"]),
        triplet_weight=float(params["triplet_weight"]),
        random_erasing=float(params["random_erasing"]),
        pooling=Pooling(params["pooling"]),
    )


def describe(candidate: Candidate) -> str:
    """``adam lr 1e-03 wd 5e-04 warm-up 3, 8 epochs drop at 0.875, triplet 1.00, erasing 0.00, max``."""
    return (
        f"{candidate.optimizer.value} lr {candidate.lr:.1e} wd {candidate.weight_decay:.1e} warm-up "
        f"{candidate.warmup_epochs}, {candidate.epochs} epochs drop at {_label(candidate.milestones)}, triplet "
        f"{candidate.triplet_weight:.2f}, erasing {candidate.random_erasing:.2f}, {candidate.pooling.value}"
    )
