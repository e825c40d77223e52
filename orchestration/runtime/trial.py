"""One Tune trial = one ``TorchTrainer`` (the Ray Train V2 pattern) and one MLflow child run.

A single-worker CPU trial runs Train's local mode (``num_workers=0``): the worker function runs
in this process, without the ~20 s of worker-group start-up. Multi-worker and GPU trials launch a
real worker group (DDP over gloo on CPU, NCCL on GPU), restarted from the last checkpoint when a
worker dies (``FailureConfig``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mgn.config import ExperimentConfig, Init
from mgn.config_io import dump_yaml, flatten, from_dict, to_dict
from orchestration.runtime.naming import registered_name
from orchestration.runtime.spool import SpoolingRecorder
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker, source_tags
from orchestration.runtime.trial_files import KEEP_CHECKPOINTS, TrialFiles
from orchestration.runtime.worker import WorkerSpec, train_worker

if TYPE_CHECKING:
    from ray import tune


def trial_name(row: str, seed: int, table: str | None = None) -> str:
    """How the console, the errors and the progress lines name a trial: ``MGN seed0``; in a study
    of several tables, ``table3 MGN seed0``."""
    return f"{table + ' ' if table else ''}{row} seed{seed}"


def trial_results(results: tune.ResultGrid | None) -> list[tune.Result]:
    """Each trial's result (none when Tune returned no grid). ``ResultGrid`` is indexed, not iterated."""
    return [] if results is None else [results[i] for i in range(len(results))]


def result_title(result: tune.Result) -> str:
    """A trial's name from its Tune result (the config need not be parsed)."""
    assert result.config is not None  # every trial of a study has one
    return title_of(result.config["trial"])


def title_of(params: dict[str, Any]) -> str:
    """A trial's name from what Tune stores of it (``TrialSpec.to_dict``), its config unparsed."""
    home = params.get("home") or {}
    return trial_name(params["row"], int(params["seed"]), home.get("table"))


@dataclass(frozen=True)
class TrialHome:
    """Where a trial's run and files live when its study spans several tables (the paper sweep):
    the table it trains for, its parent run there, its script. None in a one-table study, whose
    ``TrialSetup`` says it for all."""

    table: str
    parent_run_id: str
    script: str

    def of(self, setup: TrialSetup) -> TrialSetup:
        return dataclasses.replace(
            setup, table=self.table, parent_run_id=self.parent_run_id, script=self.script
        )


def is_local(config: ExperimentConfig, use_gpu: bool) -> bool:
    """Whether a trial trains in its own Tune process (Train's local mode): one CPU worker."""
    return config.scaling.num_workers == 1 and not use_gpu


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a study: the network ``config`` trained as ``row`` with ``seed``; ``name`` is its
    MLflow run's name and ``tags`` what its run records beyond row and seed (a table's deviations,
    a search trial's candidate). ``to_dict``/``from_dict`` at the Ray boundary (Tune stores it)."""

    row: str
    seed: int
    config: ExperimentConfig
    name: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    home: TrialHome | None = None
    # Other data sets' test protocols to evaluate the trained network on: (name, data config dict).
    transfer_to: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def title(self) -> str:
        return trial_name(self.row, self.seed, self.home.table if self.home else None)

    def files(self, study: Storage) -> TrialFiles:
        """Its checkpoints, features and spool; under its table's folder in a study of several."""
        return TrialFiles.of(study / self.home.table if self.home else study, self.row, self.seed)

    def setup(self, shared: TrialSetup) -> TrialSetup:
        """What its study's trials share, with its own table and parent run where it has a home."""
        return self.home.of(shared) if self.home else shared

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "seed": self.seed, "config": to_dict(self.config),
                "name": self.name or self.title, "tags": dict(self.tags),
                "home": dataclasses.asdict(self.home) if self.home else None,
                "transfer_to": [list(t) for t in self.transfer_to]}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialSpec:
        return cls(
            row=values["row"],
            seed=int(values["seed"]),
            config=from_dict(ExperimentConfig, values["config"]),
            name=values["name"],
            tags=tuple(sorted(values["tags"].items())),
            home=TrialHome(**values["home"]) if values.get("home") else None,
            transfer_to=tuple((name, data) for name, data in values.get("transfer_to", [])),
        )


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a grid shares (plain values: Tune stores it with the experiment)."""

    table: str  # the mgn.table tag of its runs ("table5", "recipe_search")
    script: str  # the experiment script that runs it (the runs' source)
    experiment_id: str
    parent_run_id: str
    storage: str  # this grid's folder: a Storage URI every node reaches
    git_commit: str
    use_gpu: bool
    images_checked: bool = True
    max_failures: int = 2
    log_checkpoint: bool = False
    register: bool = False
    feature_rows: tuple[str, ...] = ()  # rows whose test features are kept (ensembles)
    model_rows: tuple[str, ...] = ()  # rows logged as MLflow Models without --log-checkpoint (showcase)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


STUDY_FOLDER_ENV = "MGN_STUDY_FOLDER"  # the study's folder as the driver opened it (runtime.cluster sets it)
_ROW_LISTS = ("feature_rows", "model_rows")  # TrialSetup's tuples, lists once Tune stored them


def run_trial(params: dict[str, Any]) -> None:
    """Tune function trainable: ``params = {"setup": TrialSetup.to_dict(), "trial": TrialSpec.to_dict()}``."""
    from ray import tune

    trial = TrialSpec.from_dict(params["trial"])  # planned once, by the driver
    shared = TrialSetup(**{**params["setup"], **{k: tuple(params["setup"].get(k, ())) for k in _ROW_LISTS}})
    # Tune stored the folder the study was started in; a folder moved before --resume is where it is now.
    setup = trial.setup(dataclasses.replace(shared, storage=os.environ.get(STUDY_FOLDER_ENV, shared.storage)))
    files = trial.files(Storage(setup.storage))
    tracker = Tracker.from_env()
    tune_trial_id = tune.get_context().get_trial_id()
    run_id = open_run(tracker, setup, trial, tune_trial_id)
    if files.finished():
        # Finished before the driver died, after Tune last saved its state: report, do not retrain.
        # Close the run as that attempt would have: the driver's death can cut it short after
        # done.json (in Ray Train's teardown), and its last word was then "FAILED".
        SpoolingRecorder(tracker, run_id, files.folder).finish(failed=files.diverged.exists())
        tune.report(files.result())
        return
    tracker.log_params(run_id, run_params(trial.config))
    tracker.log_text(run_id, dump_yaml(trial.config), "config.yaml")
    trainer = torch_trainer(setup, trial, worker_spec(setup, trial, run_id, files), tune_trial_id)
    # From here on the store may come and go: records are spooled rather than lost (spool.py).
    recorder = SpoolingRecorder(tracker, run_id, files.folder)
    try:
        trainer.fit()
    except BaseException:
        recorder.finish(failed=True)
        raise
    recorder.finish(failed=files.diverged.exists())


def run_params(config: ExperimentConfig) -> dict[str, str]:
    """Every config field, and what the worker count makes of them: the images each worker computes a
    step, and how the recipe's BN groups (``model.bn_group``) fall on the workers."""
    groups = config.bn_groups
    return {
        **flatten(config),
        "scaling.images_per_worker": str(groups.per_rank),
        "scaling.bn_groups_per_worker": str(groups.ghosts),
        "scaling.workers_per_bn_group": str(groups.ranks),
    }


def open_run(tracker: Tracker, setup: TrialSetup, trial: TrialSpec, tune_trial_id: str) -> str:
    """The trial's MLflow child run (found again when the trial restarts); returns its id."""
    config = trial.config
    return tracker.child(
        setup.experiment_id,
        setup.parent_run_id,
        trial=f"{trial.row} / seed {trial.seed}",
        name=trial.name,
        tags={
            "table": setup.table,
            "row": trial.row,
            "seed": str(trial.seed),
            "dataset": config.data.dataset.value,
            "profile": config.profile.value,
            "git_commit": setup.git_commit,
            "device": f"{'gpu' if setup.use_gpu else 'cpu'} x{config.scaling.num_workers}",
            "pretrained": str(config.model.init is Init.IMAGENET).lower(),
            "tune_trial_id": tune_trial_id,
            **dict(trial.tags),  # deviations from the paper, precision, ImageNet file
        },
        system=source_tags(
            setup.script,
            f"{trial.row}, seed {trial.seed}: {config.model.backbone.value} branches "
            f"{list(config.model.branches)}, {config.profile.value} profile on {config.data.dataset.value}",
        ),
    )


def worker_spec(setup: TrialSetup, trial: TrialSpec, run_id: str, files: TrialFiles) -> WorkerSpec:
    config = trial.config
    return WorkerSpec(
        experiment=to_dict(config),
        run_id=run_id,
        trial_uri=files.folder.uri,
        local=is_local(config, setup.use_gpu),
        cpus=config.scaling.cpus_per_worker,
        images_checked=setup.images_checked,
        keep_features=trial.row in setup.feature_rows,
        log_checkpoint=setup.log_checkpoint or trial.row in setup.model_rows,
        model_name=registered_name(setup.table, trial.row),
        registered_name=registered_name(setup.table, trial.row) if setup.register else None,
        row=trial.row,
        name=f"{trial.row} (seed {trial.seed}, {config.profile.value}, {config.data.dataset.value})",
        transfer_to=trial.transfer_to,
    )


def torch_trainer(setup: TrialSetup, trial: TrialSpec, spec: WorkerSpec, tune_trial_id: str) -> Any:
    """The trial's Ray Train ``TorchTrainer``: local mode for one CPU worker, else a worker group
    restarted from its newest checkpoint when a worker dies."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    config = trial.config
    return TorchTrainer(
        train_worker,
        train_loop_config=spec.to_dict(),
        # gloo on CPU, NCCL on GPU; collectives give up after scaling.collective_timeout_s.
        torch_config=TorchConfig(timeout_s=config.scaling.collective_timeout_s),
        scaling_config=ray.train.ScalingConfig(
            num_workers=0 if spec.local else config.scaling.num_workers,
            use_gpu=setup.use_gpu,
            resources_per_worker={
                "CPU": config.scaling.cpus_per_worker,
                **({"GPU": 1} if setup.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            # Named after the trial, not the row: a re-run with the same name reloads that run's
            # newest checkpoint from storage (a study resumed after its driver died).
            name=f"train-{tune_trial_id}",
            storage_path=(Storage(setup.storage) / "train").uri,
            # Ray types RunConfig.callbacks as Tune's Callback; Train takes its UserCallbacks there.
            callbacks=[] if spec.local else [TuneReportCallback()],  # type: ignore[list-item]
            failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        ),
    )
