"""The search space in Ray Tune's terms (orchestration/recipe_search/space.py): what Tune samples is a candidate
of the typed space, and the base recipe reaches the searcher as its first point."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from mgn.recipe_search import Range, baseline, smoke_search
from orchestration.recipe_search.space import as_params, candidate_of, first_point, tune_space


def _sample(space: dict) -> dict:
    return {k: (v.sample() if hasattr(v, "sample") else v) for k, v in space.items()}


def test_every_sampled_point_is_a_candidate_of_the_typed_space():
    search = smoke_search()
    random.seed(0)
    np.random.seed(0)
    for _ in range(200):
        candidate = candidate_of(_sample(tune_space(search.space)))
        assert candidate.outside(search.space) == []


def test_a_candidate_survives_the_trip_through_tune():
    candidate = baseline(smoke_search().base)
    assert candidate_of(as_params(candidate)) == candidate


def test_the_base_recipe_is_the_first_point_with_only_the_sampled_knobs():
    search = smoke_search()
    space = replace(search.space, triplet_weight=Range(low=1.0, high=1.0))  # a knob held fixed
    point = first_point(space, baseline(search.base))
    assert point["candidate/lr"] == 1e-3 and point["candidate/optimizer"] == "adam"
    assert point["candidate/milestones"] == "0.875" and point["candidate/epochs"] == 8
    assert "candidate/triplet_weight" not in point  # a constant: Optuna has no such parameter
    assert len(point) == len(as_params(baseline(search.base))) - 1
