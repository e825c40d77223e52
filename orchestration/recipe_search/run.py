"""The recipe search on Ray Tune: Optuna's TPE proposes recipes, ASHA stops the poor ones early,
each trial is a Ray Train trial (``orchestration.runtime.trial``) and an MLflow child run with its
validation curve. Then the winner and the base recipe train on every training identity, with
several seeds, and only they are evaluated on the test set.

``run_search`` = search (resumable: Tune restores its trials and the searcher), choose, write the
recipe file, final training (resumable), publish ``results/recipe_search.md``; the study driver
(``orchestration.study.driver``) joins the cluster, records the study and handles interruption.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Any

from optuna.samplers import TPESampler
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from mgn.config_io import from_dict, to_dict
from mgn.data.loading import load_dataset
from mgn.data.records import DatasetError
from mgn.evaluation import keys
from mgn.recipe_search import Candidate, SearchConfig, apply, baseline, describe
from orchestration.recipe_search.plan import (
    BASE_ROW,
    FINAL_STAGE,
    METRIC,
    SEARCH_STAGE,
    SEARCHED_ROW,
    TABLE,
    final_seeds,
    search_row,
)
from orchestration.recipe_search.report import Outcome, Scored, publish_search, scored_from_runs, winner
from orchestration.recipe_search.space import candidate_of, first_point, tune_space
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import LIST_ORDER_TAG, Tracker, list_order
from orchestration.runtime.trial import TrialSpec, run_trial, trial_results
from orchestration.runtime.trial_files import ONGOING_EPOCH, TrialFiles
from orchestration.study.driver import Driver, Interrupted, Stage
from orchestration.study.state import StudyState

# The runs table's columns: search trials fill the validation ones, final trials the test ones.
RUNS_VIEW_METRICS = [METRIC, keys.validation(keys.R1), keys.R1, keys.MAP, keys.reranked(keys.MAP)]


def run_search_trial(params: dict[str, Any]) -> None:
    """Tune trainable of one search trial: ``params = {"setup", "search", "candidate"}``."""
    search = from_dict(SearchConfig, params["search"])
    candidate = candidate_of(params["candidate"])
    config = search.validating(apply(search.base, candidate))
    trial_id = tune.get_context().get_trial_id()
    is_base = candidate == baseline(search.base)
    trial = TrialSpec(
        row=search_row(trial_id),
        seed=config.train.seed,
        config=config,
        name=f"{'base recipe: ' if is_base else ''}{describe(candidate)}",
        tags=(
            ("base_recipe", str(is_base).lower()),
            ("candidate", json.dumps(params["candidate"])),
            ("stage", SEARCH_STAGE),
        ),
    )
    run_trial({"setup": params["setup"], "trial": trial.to_dict()})


class SearchProgress(tune.Callback):
    """One line per finished search trial: its recipe, validation mAP and how far it got."""

    def __init__(self, trials: int) -> None:
        self.trials = trials
        self.done = 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        result = trial.last_result or {}
        candidate = candidate_of(trial.config["candidate"])
        early = " (stopped early)" if result.get("epoch", 0) < candidate.epochs and METRIC in result else ""
        score = (
            f"val mAP {result[METRIC]:.1f} after {result.get('epoch', 0)} epochs{early}"
            if METRIC in result
            else "no result"
        )
        print(f"[search {self.done}/{self.trials}] {trial.trial_id} {describe(candidate)}: {score}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        print(f"[search {self.done}/{self.trials}] {trial.trial_id} FAILED: see {trial.path}")


def search_stage(search: SearchConfig, driver: Driver) -> Stage:
    """TPE (seeded; the base recipe first) and ASHA on validation mAP by epoch."""
    # Multivariate TPE models the knobs jointly (a learning rate is good with an optimizer, not alone).
    sampler = TPESampler(seed=search.searcher_seed, n_startup_trials=search.startup_trials, multivariate=True)
    searcher = OptunaSearch(
        points_to_evaluate=[first_point(search.space, baseline(search.base))], sampler=sampler
    )
    asha = ASHAScheduler(
        time_attr=ONGOING_EPOCH,  # never the last epoch: a trial that trained to the end finishes
        max_t=max(search.space.epochs),
        grace_period=search.grace_epochs,
        reduction_factor=search.reduction_factor,
    )
    return Stage(
        name=SEARCH_STAGE,
        trainable=driver.with_resources(run_search_trial),
        param_space={
            "setup": driver.setup.to_dict(),
            "search": to_dict(search),
            "candidate": tune_space(search.space),
        },
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=asha,
            num_samples=search.trials,
            max_concurrent_trials=driver.concurrency,
            trial_dirname_creator=lambda t: t.trial_id,
        ),
        callbacks=[SearchProgress(search.trials)],
    )


def scored_trials(folder: Storage, results: tune.ResultGrid, search: SearchConfig) -> list[Scored]:
    """Every search trial with its validation mAP: a finished trial's from its done marker (written
    after its last epoch, whatever Tune saved), a stopped one's from its last report."""
    scored = []
    for result in trial_results(results):
        trial_id = result.path.rstrip("/").rsplit("/", 1)[-1]
        assert result.config is not None  # Tune keeps every trial's config
        candidate = candidate_of(result.config["candidate"])
        files = TrialFiles.of(folder, search_row(trial_id), search.base.train.seed)
        metrics = result.metrics or {}
        epoch = int(metrics.get("epoch", 0))
        if files.finished():
            scored.append(
                Scored(trial_id, candidate, float(files.result()[METRIC]), candidate.epochs, Outcome.FINISHED)
            )
        elif files.diverged.exists():
            scored.append(Scored(trial_id, candidate, 0.0, epoch, Outcome.DIVERGED))
        elif result.error is not None or METRIC not in metrics:
            scored.append(Scored(trial_id, candidate, None, epoch, Outcome.FAILED))
        else:
            scored.append(Scored(trial_id, candidate, float(metrics[METRIC]), epoch, Outcome.STOPPED))
    return scored


def record_outcomes(tracker: Tracker, state: StudyState, scored: list[Scored]) -> None:
    """Each search trial's run says how it ended; a trial ASHA stopped (its process ended by Tune,
    mid-training) is closed as FINISHED: it did what the search asked of it. Depending on when Tune
    ends it, its run is still RUNNING or was closed FAILED by the trial's own teardown: either way."""
    outcome = {search_row(s.trial_id): s for s in scored}
    for run in tracker.child_runs(state.experiment_id, state.parent_run_id):
        found = outcome.get(run.row)
        if found is None:
            continue
        tracker.set_tags(run.run_id, {"outcome": found.describe()})
        if found.outcome is Outcome.STOPPED and run.status in ("RUNNING", "FAILED"):
            tracker.finish(run.run_id)


def final_trials(search: SearchConfig, chosen: Candidate) -> list[TrialSpec]:
    """The base recipe and the winner, each with ``final_seeds`` seeds, on all training ids."""
    rows = {BASE_ROW: search.base}
    if chosen != baseline(search.base):
        rows[SEARCHED_ROW] = apply(search.base, chosen)
    return [
        TrialSpec(
            row=row,
            seed=seed,
            config=replace(config, train=replace(config.train, seed=seed)),
            name=f"{row} seed{seed}",
            tags=((LIST_ORDER_TAG, list_order(TABLE, order)), ("stage", FINAL_STAGE)),
        )
        for order, (row, config) in enumerate(rows.items())
        for seed in final_seeds(search)
    ]


def _unfinished_search(results: tune.ResultGrid | None, search: SearchConfig) -> bool:
    """Tune stopped (Ctrl-C, SIGTERM) before every trial ended: not yet a search to choose from."""
    if results is None:
        return True
    return len(results) < search.trials or results.num_terminated + results.num_errors < len(results)


def run_search(search: SearchConfig, driver: Driver) -> int:
    """Search, choose, read the test set, train the winner and the base, publish: the exit code."""
    tracker, state, folder = driver.tracker, driver.state, driver.folder
    results = driver.fit(search_stage(search, driver))
    if results is None or _unfinished_search(results, search):
        raise Interrupted(SEARCH_STAGE, [])
    driver.replay()  # what stopped trials had spooled
    record_outcomes(tracker, state, scored_trials(folder, results, search))
    # Chosen from the runs as recorded, as the report chooses: one source for the choice.
    chosen = winner(
        scored_from_runs(tracker.child_runs(state.experiment_id, state.parent_run_id)), baseline(search.base)
    )
    if chosen is None:
        print("error: no search trial trained to its end (see the failures above): nothing to choose from",
              file=sys.stderr)  # fmt: skip
        driver.finish(failed=True)
        return 1
    print(f"winner: {chosen.trial_id} {describe(chosen.candidate)}, val mAP {chosen.val_map:.1f}")
    # The first time anything reads the test set: the chosen recipe is fixed by now.
    try:
        test_data = load_dataset(search.base.data)
    except DatasetError as error:
        print(f"error: the test set, read for the final evaluation: {error}\nThe search is done and kept; "
              f"fix the data, then\n  {state.command} --resume {folder.name}", file=sys.stderr)  # fmt: skip
        driver.finish(failed=True)
        return 2
    print(f"test set, read for the final evaluation only: {test_data.summary()}")
    final = driver.run_trials(FINAL_STAGE, final_trials(search, chosen.candidate))
    if driver.report_failures(final):
        print("error: a final trial failed; see the errors above", file=sys.stderr)
        driver.finish(failed=True)
        return 1
    driver.replay()
    publish_search(search, tracker, state, driver.options.results_dir)  # from the runs, as recorded
    print(driver.runs_banner(RUNS_VIEW_METRICS))
    return 0
