"""The one driver of every study: join the cluster, record the study, run its stages of typed trials
on Ray Tune, handle interruption, replay spooled records, print where the runs are.

A study (a table's grid, the recipe search) is a ``Study``: it says which configs must fit on the
cluster, what its parent run records, and in ``run`` which stages to run and what to publish. The
driver does the rest, the same way for all:

- ``run_study``: open the cluster (``ClusterError``: exit 2), create the parent run and the folder's
  state (or continue a resumed one), run the study, and on ``Interrupted`` mark the parent KILLED and
  print the ``--resume`` command (exit 130). Ray is shut down on every path.
- ``Driver.run_trials``: one Tune experiment over ``TrialSpec``s (longest first, as given), restored
  from the study's folder when it exists; trials neither finished nor failed raise ``Interrupted``.
- ``Driver.fit``: any ``Stage`` (the search's TPE + ASHA), with one ``RunConfig`` for all.
"""

from __future__ import annotations

import errno
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
from ray import tune

from mgn.config import ExperimentConfig
from orchestration.runtime.cluster import ClusterError, Placement, open_cluster
from orchestration.runtime.naming import slug
from orchestration.runtime.progress import ProgressPrinter
from orchestration.runtime.spool import replay_grid
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker, TrackingUnavailable, git_commit, redact
from orchestration.runtime.trial import (
    TrialSetup,
    TrialSpec,
    result_title,
    run_trial,
    title_of,
    trial_results,
)
from orchestration.runtime.trial_files import KEEP_CHECKPOINTS
from orchestration.study.options import RunOptions
from orchestration.study.signals import sigterm_as_interrupt
from orchestration.study.state import StudyState, now


class Interrupted(Exception):
    """Tune stopped a stage before every trial ended (Ctrl-C, SIGTERM): nothing is published."""

    def __init__(self, stage: str, unfinished: Sequence[str]) -> None:
        super().__init__(stage)
        self.stage, self.unfinished = stage, list(unfinished)


class Study(Protocol):
    """What a study tells the driver; the rest is the driver's."""

    @property
    def key(self) -> str:
        """"table5", "recipe_search": the folder's prefix, the runs' mgn.table tag."""
        ...

    @property
    def script(self) -> str:
        """The experiment script (the runs' source)."""
        ...

    @property
    def title(self) -> str:
        """How the console names it: "grid", "search"."""
        ...

    @property
    def publishes(self) -> str:
        """What it writes when it finishes: "table", "report"."""
        ...

    def configs(self) -> list[ExperimentConfig]:
        """Every trial's config that must fit on the cluster (the largest is placed)."""
        ...

    def start_parent(self, tracker: Tracker, experiment_id: str, command: str, uri: str) -> str:
        """Create the study's MLflow parent run; returns its id."""
        ...

    def plan(self) -> dict[str, Any]:
        """What the folder's state records for ``--resume`` (``StudyState.plan``)."""
        ...

    def feature_rows(self) -> tuple[str, ...]:
        """Rows whose test features are kept in storage (ensemble members)."""
        ...

    def model_rows(self) -> tuple[str, ...]:
        """Rows whose trained networks are logged as MLflow Models even without ``--log-checkpoint``
        (a table's showcase row: the Models tab is not empty after the main job)."""
        ...

    def run(self, driver: Driver) -> int:
        """Run the stages and publish; the exit code."""
        ...


@dataclass(frozen=True)
class Stage:
    """One Tune experiment of a study, stored in the study's folder under ``name``."""

    name: str
    trainable: Callable[[dict[str, Any]], None]
    param_space: dict[str, Any]
    tune_config: tune.TuneConfig
    callbacks: list[tune.Callback] = field(default_factory=list)


@dataclass
class Driver:
    """A study's run on the cluster it joined: its folder, state, trials' setup and MLflow parent."""

    options: RunOptions
    tracker: Tracker
    folder: Storage
    state: StudyState
    placement: Placement
    setup: TrialSetup

    @property
    def concurrency(self) -> int:
        return self.placement.resources.concurrency

    def with_resources(self, trainable: Callable[[dict[str, Any]], None]) -> Any:
        return tune.with_resources(trainable, self.placement.resources.driver)

    def tuner(self, stage: Stage) -> tune.Tuner:
        """The stage's saved Tuner (its trials, results and searcher) when it exists, else a new one."""
        path = self.folder / stage.name
        if tune.Tuner.can_restore(path.uri):
            return tune.Tuner.restore(
                path.uri, trainable=stage.trainable, resume_unfinished=True, resume_errored=True
            )
        return tune.Tuner(
            stage.trainable,
            param_space=stage.param_space,
            tune_config=stage.tune_config,
            run_config=tune.RunConfig(
                name=stage.name,
                storage_path=self.folder.uri,  # a local folder or an object store (runtime/storage.py)
                verbose=0,
                callbacks=stage.callbacks,
                failure_config=tune.FailureConfig(max_failures=self.options.max_failures),
                # Local-mode trials checkpoint through Tune; keep as many as Train does for worker groups.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
            ),
        )

    def fit(self, stage: Stage) -> tune.ResultGrid | None:
        """Run a stage; None when a second Ctrl-C arrived while Tune was stopping."""
        try:
            return self.tuner(stage).fit()
        except KeyboardInterrupt:
            return None

    def trial_stage(self, name: str, trials: Sequence[TrialSpec], callbacks: list[tune.Callback]) -> Stage:
        """A grid over ``trials`` in the order given (a study puts its longest first)."""
        return Stage(
            name=name,
            trainable=self.with_resources(run_trial),
            param_space={
                "setup": self.setup.to_dict(),
                "trial": tune.grid_search([t.to_dict() for t in trials]),
            },
            tune_config=tune.TuneConfig(
                max_concurrent_trials=self.concurrency,
                trial_dirname_creator=lambda t: f"{t.trial_id}-{slug(title_of(t.config['trial']))}",
            ),
            callbacks=callbacks,
        )

    def run_trials(self, name: str, trials: Sequence[TrialSpec], progress: bool = True) -> tune.ResultGrid:
        """Train ``trials`` as stage ``name``; ``Interrupted`` when some neither finished nor failed."""
        callbacks: list[tune.Callback] = (
            [ProgressPrinter({t.title: t.config.train.epochs for t in trials}, self.concurrency)]
            if progress
            else []
        )
        if tune.Tuner.can_restore((self.folder / name).uri):
            ended = sum(t.files(self.folder).ended() for t in trials)
            print(f"resuming: {ended} of {len(trials)} trials ended, {len(trials) - ended} to run "
                  "(each from its newest checkpoint)")  # fmt: skip
        results = self.fit(self.trial_stage(name, trials, callbacks))
        errored = {result_title(r) for r in trial_results(results) if r.error is not None}
        unfinished = [t.title for t in trials if t.title not in errored and not t.files(self.folder).ended()]
        if results is None or unfinished:
            raise Interrupted(name, unfinished)
        return results

    def replay(self) -> int:
        """Send what trials spooled while the store was away (or what stopped trials left)."""
        return replay_grid(self.folder, self.tracker)

    def finish(self, failed: bool = False) -> None:
        self.tracker.finish(self.state.parent_run_id, failed=failed)

    @staticmethod
    def report_failures(results: tune.ResultGrid) -> bool:
        """Print each failed trial's last error line; whether any failed."""
        failed = [r for r in trial_results(results) if r.error is not None]
        for result in failed:
            title = result_title(result)
            print(f"trial {title} failed: {str(result.error).splitlines()[-1][:500]}", file=sys.stderr)
        return bool(failed)

    def runs_banner(self, metrics: list[str]) -> str:
        """The last lines of a study: how to open its runs, with ``metrics`` as columns (a local store
        needs ``mlflow ui`` first)."""
        tracker, state = self.tracker, self.state
        view = tracker.share_runs_view(state.experiment_id, state.parent_run_id, metrics)
        url = tracker.runs_url(state.experiment_id, view)
        if tracker.uri.startswith(("http://", "https://")):
            return f"runs: {url}"
        # MLflow's job runner (GenAI jobs: 8 more processes, 2 GiB) is of no use to training runs;
        # --app-name mgn keeps every page in model-training mode (orchestration.runtime.ui_app).
        return (
            f"runs: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --app-name mgn --backend-store-uri "
            f"{redact(tracker.uri)} --host 127.0.0.1 --port 5000 --workers 1, then {url}"
        )


def run_study(
    study: Study, options: RunOptions, uri: str, folder: Storage, state: StudyState | None, command: str
) -> int:
    """Join the cluster, record the study (or continue ``state``), run it; the exit code."""
    tracker = Tracker(uri)
    try:
        experiment_id = state.experiment_id if state else tracker.experiment(options.experiment_name)
    except TrackingUnavailable as error:  # deleted: named with its fix, before Ray starts
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        # The tracking URI reaches trials through the job's environment, never their stored config.
        placement = open_cluster(
            options.address, uri, options.num_cpus, folder, options.shared_storage, study.configs(),
            options.max_concurrent, options.placement_timeout_s,
        )  # fmt: skip
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if state is None:
            parent = study.start_parent(tracker, experiment_id, command, uri)
            state = StudyState(
                study.key, parent, experiment_id, options.experiment_name, command, now(), study.plan()
            )
        state.write(folder)
        driver = Driver(
            options, tracker, folder, state, placement, _setup(study, options, folder, state, placement)
        )
        print(
            f"{study.title} {folder}\nMLflow: experiment '{state.experiment_name}', parent run {state.parent_run_id}\n"
            f"{'local mode' if placement.local else 'worker groups'}, {'GPU' if placement.use_gpu else 'CPU'}, "
            f"{driver.concurrency} trial(s) at a time"
        )
        try:
            with sigterm_as_interrupt():  # a scheduler's stop is a Ctrl-C: resumable, parent KILLED
                return study.run(driver)
        except Interrupted as stop:
            return interrupted(tracker, state, folder, stop, study.publishes)
        except Exception as error:  # the driver itself broke (its folder vanished, a bug): never RUNNING
            return crashed(tracker, state, folder, error)
    finally:
        ray.shutdown()  # detaches from a cluster given by --address; stops one started here


def _setup(
    study: Study, options: RunOptions, folder: Storage, state: StudyState, placement: Placement
) -> TrialSetup:
    return TrialSetup(
        table=study.key,
        script=study.script,
        experiment_id=state.experiment_id,
        parent_run_id=state.parent_run_id,
        storage=folder.uri,
        git_commit=git_commit(),
        use_gpu=placement.use_gpu,
        max_failures=options.max_failures,
        log_checkpoint=options.log_checkpoint,
        register=options.register,
        feature_rows=study.feature_rows(),
        model_rows=study.model_rows(),
    )


def crashed(tracker: Tracker, state: StudyState, folder: Storage, error: Exception) -> int:
    """The driver failed after trials ran (a runtime-env agent deleted the job's working folder
    under it; grid storage full): the parent is marked FAILED, not left RUNNING, and the console says
    how to publish from what finished. A full disk is named as such; anything else keeps its
    traceback above the line, for a bug report."""
    tracker.finish(state.parent_run_id, failed=True)
    resume = f"{state.command} --resume {folder.name}"
    if (free := full_storage_free_bytes(folder, error)) is not None:
        print(
            f"error: grid storage {folder} is full ({free / 1e6:.0f} MB free): a trial's "
            f"checkpoint, or Ray's record of it, could not be written ({type(error).__name__}: {error}). Free space "
            f"there (each trial keeps its newest {KEEP_CHECKPOINTS} checkpoints) or pass another --storage-path, "
            f"then finish and publish with\n  {resume}",
            file=sys.stderr,
        )
        return 1
    traceback.print_exc(file=sys.stderr)
    print(
        f"error: the study's driver stopped ({type(error).__name__}: {error}). Finished trials and checkpoints are "
        f"kept in {folder}; finish and publish with\n  {resume}",
        file=sys.stderr,
    )
    return 1


LOW_SPACE_BYTES = 1 << 30  # below this, a paper-profile checkpoint (with its optimiser state) may not fit


def full_storage_free_bytes(folder: Storage, error: BaseException) -> int | None:
    """The bytes left on a local grid storage when ``error`` is what its filling up does to a driver
    (Ray's pickled record of a trial's failure cut short: ``UnpicklingError``/``EOFError`` inside
    Tune; or a write refused for space); None otherwise."""
    kind = isinstance(error, (pickle.UnpicklingError, EOFError)) or getattr(error, "errno", None) == errno.ENOSPC
    free = folder.free_bytes() if kind else None
    return free if free is not None and free < LOW_SPACE_BYTES else None


def interrupted(
    tracker: Tracker, state: StudyState, folder: Storage, stop: Interrupted, publishes: str
) -> int:
    """An interrupted study publishes nothing: its parent run is KILLED (tables never read it) and
    the console says how to finish it."""
    tracker.finish(state.parent_run_id, killed=True)
    unfinished = (
        f"{len(stop.unfinished)} trial(s) unfinished ({', '.join(stop.unfinished)}); "
        if stop.unfinished
        else ""
    )
    print(
        f"interrupted: {unfinished}no {publishes} was written (stage '{stop.stage}'). Finished trials and checkpoints are "
        f"kept in {folder}. Finish it with\n  {state.command} --resume {folder.name}",
        file=sys.stderr,
    )
    return 130
