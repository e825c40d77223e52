"""The recipe search on Ray Tune: Optuna's TPE proposes recipes, ASHA stops the poor ones early,
each trial is a Ray Train trial (``orchestration.runtime.trial``) and an MLflow child run with its
validation curve. Then the winner and the base recipe train on every training identity, with
several seeds, and only they are evaluated on the test set.

``run_search`` = connect, search (resumable: Tune restores its trials and the searcher), choose,
write the recipe file, final training (resumable), publish ``results/recipe_search.md``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Any

import ray
from optuna.samplers import TPESampler
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from mgn.config_io import from_dict, to_dict
from mgn.data.loading import load_dataset
from mgn.data.records import DatasetError
from mgn.evaluation import keys
from mgn.recipe_search import Candidate, SearchConfig, apply, baseline
from orchestration.recipe_search.plan import (
    BASE_ROW,
    FINAL_STAGE,
    SCRIPT,
    SEARCH_STAGE,
    SEARCHED_ROW,
    TABLE,
    SearchState,
    final_seeds,
)
from orchestration.recipe_search.report import Scored, publish_search
from orchestration.recipe_search.space import candidate_of, describe, first_point, tune_space
from orchestration.runtime.cluster import ClusterError, TrialResources, open_cluster
from orchestration.runtime.spool import replay_grid
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker, git_commit
from orchestration.runtime.trial import TrialSetup, run_trial
from orchestration.runtime.worker import DIVERGED_FILE, DONE_FILE, KEEP_CHECKPOINTS, ONGOING_EPOCH
from orchestration.tables.grid import runs_banner
from orchestration.tables.planning import GridOptions, trial_folder

METRIC = keys.validation(keys.MAP)  # what the searcher maximises and ASHA judges
# The runs table's columns: search trials fill the validation ones, final trials the test ones.
RUNS_VIEW_METRICS = [METRIC, keys.validation(keys.R1), keys.R1, keys.MAP, keys.reranked(keys.MAP)]


def search_row(trial_id: str) -> str:
    return f"search {trial_id}"


def run_search_trial(params: dict[str, Any]) -> None:
    """Tune trainable of one search trial: ``params = {"setup", "search", "candidate"}``."""
    search = from_dict(SearchConfig, params["search"])
    candidate = candidate_of(params["candidate"])
    config = search.validating(apply(search.base, candidate))
    trial_id = tune.get_context().get_trial_id()
    is_base = candidate == baseline(search.base)
    run_trial(
        {
            "setup": params["setup"],
            "trial": {
                "row": search_row(trial_id),
                "seed": config.train.seed,
                "config": to_dict(config),
                "name": f"{'base recipe: ' if is_base else ''}{describe(candidate)}",
                "tags": {
                    "stage": SEARCH_STAGE,
                    "candidate": json.dumps(params["candidate"]),
                    "base_recipe": str(is_base).lower(),
                },
            },
        }
    )


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


def _run_config(folder: Storage, name: str, max_failures: int, callbacks: list) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=folder.uri,
        verbose=0,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
    )


def search_tuner(
    search: SearchConfig, setup: TrialSetup, folder: Storage, resources: TrialResources, max_failures: int
) -> tune.Tuner:
    """TPE (seeded; the base recipe first) and ASHA on validation mAP by epoch; or the saved search."""
    trainable = tune.with_resources(run_search_trial, resources.driver)
    path = folder / SEARCH_STAGE
    if tune.Tuner.can_restore(path.uri):  # the trials, their results and the searcher's state
        return tune.Tuner.restore(path.uri, trainable=trainable, resume_unfinished=True, resume_errored=True)
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
    return tune.Tuner(
        trainable,
        param_space={
            "setup": setup.to_dict(),
            "search": to_dict(search),
            "candidate": tune_space(search.space),
        },
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=asha,
            num_samples=search.trials,
            max_concurrent_trials=resources.concurrency,
            trial_dirname_creator=lambda t: t.trial_id,
        ),
        run_config=_run_config(folder, SEARCH_STAGE, max_failures, [SearchProgress(search.trials)]),
    )


def scored_trials(folder: Storage, results: tune.ResultGrid, search: SearchConfig) -> list[Scored]:
    """Every search trial with its validation mAP: a finished trial's from its done marker (written
    after its last epoch, whatever Tune saved), a stopped one's from its last report."""
    scored = []
    for result in results:
        trial_id = result.path.rstrip("/").rsplit("/", 1)[-1]
        candidate = candidate_of(result.config["candidate"])
        trial = trial_folder(folder, search_row(trial_id), search.base.train.seed)
        metrics = result.metrics or {}
        if (trial / DONE_FILE).exists():
            done = json.loads((trial / DONE_FILE).read_text())
            scored.append(Scored(trial_id, candidate, float(done[METRIC]), candidate.epochs, "finished"))
        elif (trial / DIVERGED_FILE).exists():
            scored.append(Scored(trial_id, candidate, 0.0, int(metrics.get("epoch", 0)), "diverged"))
        elif result.error is not None or METRIC not in metrics:
            scored.append(Scored(trial_id, candidate, None, int(metrics.get("epoch", 0)), "failed"))
        else:
            epoch = int(metrics.get("epoch", 0))
            scored.append(
                Scored(trial_id, candidate, float(metrics[METRIC]), epoch, f"stopped after epoch {epoch}")
            )
    return scored


def record_outcomes(tracker: Tracker, state: SearchState, scored: list[Scored]) -> None:
    """Each search trial's run says how it ended; a trial ASHA stopped (its process ended by Tune,
    mid-training) is closed as FINISHED: it did what the search asked of it."""
    outcome = {search_row(s.trial_id): s for s in scored}
    for run in tracker.child_runs(state.experiment_id, state.parent_run_id):
        found = outcome.get(run.row)
        if found is None:
            continue
        tracker.set_tags(run.run_id, {"outcome": found.status})
        if found.status.startswith("stopped") and run.status == "RUNNING":
            tracker.finish(run.run_id)


def winner(scored: list[Scored], base: Candidate) -> Scored | None:
    """The best finished trial by validation mAP (the base recipe unless a candidate beats it);
    None when no trial trained to its end."""
    finished = [s for s in scored if s.status == "finished"]
    return max(finished, key=lambda s: (s.val_map, s.candidate == base), default=None)


def final_trials(search: SearchConfig, chosen: Candidate) -> list[dict[str, Any]]:
    """The base recipe and the winner, each with ``final_seeds`` seeds, on all training ids."""
    rows = {BASE_ROW: search.base}
    if chosen != baseline(search.base):
        rows[SEARCHED_ROW] = apply(search.base, chosen)
    return [
        {
            "row": row,
            "seed": seed,
            "config": to_dict(replace(config, train=replace(config.train, seed=seed))),
            "name": f"{row} seed{seed}",
            "tags": {"stage": FINAL_STAGE, "row_order": f"{order:02d}"},
        }
        for order, (row, config) in enumerate(rows.items())
        for seed in final_seeds(search)
    ]


def final_tuner(
    trials: list[dict[str, Any]],
    setup: TrialSetup,
    folder: Storage,
    resources: TrialResources,
    max_failures: int,
) -> tune.Tuner:
    trainable = tune.with_resources(run_trial, resources.driver)
    path = folder / FINAL_STAGE
    if tune.Tuner.can_restore(path.uri):
        return tune.Tuner.restore(path.uri, trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"setup": setup.to_dict(), "trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.concurrency),
        run_config=_run_config(folder, FINAL_STAGE, max_failures, []),
    )


def _fit(tuner: tune.Tuner) -> tune.ResultGrid | None:
    try:
        return tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C, while Tune was stopping
        return None


def _interrupted(tracker: Tracker, state: SearchState, folder: Storage, stage: str) -> int:
    tracker.finish(state.parent_run_id, killed=True)
    print(
        f"interrupted during the {stage}: finished trials are kept in {folder}. Continue with\n"
        f"  {state.command} --resume {folder.name}",
        file=sys.stderr,
    )
    return 130


def _unfinished_search(results: tune.ResultGrid | None, search: SearchConfig) -> bool:
    """Tune stopped (Ctrl-C, SIGTERM) before every trial ended: not yet a search to choose from."""
    if results is None:
        return True
    return len(results) < search.trials or results.num_terminated + results.num_errors < len(results)


def run_search(
    search: SearchConfig, options: GridOptions, uri: str, folder: Storage, state: SearchState
) -> int:
    tracker = Tracker(uri)
    validating = search.validating(search.base)
    try:
        placement = open_cluster(
            options.address, uri, options.num_cpus, folder, options.shared_storage, [validating],
            options.max_concurrent, options.placement_timeout_s,
        )  # fmt: skip
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    use_gpu, resources = placement.use_gpu, placement.resources
    try:
        setup = TrialSetup(table=TABLE, script=SCRIPT, experiment_id=state.experiment_id,
                           parent_run_id=state.parent_run_id, storage=folder.uri, git_commit=git_commit(),
                           use_gpu=use_gpu, max_failures=options.max_failures)  # fmt: skip
        print(f"search {folder}: {search.trials} trials on {search.validation_ids} held-out training ids, "
              f"{resources.concurrency} at a time; MLflow parent run {state.parent_run_id}")  # fmt: skip
        results = _fit(search_tuner(search, setup, folder, resources, options.max_failures))
        if _unfinished_search(results, search):
            return _interrupted(tracker, state, folder, "search")
        replay_grid(folder, tracker)  # what stopped trials had spooled
        scored = scored_trials(folder, results, search)
        record_outcomes(tracker, state, scored)
        chosen = winner(scored, baseline(search.base))
        if chosen is None:
            print("error: no search trial trained to its end (see the failures above): nothing to choose from",
                  file=sys.stderr)  # fmt: skip
            tracker.finish(state.parent_run_id, failed=True)
            return 1
        print(f"winner: {chosen.trial_id} {describe(chosen.candidate)}, val mAP {chosen.val_map:.1f}")
        # The first time anything reads the test set: the chosen recipe is fixed by now.
        try:
            test_data = load_dataset(search.base.data)
        except DatasetError as error:
            print(f"error: the test set, read for the final evaluation: {error}\nThe search is done and kept; "
                  f"fix the data, then\n  {state.command} --resume {folder.name}", file=sys.stderr)  # fmt: skip
            tracker.finish(state.parent_run_id, failed=True)
            return 2
        print(f"test set, read for the final evaluation only: {test_data.summary()}")
        trials = final_trials(search, chosen.candidate)
        final = _fit(final_tuner(trials, setup, folder, resources, options.max_failures))
        done = [t for t in trials if (trial_folder(folder, t["row"], t["seed"]) / DONE_FILE).exists()]
        if final is None or len(done) < len(trials):
            if final is not None and any(r.error is not None for r in final):
                print("error: a final trial failed; see the errors above", file=sys.stderr)
                tracker.finish(state.parent_run_id, failed=True)
                return 1
            return _interrupted(tracker, state, folder, "final training")
        replay_grid(folder, tracker)
        publish_search(search, tracker, state, scored, chosen, options.results_dir)
        print(runs_banner(tracker, state.experiment_id, state.parent_run_id, RUNS_VIEW_METRICS))
        return 0
    finally:
        ray.shutdown()
