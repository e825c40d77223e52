"""Choosing the winner of a search and what the final stage trains (orchestration/recipe_search/run.py): only a
trial that trained to its end can win, the base recipe wins ties, and a base that wins is trained once."""

from __future__ import annotations

from dataclasses import replace

from mgn.recipe_search import baseline, smoke_search
from orchestration.recipe_search.report import Outcome, Scored


def _scored(trial_id: str, val_map: float | None, outcome: Outcome = Outcome.FINISHED, **changes) -> Scored:
    candidate = replace(baseline(smoke_search().base), **changes)
    return Scored(trial_id, candidate, val_map, 4 if outcome is Outcome.STOPPED else candidate.epochs, outcome)


def test_the_best_finished_trial_wins_and_a_stopped_one_never_does():
    from orchestration.recipe_search.run import winner  # imports Ray: inside the test

    base = baseline(smoke_search().base)
    trials = [
        _scored("base", 71.4),
        _scored("better", 74.0, lr=2e-3),
        _scored("stopped", 90.0, Outcome.STOPPED, lr=5e-3),  # judged early: not a finished recipe
        _scored("failed", None, Outcome.FAILED, lr=1e-2),
    ]
    assert winner(trials, base).trial_id == "better"
    tie = [_scored("other", 71.4, lr=2e-3), _scored("base", 71.4)]
    assert winner(tie, base).trial_id == "base"  # a candidate must beat the base recipe, not equal it
    assert winner([trials[2], trials[3]], base) is None


def test_the_final_stage_trains_the_winner_and_the_base_with_every_seed_on_all_training_ids():
    from orchestration.recipe_search.run import final_trials

    search = replace(smoke_search(), final_seeds=2)
    better = replace(baseline(search.base), lr=2e-3)
    trials = final_trials(search, better)
    assert [(t.row, t.seed) for t in trials] == [
        ("base recipe", 0), ("base recipe", 1), ("searched recipe", 0), ("searched recipe", 1)
    ]  # fmt: skip
    assert all(t.config.data.validation_ids == 0 for t in trials)
    assert trials[2].config.optimizer.lr == 2e-3 and trials[0].config.optimizer.lr == 1e-3
    assert [t.config.train.seed for t in trials] == [0, 1, 0, 1]
    only_base = final_trials(search, baseline(search.base))
    assert [t.row for t in only_base] == ["base recipe", "base recipe"]  # nothing better: trained once
