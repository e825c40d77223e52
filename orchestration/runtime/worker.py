"""The Ray Train per-worker function: ``mgn.training.fit`` with Ray's rank, device and DDP.

Run by ``ray.train.torch.TorchTrainer``, one process per worker (or in the trial's own process in
Train's local mode). Every rank trains; rank 0 alone writes checkpoints, logs to MLflow and saves
the test features. An epoch's metrics are logged before ``report`` hands them to Ray, since Tune may
end the trial inside that call (a search's early stopping); a worker group restarted from an older
checkpoint re-runs epochs already logged, and does not log them twice (``SpoolingRecorder.resume_steps``).

Checkpoints go through Ray: rank 0 hands each one to ``report`` (``ray.train.report`` in a worker
group, ``tune.report`` in local mode), Ray copies it to the grid's storage (a local folder or an
object store, ``RunConfig(storage_path=...)``), keeps the newest ``KEEP_CHECKPOINTS``, and gives the
newest back to a restarted worker group or trial (``get_checkpoint``). Everything else that must
outlive this process (done marker, features, spooled records) goes to the trial's ``Storage``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgn.checkpoint import CHECKPOINT_FILE, TrainingState, save_checkpoint, save_model
from mgn.config import DataConfig, ExperimentConfig
from mgn.config_io import from_dict
from mgn.data.loading import load_dataset, read_dataset
from mgn.evaluation import keys
from mgn.evaluation.protocol import Evaluation
from mgn.export import EmbeddingNetwork, export_onnx
from mgn.training import EpochStats, TrainingDiverged, TrainingEnv, default_device, evaluate, fit
from orchestration.datasets.cache import is_remote, materialize
from orchestration.runtime.checkpoint_fallback import latest_good_state
from orchestration.runtime.faults import Faults
from orchestration.runtime.inputs import dataset_records
from orchestration.runtime.storage import Storage
from orchestration.runtime.trial_files import (
    CMC_ARTIFACT,
    FEATURES_FILE,
    MODEL_ARTIFACT,
    MODEL_FOLDER,
    ONGOING_EPOCH,
    PER_QUERY_ARTIFACT,
    TrialFiles,
)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, as plain values (it crosses process boundaries)."""

    experiment: dict[str, Any]
    run_id: str
    trial_uri: str  # this trial's folder in grid storage (a Storage URI every node reaches)
    local: bool  # Train's local mode: this process is the Tune trial itself
    cpus: int
    images_checked: bool = False  # the driver already decoded every image
    keep_features: bool = False  # save the test features to storage (ensemble members)
    log_checkpoint: bool = False  # the final network as an MLflow Model, and its weights file
    model_name: str = "model"  # the logged MLflow Model's name (its table row: mgn-table5-mgn)
    registered_name: str | None = None  # the registry name its model version goes under
    row: str = ""  # the table row this trial trains
    name: str = ""  # the trial, for picture titles
    # Other data sets' test protocols the trained network is also evaluated on: (name, data config).
    transfer_to: tuple[tuple[str, dict[str, Any]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _session(local: bool):
    """``(report, get_checkpoint)`` of this process: Tune's in local mode (the worker *is* the Tune
    trial, and ray.train.report refuses to run inside Tune), Train's in a worker group (where
    TuneReportCallback forwards rank 0's reports to Tune)."""
    if local:
        from ray import tune

        return tune.report, tune.get_checkpoint
    import ray.train

    return ray.train.report, ray.train.get_checkpoint


def _report_with_checkpoint(report, metrics: dict[str, Any], state: TrainingState | None) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint, which Ray copies to storage
    before ``report`` returns."""
    if state is None:
        report(metrics)
        return
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="mgn-checkpoint-") as folder:
        save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
        report(metrics, checkpoint=Checkpoint.from_directory(folder))


def ray_environment(cpus: int) -> TrainingEnv:
    """This Ray Train worker's rank, device and DDP wrapping (its process group is Ray's)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    return TrainingEnv(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        cpus=cpus,
        # DDP averages the ranks' gradients. It must not overwrite the ranks' BN running statistics
        # with rank 0's before every forward: each rank tracks its own BN groups, and the epoch ends
        # with their mean (mgn.batchnorm.average_running_stats). Parameters no loss reaches are
        # frozen in build_model.
        wrap_model=lambda model: ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"broadcast_buffers": False}
        ),
        # Keep our P x K sampler: without add_dist_sampler=False Ray swaps in a DistributedSampler.
        wrap_loader=lambda loader: ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False),
    )


def _environment(spec: WorkerSpec) -> TrainingEnv:
    if spec.local:
        return TrainingEnv(rank=0, world_size=1, device=default_device(), cpus=spec.cpus)
    return ray_environment(spec.cpus)


def _worker_nodes(env: TrainingEnv) -> list[str]:
    """The Ray node id of every rank, in rank order (a collective: every rank calls it)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if env.world_size == 1:
        return [node]
    nodes: list[Any] = [None] * env.world_size
    torch.distributed.all_gather_object(nodes, node)
    return nodes


def _check_same_start(env: TrainingEnv, resume: TrainingState | None) -> None:
    """Every rank must continue from the same epoch (each read the checkpoint itself); a rank that
    could not would train other weights in lockstep with the rest, or hang them."""
    if env.world_size == 1:
        return
    starts: list[Any] = [None] * env.world_size
    torch.distributed.all_gather_object(starts, resume.epochs_done if resume else 0)
    if len(set(starts)) > 1:
        raise RuntimeError(f"ranks read different checkpoints (epochs done by rank: {starts}); restarting")


@dataclass
class EpochReporter:
    """``fit``'s epoch callback in a worker: rank 0 records the epoch in MLflow (before the report:
    Tune may end the trial inside it, a search's early stopping), every rank reports to Ray (rank 0
    with a checkpoint when one is due), then injected faults fire (tests)."""

    spec: WorkerSpec
    config: ExperimentConfig
    env: TrainingEnv
    recorder: Any  # SpoolingRecorder on rank 0, else None
    report: Any  # Tune's or Train's report
    faults: Faults
    notes: list[str]  # warnings for the person watching: they travel with the next report

    def __call__(self, stats: EpochStats, evaluation: Evaluation | None, snapshot) -> None:
        config, recorder = self.config, self.recorder
        metrics: dict[str, Any] = {
            "epoch": stats.epoch,
            **stats.metrics(),
            **(_named(config, evaluation) if evaluation else {}),
        }
        if self.notes:
            metrics["warnings"] = "; ".join(self.notes)
            if recorder is not None:
                recorder.set_tags({"warnings": metrics["warnings"]})
            self.notes.clear()
        last = stats.epoch == config.train.epochs
        every = config.train.checkpoint_every
        checkpointing = every and (stats.epoch % every == 0 or last)
        if recorder is not None:
            if stats.untrained:  # under its own names (the tables' column) and as step 0 of the curves
                recorder.log_metrics(keys.prefixed(stats.untrained, keys.untrained), step=0)
                recorder.log_metrics(_curve_start(stats.untrained), step=0)
            recorder.log_metrics({k: v for k, v in metrics.items() if k != "warnings"}, step=stats.epoch)
        ongoing = {} if last else {ONGOING_EPOCH: stats.epoch}
        _report_with_checkpoint(
            self.report, {**metrics, **ongoing}, snapshot() if checkpointing and self.env.is_main else None
        )
        self.faults.after_epoch(self.spec.row, self.env.rank, stats.epoch, Storage(self.spec.trial_uri))


def train_worker(loop_config: dict[str, Any]) -> None:
    spec = WorkerSpec(**loop_config)
    planned = from_dict(ExperimentConfig, spec.experiment)
    config, manifest = _data_on_this_node(planned)
    trial = Storage(spec.trial_uri)
    if not torch.cuda.is_available():
        torch.set_num_threads(spec.cpus)
    env = _environment(spec)
    nodes = _worker_nodes(env)
    recorder = None
    if env.is_main:
        from orchestration.runtime.spool import SpoolingRecorder
        from orchestration.runtime.tracking import Tracker

        recorder = SpoolingRecorder(Tracker.from_env(), spec.run_id, trial)
    # The driver decoded every image already; only dropping bad files needs the check again.
    dataset = (
        load_dataset(config.data)
        if (config.data.skip_bad_images or not spec.images_checked)
        else read_dataset(config.data)
    )
    notes: list[str] = []
    report, get_checkpoint = _session(spec.local)
    resume = latest_good_state(get_checkpoint(), warn=notes.append)
    _check_same_start(env, resume)
    on_epoch_end = EpochReporter(spec, config, env, recorder, report, Faults.from_env(), notes)
    if recorder is not None:
        attempt = _record_start(recorder, trial, nodes, resume, dataset_records(dataset, planned.data, manifest))
        if attempt > 1 and not spec.local:
            notes.append(_restart_note(attempt, resume, nodes))
    monitor = (
        recorder.tracker.system_metrics(spec.run_id) if recorder is not None else contextlib.nullcontext()
    )
    try:
        with monitor:
            result = fit(config, dataset, env=env, on_epoch_end=on_epoch_end, resume=resume, log=print)
    except TrainingDiverged as error:
        # Deterministic: a retry with the same seed diverges again. Record it and end normally.
        if recorder is not None:
            recorder.set_tags({"diverged": "true", "failure": str(error)})
            TrialFiles(trial).diverged.write_text(str(error))
        # A search's early stopping and searcher need their metric in every report: a diverged
        # recipe scores nothing.
        report({"diverged": 1.0, **({keys.validation(keys.MAP): 0.0} if config.data.validation_ids else {})})
        return
    transfer = transfer_evaluations(spec, config, result.model, env)  # every rank: evaluation is collective
    if recorder is None:
        return
    if result.evaluation is not None:
        final = _named(config, result.evaluation)
        if not result.history:  # resumed after the last epoch: nothing was reported yet
            recorder.log_metrics(final, step=config.train.epochs)
            report({"epoch": config.train.epochs, **final})
        if transfer.metrics:
            recorder.log_metrics(transfer.metrics, step=config.train.epochs)
        _log_final(spec, recorder, result.evaluation, result.model, dataset, config, transfer.per_query)
        TrialFiles(trial).done.write_text(json.dumps({"epoch": config.train.epochs, **final}))


def _data_on_this_node(config: ExperimentConfig) -> tuple[ExperimentConfig, str | None]:
    """The config reading its data set from this node (a data root in object storage: this node's
    checked copy, downloaded once per node) and the digest of the manifest it was checked against."""
    if not is_remote(config.data.root):
        return config, None
    copy = materialize(str(config.data.root), config.data.dataset.value)
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, root=str(copy.root))
    ), copy.digest


def _record_start(recorder, trial: Storage, nodes: list, resume, datasets: list[dict]) -> int:
    """Rank 0, before training: which attempt this is (returned), on which nodes, from which epoch, on
    which data; and the steps already recorded, which a resumed attempt does not log twice."""
    recorder.resume_steps("loss")
    attempt = _count_attempt(trial)
    tags = {"attempts": str(attempt), "worker_nodes": json.dumps(nodes)}
    if resume is not None:
        tags["resumed_from_epoch"] = str(resume.epochs_done)
    recorder.set_tags(tags)
    recorder.log_datasets(datasets)
    return attempt


def _restart_note(attempt: int, resume: TrainingState | None, nodes: list[str]) -> str:
    """What the console says of a worker group Ray Train restarted (Tune never sees that restart,
    so the driver's own "restarting" line cannot): which attempt, from which epoch, on which nodes.
    It travels with the attempt's first report: an earlier report without the metric would break a
    search's scheduler and searcher."""
    where = ", ".join(dict.fromkeys(node[:8] for node in nodes))
    return (
        f"its worker group started again (attempt {attempt}: a process or its node was lost, or the driver "
        f"resumed it) from epoch {resume.epochs_done if resume else 0}, on node(s) {where}"
    )


def _curve_start(untrained: dict[str, float]) -> dict[str, float]:
    """The untrained network's R1, mAP and mINP: the point at epoch 0 of the curves the trained
    network's evaluations continue (the tables read the latest step, never this one)."""
    return {k: v for k, v in untrained.items() if k in (keys.R1, keys.MAP, keys.MINP)}


def _named(config: ExperimentConfig, evaluation: Evaluation) -> dict[str, float]:
    """An evaluation's metrics under the names of what was evaluated: ``val/mAP`` on a validation
    split, so that no table or reader takes it for a test figure; ``mAP`` on the test set."""
    if config.data.validation_ids:
        return keys.prefixed(evaluation.metrics, keys.validation)
    return dict(evaluation.metrics)


def _count_attempt(trial: Storage) -> int:
    """How many times this trial's training has started (restarts included)."""
    counter = trial / "attempts"
    attempts = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempts))
    return attempts


@dataclass(frozen=True)
class Transfer:
    """The trained network on other data sets' test protocols (rank 0's; empty on the others)."""

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]


def transfer_evaluations(spec: WorkerSpec, config: ExperimentConfig, model, env) -> Transfer:
    """Direct transfer (train on A, test on B, no adaptation): for each of ``spec.transfer_to``, its
    test protocol at this network's input size, single query without re-ranking, as
    ``transfer/<name>/<metric>``."""
    metrics: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    for name, data in spec.transfer_to:
        target = from_dict(DataConfig, data)
        target = dataclasses.replace(
            config.data, dataset=target.dataset, root=target.root, synthetic=target.synthetic
        )
        tested, _ = _data_on_this_node(dataclasses.replace(config, data=target))
        tested = dataclasses.replace(
            tested, eval=dataclasses.replace(config.eval, multi_query=False, rerank=False)
        )
        evaluation = evaluate(model, read_dataset(tested.data), tested, env, branches=False)
        if evaluation is not None:  # rank 0
            metrics |= keys.prefixed(evaluation.metrics, functools.partial(keys.transfer, name))
            per_query |= keys.prefixed(evaluation.per_query, functools.partial(keys.transfer, name))
    return Transfer(metrics, per_query)


def _log_final(
    spec: WorkerSpec,
    recorder,
    evaluation: Evaluation,
    model,
    dataset,
    config: ExperimentConfig,
    transfer_per_query: dict[str, np.ndarray],
) -> None:
    from orchestration.tables.figures import trial_pictures

    with tempfile.TemporaryDirectory() as tmp:
        cmc = Path(tmp) / CMC_ARTIFACT
        ranks = np.arange(1, len(evaluation.cmc) + 1)
        np.savetxt(
            cmc,
            np.column_stack([ranks, evaluation.cmc]),
            fmt=["%d", "%.6f"],
            delimiter=",",
            # A fraction (0-1), said in the column name: the logged metrics are percentages.
            header="rank,matched_fraction",
            comments="",
        )
        recorder.log_artifact(cmc)
        per_query = Path(tmp) / PER_QUERY_ARTIFACT
        arrays: dict[str, Any] = evaluation.per_query | transfer_per_query
        np.savez_compressed(per_query, **arrays)
        recorder.log_artifact(per_query)
        for picture in trial_pictures(model, dataset, evaluation, config, Path(tmp), spec.name):
            recorder.log_artifact(picture)
        if spec.log_checkpoint:
            recorder.log_artifact(
                save_model(model, spec.experiment, Path(tmp) / Path(MODEL_ARTIFACT).name), MODEL_FOLDER
            )
            network = EmbeddingNetwork(model, flip=config.eval.flip, normalize=True)
            onnx = export_onnx(network, Path(tmp) / "model.onnx", config.data.height, config.data.width)
            recorder.log_model(onnx, spec.model_name, spec.registered_name)
    if spec.keep_features:
        save_features(evaluation, Storage(spec.trial_uri) / FEATURES_FILE)


def save_features(evaluation: Evaluation, target: Storage) -> None:
    """Test features of a trained network (plain tensors, loadable with ``weights_only=True``)."""
    payload = {}
    for split, features in (("query", evaluation.query), ("gallery", evaluation.gallery)):
        payload[f"{split}/features"] = features.features
        payload[f"{split}/pids"] = torch.as_tensor(features.pids)
        payload[f"{split}/camids"] = torch.as_tensor(features.camids)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(payload, Path(folder) / FEATURES_FILE)
        target.upload(Path(folder) / FEATURES_FILE)
