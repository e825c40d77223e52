"""Plain training functions: one epoch, one evaluation, and ``fit`` that loops over epochs.

``fit`` is what a laptop calls directly and what a Ray Train worker calls inside its worker
group: what differs (rank, device, DDP wrapping, where reports and checkpoints go) comes in
through ``TrainingEnv`` and the ``on_epoch_end`` callback. Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mgn.batchnorm import average_running_stats, group_batch_norm
from mgn.checkpoint import TrainingState
from mgn.config import ExperimentConfig, batch_norm_groups
from mgn.config_io import to_dict
from mgn.data.augment import augment_batch
from mgn.data.loading import load_dataset, train_loader
from mgn.data.records import ImageRecord, ReidDataset, pids_and_camids
from mgn.data.sampler import PKBatchSampler
from mgn.distributed import (
    all_gather_with_grad,
    broadcast_state,
    gather_shards,
    mean_over_ranks,
)
from mgn.evaluation import keys
from mgn.evaluation.features import FeatureSet
from mgn.evaluation.protocol import Evaluation, TestFeatures, extract_test_features, metrics_of
from mgn.losses import LossBreakdown, mgn_loss, parameters_without_loss
from mgn.model import MGN, branch_name
from mgn.optim import build_optimizer, build_scheduler


def default_device() -> torch.device:
    """CUDA when a GPU is present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class TrainingEnv:
    """Where this process trains: its rank among ``world_size`` workers, its device, its CPUs (for
    loader workers), and how the model and loader are wrapped for data parallelism (identity on
    one worker; DDP and device placement under Ray Train, whose process group the collectives of
    ``mgn.distributed`` use)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=default_device)
    cpus: int = field(default_factory=available_cpus)
    wrap_model: Callable[[nn.Module], nn.Module] = lambda model: model
    wrap_loader: Callable[[DataLoader[Any]], DataLoader[Any]] = lambda loader: loader

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # epochs done, 1-based
    lr: float
    loss: float
    softmax: float
    triplet: float
    images_per_second: float  # training throughput of all workers together
    seconds: float
    untrained: dict[str, float] | None = None  # with the first epoch: the network before training

    def metrics(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            "loss/softmax": self.softmax,
            "loss/triplet": self.triplet,
            "lr": self.lr,
            "images_per_second": self.images_per_second,
            "epoch_seconds": self.seconds,
        }


class TrainingDiverged(RuntimeError):
    """The weights stopped being finite; retrying with the same seed would diverge again."""


def weights_finite(model: nn.Module) -> bool:
    """Identical on every DDP rank (the weights are), so all ranks take the same decision."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every global RNG from (seed, epoch), the same on every rank, so a run resumed at an epoch
    boundary continues exactly as an uninterrupted one. (Augmentation does not use them: its draws
    come with each image, ``mgn.data.augment``.)"""
    value = int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1)[0])
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    config: ExperimentConfig,
    env: TrainingEnv,
    scaler: torch.amp.GradScaler | None = None,
) -> LossBreakdown:
    """One optimisation step on this rank's share of the global P x K batch (§3.2, §4.1).

    images (B/W, 3, H, W), targets (B/W,). Under DDP the triplet anchors are mined against the
    gathered global batch and DDP averages the ranks' gradients: the step equals one process's
    step on the whole batch (with BN over the recipe's groups, ``mgn.batchnorm``).
    """
    gather = all_gather_with_grad if env.distributed else None
    with _autocast(env.device, config.train.amp):
        outputs = model(images)
    losses = mgn_loss(outputs, targets, config.loss, gather)  # fp32, whatever the network's precision
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses.total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        losses.total.backward()
        optimizer.step()
    return losses


@dataclass(frozen=True)
class EpochLosses:
    """One rank's pass over its loader: mean losses over its batches and the images it saw."""

    loss: float
    softmax: float
    triplet: float
    images: int


class Batches(Protocol):
    """What an epoch iterates: a ``DataLoader``, or a list of its batches (the dry run's few steps).
    A batch is (images, pids, camids) or, from the decoded cache, (uint8 images, pids, camids,
    augmentations)."""

    def __iter__(self) -> Iterator[Sequence[Tensor]]: ...

    def __len__(self) -> int: ...


def train_one_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    config: ExperimentConfig,
    env: TrainingEnv,
    scaler: torch.amp.GradScaler | None = None,
    log: Callable[[str], None] | None = None,
) -> EpochLosses:
    """One pass over ``loader``: this rank's mean losses and the images it saw."""
    model.train()
    total = softmax = triplet = 0.0
    images_seen = batches = 0
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    for step, batch in enumerate(loader):
        images = batch[0].to(env.device, non_blocking=True)
        if images.dtype == torch.uint8:  # from the decoded cache: flip and erase here, on the device
            images = augment_batch(images, batch[3])
        images = images.contiguous(memory_format=memory_format)
        targets = batch[1].to(env.device, non_blocking=True)
        losses = train_step(model, images, targets, optimizer, config, env, scaler)
        total += losses.total.item()
        softmax += losses.softmax.item()
        triplet += losses.triplet.item()
        images_seen += len(images)
        batches += 1
        if log and config.train.log_every and (step + 1) % config.train.log_every == 0:
            log(f"  iter {step + 1}/{len(loader)} loss {losses.total.item():.3f}")
    if batches == 0:
        raise RuntimeError("the training loader yielded no batch")
    return EpochLosses(total / batches, softmax / batches, triplet / batches, images_seen)


def columns_by_branch(model: MGN) -> dict[str, list[int]]:
    """Embedding columns of each branch, by branch name (empty for single-branch networks)."""
    if len(model.branches) < 2:
        return {}
    return {branch_name(b.parts): model.branch_columns([i]) for i, b in enumerate(model.branches)}


def intermediate(config: ExperimentConfig) -> ExperimentConfig:
    """The evaluation of ``eval.interval``: no re-ranking, multiple query or branches."""
    return replace(config, eval=replace(config.eval, rerank=False, multi_query=False))


def evaluate(
    model: MGN,
    dataset: ReidDataset,
    config: ExperimentConfig,
    env: TrainingEnv | None = None,
    *,
    branches: bool = True,
) -> Evaluation | None:
    """All metrics of the test protocol, with each branch alone as well when ``branches``.

    Under data parallelism every rank embeds its share of each test split (whole evaluation
    batches, so each feature is bit-identical to one process's), the shares are gathered on rank
    0 in record order, and rank 0 alone computes the metrics and returns them; the others get
    None. Every rank evaluates rank 0's weights and BN statistics.
    """
    env = env or TrainingEnv()
    if env.distributed:
        broadcast_state(model)
    features = extract_test_features(
        model, dataset, config.data, config.eval, env.device, rank=env.rank, world_size=env.world_size
    )
    if env.distributed:
        gathered = _gathered(features, dataset, config, env.device)
        if gathered is None:
            return None
        features = gathered
    return metrics_of(
        features, dataset, config.eval, columns_by_branch(model) if branches else None, env.device
    )


def _gathered(
    local: TestFeatures, dataset: ReidDataset, config: ExperimentConfig, device: torch.device
) -> TestFeatures | None:
    """Every rank's shares of the test features, on rank 0, in record order (None elsewhere)."""

    def gather(part: FeatureSet | None, records: list[ImageRecord]) -> FeatureSet | None:
        if part is None:
            return None
        rows = gather_shards(part.features, len(records), config.data.eval_batch_size, device)
        return None if rows is None else FeatureSet(rows, *pids_and_camids(records))

    query, gallery = gather(local.query, dataset.query), gather(local.gallery, dataset.gallery)
    multi = gather(local.multi_query, dataset.multi_query)
    return None if query is None or gallery is None else TestFeatures(query, gallery, multi)


def build_model(config: ExperimentConfig, num_classes: int, device: torch.device) -> MGN:
    """The network of ``config`` on ``device``. Parameters no loss term reaches are frozen (they get
    no gradient in any case; under DDP an unfrozen one would stall the gradient reduction)."""
    model = MGN(config.model, num_classes).to(device)
    frozen = set(parameters_without_loss(model, config.loss))
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass(frozen=True)
class FitResult:
    model: MGN
    history: list[EpochStats]
    evaluation: Evaluation | None  # the final one (rank 0 only)
    untrained: dict[str, float] | None = None  # the network before training (eval.untrained)


EpochCallback = Callable[[EpochStats, Evaluation | None, Callable[[], TrainingState]], None]


@dataclass
class Training:
    """The live parts of one training run (``start_training``), which every epoch advances."""

    config: ExperimentConfig
    dataset: ReidDataset
    env: TrainingEnv
    model: MGN  # the bare network: what is evaluated and checkpointed
    trained: nn.Module  # the network as the steps see it (DDP-wrapped under data parallelism)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    loader: DataLoader[Any]
    start: int  # epochs already done (a resumed run)
    untrained: dict[str, float] | None  # the network before training (eval.untrained)
    log: Callable[[str], None] | None  # rank 0's progress lines

    def snapshot(self) -> TrainingState:
        return TrainingState(
            self.model.state_dict(),
            self.optimizer.state_dict(),
            self.scheduler.state_dict(),
            self.scheduler.last_epoch,
            to_dict(self.config),
            self.model.num_classes,
        )


def start_training(
    config: ExperimentConfig,
    dataset: ReidDataset,
    env: TrainingEnv,
    resume: TrainingState | None,
    log: Callable[[str], None] | None,
) -> Training:
    """The network (the same initial weights on every rank), its optimiser and schedule, restored
    from ``resume``; the untrained network evaluated; the network wrapped; the training loader."""
    seed_epoch(config.train.seed, -1)
    model = build_model(config, dataset.num_train_ids, env.device)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer)
    start = 0
    if resume is not None:
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        start = resume.epochs_done
        if log:
            log(f"resumed from a checkpoint after epoch {start}")
    untrained = _untrained(model, dataset, config, env, log) if config.eval.untrained and start == 0 else None
    groups = batch_norm_groups(config.data.batch_size, config.data.k, env.world_size, config.model.bn_group)
    model = group_batch_norm(model, groups)  # shares the parameters the optimiser holds
    use_scaler = config.train.amp and env.device.type == "cuda" and not torch.cuda.is_bf16_supported()
    loader = env.wrap_loader(
        train_loader(
            dataset.train, config.data, rank=env.rank, world_size=env.world_size, seed=config.train.seed,
            device=env.device, cpus=env.cpus,
        )
    )  # fmt: skip
    return Training(
        config, dataset, env, model, env.wrap_model(model), optimizer, scheduler,
        torch.amp.GradScaler("cuda") if use_scaler else None, loader, start, untrained, log,
    )  # fmt: skip


def _untrained(
    model: MGN,
    dataset: ReidDataset,
    config: ExperimentConfig,
    env: TrainingEnv,
    log: Callable[[str], None] | None,
) -> dict[str, float] | None:
    """The network's metrics before training (no re-ranking, no branches): rank 0's, else None."""
    before = evaluate(
        model, dataset, replace(config, eval=replace(config.eval, rerank=False)), env, branches=False
    )
    if log and before:
        log(f"untrained: R1 {before.metrics[keys.R1]:.1f} mAP {before.metrics[keys.MAP]:.1f}")
    return before.metrics if before else None


def train_epoch(run: Training, epoch: int) -> EpochStats:
    """Epoch ``epoch`` (0-based) on every rank: seeded, one pass, the schedule stepped, the weights
    checked. The losses are the global batch's: the mean over ranks of their means (equal shares)."""
    config, env = run.config, run.env
    seed_epoch(config.train.seed, epoch)
    cast(PKBatchSampler, run.loader.batch_sampler).set_epoch(epoch)
    lr = run.optimizer.param_groups[0]["lr"]
    began = time.perf_counter()
    losses = train_one_epoch(run.trained, run.loader, run.optimizer, config, env, run.scaler, run.log)
    loss, softmax, triplet, images = losses.loss, losses.softmax, losses.triplet, losses.images
    if env.distributed:
        loss, softmax, triplet = mean_over_ranks([loss, softmax, triplet], env.device)
        images *= env.world_size
        average_running_stats(run.model)  # each rank tracked its own BN groups
    run.scheduler.step()
    if not weights_finite(run.model):
        raise TrainingDiverged(
            f"the network diverged in epoch {epoch + 1} (loss {loss:.4g}, non-finite weights): lower "
            f"optimizer.lr or add optimizer.warmup_epochs"
        )
    seconds = time.perf_counter() - began
    untrained = run.untrained if epoch == run.start else None
    return EpochStats(epoch + 1, lr, loss, softmax, triplet, images / seconds, seconds, untrained)


def evaluate_epoch(run: Training, epochs_done: int) -> Evaluation | None:
    """The evaluation due after ``epochs_done`` epochs: the whole protocol after the last, the plain
    single-query ranking every ``eval.interval`` epochs (a point of the metric curves), else None."""
    config = run.config
    if epochs_done == config.train.epochs:
        return evaluate(run.model, run.dataset, config, run.env)
    if config.eval.interval and epochs_done % config.eval.interval == 0:
        return evaluate(run.model, run.dataset, intermediate(config), run.env, branches=False)
    return None


def _log_epoch(
    log: Callable[[str], None], stats: EpochStats, evaluation: Evaluation | None, epochs: int
) -> None:
    shown = (
        f" | R1 {evaluation.metrics[keys.R1]:.1f} mAP {evaluation.metrics[keys.MAP]:.1f}"
        if evaluation
        else ""
    )
    log(
        f"epoch {stats.epoch}/{epochs} loss {stats.loss:.3f} lr {stats.lr:.2e} "
        f"{stats.images_per_second:.0f} img/s{shown}"
    )


def fit(
    config: ExperimentConfig,
    dataset: ReidDataset | None = None,
    *,
    env: TrainingEnv | None = None,
    on_epoch_end: EpochCallback | None = None,
    resume: TrainingState | None = None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train ``config`` and evaluate it at the end (and every ``eval.interval`` epochs) on rank 0.

    Args:
        dataset: the loaded data set; read (and its images checked) from ``config.data`` if None.
        env: rank, device and model wrapping; one local worker if None.
        on_epoch_end: called on every rank after each epoch with the epoch's stats, the evaluation
            (rank 0, on evaluation epochs; else None) and a function that snapshots the state.
        resume: a checkpointed state to continue from.
        log: where rank 0 prints progress (None: silent).
    """
    env = env or TrainingEnv()
    run = start_training(
        config, dataset or load_dataset(config.data), env, resume, log if env.is_main else None
    )
    history: list[EpochStats] = []
    evaluation = None
    for epoch in range(run.start, config.train.epochs):
        stats = train_epoch(run, epoch)
        history.append(stats)
        evaluation = evaluate_epoch(run, stats.epoch)
        if run.log:
            _log_epoch(run.log, stats, evaluation, config.train.epochs)
        if on_epoch_end is not None:
            on_epoch_end(stats, evaluation, run.snapshot)
    if run.start >= config.train.epochs:  # resumed after the last epoch: evaluate only
        evaluation = evaluate(run.model, run.dataset, config, env)
    return FitResult(run.model, history, evaluation, run.untrained)
