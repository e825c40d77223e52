"""``mgn.recipe_search.SearchSpace`` in Ray Tune's terms, and a sampled point back as a ``Candidate``.

Optuna's TPE takes categorical choices of plain values only, so enums travel as their values and
milestone schedules as labels (``"0.5,0.75"``). Ray is imported by the functions that need it, so
that reading a candidate back does not load Ray.
"""

from __future__ import annotations

from typing import Any

from mgn.recipe_search import FIELD_ORDER, KNOBS, Candidate, Knob, Range, SearchSpace


def _continuous(value: Range) -> Any:
    from ray import tune

    if value.low == value.high:
        return value.low
    return tune.loguniform(value.low, value.high) if value.log else tune.uniform(value.low, value.high)


def tune_space(space: SearchSpace) -> dict[str, Any]:
    """The ``param_space["candidate"]`` of the search's Tuner: a range is sampled (log-uniform for
    rates), a set of choices is a categorical of plain values."""
    from ray import tune

    def domain(knob: Knob) -> Any:
        values = getattr(space, knob.name)
        return _continuous(values) if isinstance(values, Range) else tune.choice([knob.encode(v) for v in values])

    return {knob.name: domain(knob) for knob in FIELD_ORDER}


def as_params(candidate: Candidate) -> dict[str, Any]:
    """A candidate as Tune samples it (a point to evaluate first: the base recipe)."""
    return {knob.name: knob.encode(getattr(candidate, knob.name)) for knob in FIELD_ORDER}


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
    return Candidate(**{knob.name: knob.decode(params[knob.name]) for knob in KNOBS})
