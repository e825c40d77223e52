"""The Ray Tune grid of a planned table: one trial per (row, seed), resumable, then ensembles and
the table. ``run_grid`` = connect, build the tuner, run it, report failures, publish."""

from __future__ import annotations

import datetime as dt
import sys

import ray
from ray import tune

from mgn.config_io import to_dict
from mgn.evaluation import keys
from orchestration.runtime.cluster import ClusterError, TrialResources, open_cluster
from orchestration.runtime.naming import slug
from orchestration.runtime.progress import ProgressPrinter, trial_name
from orchestration.runtime.spool import replay_grid
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker, check_reachable, git_commit, redact
from orchestration.runtime.trial import TrialSetup, run_trial
from orchestration.runtime.worker import DIVERGED_FILE, DONE_FILE, KEEP_CHECKPOINTS
from orchestration.tables.ensembles import evaluate_ensembles, feature_rows
from orchestration.tables.planning import (
    GridOptions,
    GridState,
    Plan,
    record_parent,
    trial_folder,
    trial_run_name,
    trial_tags,
)
from orchestration.tables.render import publish

_DEPTH = {"resnet18": 1.0, "resnet34": 2.0, "resnet50": 2.3, "resnet101": 4.0}


def _cost(plan: Plan, row: str) -> float:
    """Rough relative cost of a trial, to start the longest ones first."""
    config = plan.configs[(row, plan.seeds[0])]
    branches = sum(2.5 if parts > 1 else 1.0 for parts in config.model.branches)
    return (1 + branches) * _DEPTH[config.model.backbone.value] * config.train.epochs


def run_grid(
    plan: Plan, options: GridOptions, uri: str, folder: Storage, state: GridState | None, command: str
) -> int:
    tracker = Tracker(uri)
    experiment_id = state.experiment_id if state else tracker.experiment(options.experiment_name)
    try:
        # The tracking URI reaches trials through the job's environment, never their stored config.
        placement = open_cluster(
            options.address, uri, options.num_cpus, folder, options.shared_storage, list(plan.configs.values()),
            options.max_concurrent, options.placement_timeout_s,
        )  # fmt: skip
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    use_gpu, resources = placement.use_gpu, placement.resources
    try:
        if state is None:
            state = GridState(
                parent_run_id=record_parent(tracker, plan, experiment_id, command, uri),
                experiment_id=experiment_id,
                table=plan.spec.key,
                command=command,
                created=dt.datetime.now().isoformat(),
                config=to_dict(plan.base),
                rows=plan.rows,
                seeds=plan.seeds,
            )
        state.write(folder)
        print(
            f"grid {folder}\nMLflow: experiment '{options.experiment_name}', parent run {state.parent_run_id}\n"
            f"{'local mode' if placement.local else 'worker groups'}, {'GPU' if use_gpu else 'CPU'}, "
            f"{resources.concurrency} trial(s) at a time"
        )
        tuner = build_tuner(plan, options, state, folder, use_gpu, resources)
        try:
            results = tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C, while Tune was stopping
            results = None
        unfinished = unfinished_trials(plan, folder, results)
        if unfinished:
            return interrupted(tracker, state, folder, command, unfinished)
        failed = report_failures(results)
        return publish_grid(plan, options, tracker, state, folder, command, failed)
    finally:
        ray.shutdown()  # detaches from a cluster given by --address; stops one started here


def build_tuner(
    plan: Plan,
    options: GridOptions,
    state: GridState,
    folder: Storage,
    use_gpu: bool,
    resources: TrialResources,
) -> tune.Tuner:
    """A new Tuner over every (row, seed) of the plan, longest first, or the saved one to resume."""
    setup = TrialSetup(
        table=plan.spec.key,
        script=plan.spec.script,
        experiment_id=state.experiment_id,
        parent_run_id=state.parent_run_id,
        storage=folder.uri,
        git_commit=git_commit(),
        use_gpu=use_gpu,
        max_failures=options.max_failures,
        log_checkpoint=options.log_checkpoint,
        register=options.register,
        feature_rows=feature_rows(plan),
    )
    trials = sorted(
        (
            {
                "row": r,
                "seed": s,
                "config": to_dict(plan.configs[(r, s)]),
                "tags": trial_tags(plan, r, s),
                "name": trial_run_name(plan, r, s),
            }
            for r in plan.rows
            for s in plan.seeds
        ),
        key=lambda t: -_cost(plan, t["row"]),
    )
    progress = ProgressPrinter(
        {trial_name(t["row"], t["seed"]): plan.configs[(t["row"], t["seed"])].train.epochs for t in trials},
        resources.concurrency,
    )
    trainable = tune.with_resources(run_trial, resources.driver)
    tune_path = folder / "tune"
    if tune.Tuner.can_restore(tune_path.uri):
        return tune.Tuner.restore(
            tune_path.uri, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    return tune.Tuner(
        trainable,
        param_space={"setup": setup.to_dict(), "trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=resources.concurrency,
            trial_dirname_creator=lambda t: (
                f"{t.trial_id}-{slug(t.config['trial']['row'])}-seed{t.config['trial']['seed']}"
            ),
        ),
        run_config=tune.RunConfig(
            name=tune_path.name,
            storage_path=folder.uri,  # a local folder or an object store (orchestration/runtime/storage.py)
            verbose=0,
            callbacks=[progress],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # Local-mode trials checkpoint through Tune; keep as many as Train does for worker groups.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        ),
    )


def unfinished_trials(plan: Plan, folder: Storage, results: tune.ResultGrid | None) -> list[str]:
    """Trials that neither finished, diverged nor failed: Tune stopped them (Ctrl-C, SIGTERM)."""
    errored = {
        trial_name(r.config["trial"]["row"], r.config["trial"]["seed"])
        for r in (results or [])
        if r.error is not None
    }
    return [
        trial_name(row, seed)
        for row, seed in plan.configs
        if trial_name(row, seed) not in errored
        and not any(
            (trial_folder(folder, row, seed) / marker).exists() for marker in (DONE_FILE, DIVERGED_FILE)
        )
    ]


def interrupted(
    tracker: Tracker, state: GridState, folder: Storage, command: str, unfinished: list[str]
) -> int:
    """An interrupted grid publishes nothing: its parent run is KILLED (tables never read it) and
    the console says how to finish it."""
    tracker.finish(state.parent_run_id, killed=True)
    print(
        f"interrupted: {len(unfinished)} trial(s) unfinished ({', '.join(unfinished)}); no table was written. "
        f"Finished trials and checkpoints are kept in {folder}. Finish the grid with\n"
        f"  {command} --resume {folder.name}",
        file=sys.stderr,
    )
    return 130


def report_failures(results: tune.ResultGrid) -> bool:
    """Print each failed trial's last error line; whether any failed."""
    failed = [r for r in results if r.error is not None]
    for result in failed:
        print(
            f"trial {trial_name(result.config['trial']['row'], result.config['trial']['seed'])} failed: "
            f"{str(result.error).splitlines()[-1][:500]}",
            file=sys.stderr,
        )
    return bool(failed)


def publish_grid(
    plan: Plan,
    options: GridOptions,
    tracker: Tracker,
    state: GridState,
    folder: Storage,
    command: str,
    failed: bool,
) -> int:
    """Spooled records to the store, ensembles, the table and its figures; the parent run closed."""
    try:
        check_reachable(tracker.uri)
        replay_grid(folder, tracker)
    except Exception as error:  # the store went away: the training is done and kept, say how to finish
        print(
            f"error: the MLflow store {redact(tracker.uri)} is unreachable ({error}). Training is done and nothing "
            f"is lost: checkpoints, features and spooled records are in {folder}. When the store is back, run\n"
            f"  python -m orchestration.runtime.replay {folder} --tracking-uri <uri>\n"
            f"  {command} --resume {folder.name}",
            file=sys.stderr,
        )
        return 1
    evaluate_ensembles(plan, folder, tracker, state.parent_run_id)
    table, paths = publish(plan.spec, tracker, state.parent_run_id, command, options.results_dir)
    tracker.log_text(state.parent_run_id, table.markdown, f"{plan.spec.key}.md")
    tracker.describe(state.parent_run_id, table.markdown)  # the parent's description is its table
    for figure in (p for p in paths if p.suffix == ".png"):
        tracker.log_artifact(state.parent_run_id, figure, "figures")
    tracker.finish(state.parent_run_id, failed=failed)
    print(table.markdown)
    if plan.spec.compare_to:
        print(f"differing from {plan.spec.compare_to} beyond chance (95%, paired bootstrap over the test queries): "
              + ("; ".join(table.significant) or "none"))  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths)}")
    print(runs_banner(tracker, state.experiment_id, state.parent_run_id, RUNS_VIEW_METRICS))
    return 1 if failed else 0


RUNS_VIEW_METRICS = [keys.R1, keys.MAP, keys.MINP, keys.reranked(keys.R1), keys.reranked(keys.MAP)]


def runs_banner(tracker: Tracker, experiment_id: str, parent_run_id: str, metrics: list[str]) -> str:
    """The last lines of a grid or search: how to open its runs, with ``metrics`` as columns (a local
    store needs ``mlflow ui`` first)."""
    url = tracker.runs_url(experiment_id, tracker.share_runs_view(experiment_id, parent_run_id, metrics))
    if tracker.uri.startswith(("http://", "https://")):
        return f"runs: {url}"
    return (
        f"runs: mlflow ui --backend-store-uri {redact(tracker.uri)} --host 127.0.0.1 --port 5000, then {url}"
    )
