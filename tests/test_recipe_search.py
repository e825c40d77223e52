"""The recipe search's typed space (mgn/recipe_search.py): candidates become recipes, the base recipe is a point of
its own space, and a study that could not measure its base recipe is refused before any compute."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mgn.config import ConfigError, OptimizerKind, Pooling
from mgn.config_io import apply_overrides, from_dict, to_dict
from mgn.recipe_search import (
    Candidate,
    Range,
    SearchConfig,
    SearchSpace,
    apply,
    baseline,
    milestone_epochs,
    paper_search,
    smoke_search,
)
from mgn.recipes import paper, smoke


@pytest.mark.parametrize("recipe", [smoke, paper], ids=["smoke", "paper"])
def test_the_base_recipe_is_its_own_candidate(recipe):
    base = recipe()
    assert apply(base, baseline(base)) == base


@pytest.mark.parametrize("study", [smoke_search, paper_search], ids=["smoke", "paper"])
def test_the_named_studies_contain_their_base_recipe_and_round_trip_as_yaml(study):
    search = study()
    assert baseline(search.base).outside(search.space) == []
    assert from_dict(SearchConfig, to_dict(search)) == search


def test_a_candidate_changes_the_knobs_it_names_and_nothing_else():
    base = smoke()
    candidate = Candidate(
        lr=3e-4, weight_decay=1e-4, optimizer=OptimizerKind.SGD, warmup_epochs=1, epochs=12,
        milestones=(0.5, 0.75), triplet_weight=0.5, random_erasing=0.25, pooling=Pooling.AVG,
    )  # fmt: skip
    config = apply(base, candidate)
    assert config.optimizer.kind is OptimizerKind.SGD and config.optimizer.lr == 3e-4
    assert config.optimizer.weight_decay == 1e-4 and config.optimizer.warmup_epochs == 1
    assert config.optimizer.milestones == (6, 9) and config.train.epochs == 12
    assert config.loss.triplet_weight == 0.5 and config.data.random_erasing == 0.25
    assert config.model.pooling is Pooling.AVG
    # Everything else is the base recipe's: the network, the data, the evaluation.
    assert replace(config.model, pooling=base.model.pooling) == base.model
    assert replace(config.data, random_erasing=0.0) == base.data
    assert config.eval == base.eval and config.scaling == base.scaling


def test_milestones_are_fractions_of_the_epochs():
    assert milestone_epochs((0.5, 0.75), 80) == (40, 60)
    assert milestone_epochs((0.875,), 8) == (7,)
    assert milestone_epochs((0.01, 0.02), 10) == (1,)  # both round to the first epoch: one drop


def test_validating_holds_out_identities_and_evaluates_every_epoch():
    search = smoke_search()
    config = search.validating(search.base)
    assert config.data.validation_ids == 16 and config.eval.interval == 1 and not config.eval.untrained
    assert search.base.data.validation_ids == 0  # the final training uses every training identity


def test_a_space_that_cannot_produce_the_base_recipe_is_refused_naming_the_knobs():
    space = replace(SearchSpace(), lr=Range(low=1e-2, high=1e-1, log=True), pooling=(Pooling.AVG,))
    with pytest.raises(ConfigError, match=r"cannot produce the base recipe \(lr, pooling\)"):
        SearchConfig(base=smoke(), space=space)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("space.warmup_epochs=[0, 8]", "every warm-up must be shorter than the fewest epochs"),
        ("space.lr={low: 0.0, high: 0.1, log: true}", "a log range needs low > 0"),
        ("space.milestones=[[0.5, 1.5]]", "fractions of the epochs"),
        ("space.optimizer=[]", "give at least one choice"),
        ("validation_ids=1", "hold out at least 2"),
        ("base.data.validation_ids=8", "the search sets the validation split itself"),
    ],
)
def test_bad_studies_fail_with_the_field_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(smoke_search(), [override])


def test_every_knob_is_declared_once_for_the_candidate_and_the_space():
    from dataclasses import fields

    from mgn.recipe_search import KNOBS

    names = [knob.name for knob in KNOBS]
    assert len(set(names)) == len(names)
    assert sorted(names) == sorted(f.name for f in fields(Candidate)) == sorted(f.name for f in fields(SearchSpace))


def test_a_candidate_is_described_in_one_fixed_format():
    from mgn.recipe_search import describe

    candidate = replace(
        baseline(smoke_search().base), optimizer=OptimizerKind.SGD, lr=0.02, weight_decay=1e-4, warmup_epochs=1,
        epochs=12, milestones=(0.5, 0.75), triplet_weight=1.5, random_erasing=0.25, pooling=Pooling.AVG,
    )  # fmt: skip
    assert describe(candidate) == (
        "sgd lr 2.0e-02 wd 1.0e-04 warm-up 1, 12 epochs drop at 0.5,0.75, triplet 1.50, erasing 0.25, avg"
    )
