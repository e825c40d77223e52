"""The Ray Tune grid: one trial per (row, seed), resumable, then ensembles and the table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import ray
from ray import tune

from mgn.config_io import to_dict
from orchestration.cluster import ClusterError, connect, resolve_gpu, trial_resources, worker_env
from orchestration.ensembles import evaluate_ensembles, feature_rows
from orchestration.experiment import STATE_FILE, Plan, is_local_plan, record_parent
from orchestration.naming import slug
from orchestration.progress import ProgressPrinter, trial_name
from orchestration.spool import replay_grid
from orchestration.tables import publish
from orchestration.tracking import Tracker, check_reachable, git_commit, redact
from orchestration.trial import TrialSetup, run_trial

_DEPTH = {"resnet18": 1.0, "resnet34": 2.0, "resnet50": 2.3, "resnet101": 4.0}


def _cost(plan: Plan, row: str) -> float:
    """Rough relative cost of a trial, to start the longest ones first."""
    config = plan.configs[(row, plan.seeds[0])]
    branches = sum(2.5 if parts > 1 else 1.0 for parts in config.model.branches)
    return (1 + branches) * _DEPTH[config.model.backbone.value] * config.train.epochs


def run_grid(
    plan: Plan, args: argparse.Namespace, uri: str, folder: Path, state: dict | None, command: str
) -> int:
    os.environ["MLFLOW_TRACKING_URI"] = uri  # reaches trials through the job's env, never its stored config
    tracker = Tracker(uri)
    experiment_id = state["experiment_id"] if state else tracker.experiment(args.experiment_name)
    try:
        connect(args.address, worker_env(), args.num_cpus)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return _run_on_cluster(plan, args, tracker, experiment_id, folder, state, command, uri)
    finally:
        ray.shutdown()  # detaches from a cluster given by --address; stops one started here


def _run_on_cluster(
    plan: Plan,
    args: argparse.Namespace,
    tracker: Tracker,
    experiment_id: str,
    folder: Path,
    state: dict | None,
    command: str,
    uri: str,
) -> int:
    try:
        use_gpu = resolve_gpu(plan.base.scaling.use_gpu)
        local = is_local_plan(plan, use_gpu)
        biggest = max(plan.configs.values(), key=lambda c: c.scaling.num_workers * c.scaling.cpus_per_worker)
        resources = trial_resources(biggest, use_gpu, local, args.max_concurrent)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parent_run_id = (
        state["parent_run_id"] if state else record_parent(tracker, plan, experiment_id, command, uri)
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(
        json.dumps(
            {
                "parent_run_id": parent_run_id,
                "experiment_id": experiment_id,
                "table": plan.spec.key,
                "command": command,
                "created": state["created"] if state else dt.datetime.now().isoformat(),
            },
            indent=2,
        )  # fmt: skip
    )
    print(
        f"grid {folder}\nMLflow: experiment '{args.experiment_name}', parent run {parent_run_id}\n"
        f"{'local mode' if local else 'worker groups'}, {'GPU' if use_gpu else 'CPU'}, {resources.concurrency} trial(s) at a time"
    )
    setup = TrialSetup(
        table=plan.spec.key,
        base=to_dict(plan.base),
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        storage=str(folder),
        git_commit=git_commit(),
        use_gpu=use_gpu,
        max_failures=args.max_failures,
        log_checkpoint=args.log_checkpoint,
        feature_rows=feature_rows(plan),
    )
    trials = sorted(
        ({"row": r, "seed": s} for r in plan.rows for s in plan.seeds), key=lambda t: -_cost(plan, t["row"])
    )
    progress = ProgressPrinter(
        {trial_name(t["row"], t["seed"]): plan.configs[(t["row"], t["seed"])].train.epochs for t in trials},
        resources.concurrency,
    )
    trainable = tune.with_resources(run_trial, resources.driver)
    tune_path = folder / "tune"
    if state and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(
            str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
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
                storage_path=str(folder),
                verbose=0,
                callbacks=[progress],
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
            ),
        )
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    for result in failed:
        print(
            f"trial {result.config['trial']} failed: {str(result.error).splitlines()[-1][:500]}",
            file=sys.stderr,
        )
    try:
        check_reachable(uri)
        replay_grid(folder, tracker)
    except Exception as error:  # the store went away: the training is done and kept, say how to finish
        print(
            f"error: the MLflow store {redact(uri)} is unreachable ({error}). Training is done and nothing is "
            f"lost: checkpoints, features and spooled records are in {folder}. When the store is back, run\n"
            f"  python -m orchestration.replay {folder} --tracking-uri <uri>\n"
            f"  {command} --resume {folder.name}",
            file=sys.stderr,
        )
        return 1
    evaluate_ensembles(plan, folder, tracker, parent_run_id)
    table, paths = publish(plan.spec, uri, parent_run_id, command, args.results_dir)
    tracker.log_text(parent_run_id, table.markdown, f"{plan.spec.key}.md")
    for figure in (p for p in paths if p.suffix == ".png"):
        tracker.log_artifact(parent_run_id, figure, "figures")
    tracker.finish(parent_run_id, failed=bool(failed))
    print(table.markdown)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 1 if failed else 0
