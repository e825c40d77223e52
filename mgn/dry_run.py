"""A dry run: a trial's whole path at its full shape, for a few steps, without a grid.

Before a multi-day grid on a GPU node, every path it takes (data loader and augmentation, the
network at the recipe's input size and width, the losses, backward, the optimiser, test-feature
extraction at the configured precision) runs here once at the recipe's shapes, and the time and
memory it took are measured. On a laptop without the data set or a GPU the same call proves the
shapes fit together and says what a step costs.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from itertools import islice

import torch

from mgn.config import ExperimentConfig
from mgn.data.loading import eval_loader, train_loader
from mgn.data.records import ReidDataset
from mgn.evaluation.features import extract_features
from mgn.optim import build_optimizer
from mgn.training import TrainingEnv, available_cpus, build_model, default_device, seed_epoch, train_one_epoch


@dataclass(frozen=True)
class DryRunReport:
    """What ``steps`` training steps and one test batch cost on this machine."""

    steps: int
    images_per_step: int  # the global P x K batch
    step_seconds: float  # per training step: loading, augmenting, forward, losses, backward, optimiser
    loss: float  # the mean loss of those steps (finite, or the run raised)
    eval_images: int
    eval_seconds: float  # embedding one test batch (with its flipped copy, §4.1)
    feature_dim: int
    peak_memory_bytes: int  # CUDA: peak allocated on the device; CPU: this process's peak resident set
    peak_memory_scope: str  # what that peak covers, for the reader


def peak_memory(device: torch.device) -> int:
    """Bytes: peak allocated on a CUDA device, else this process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def dry_run(
    config: ExperimentConfig, dataset: ReidDataset, steps: int = 1, device: torch.device | None = None
) -> DryRunReport:
    """Train ``steps`` steps of ``config`` on ``dataset`` at full shape and embed one test batch."""
    if steps < 1:
        raise ValueError(f"steps={steps}: a dry run takes at least one step")
    device = device or default_device()
    env = TrainingEnv(device=device, cpus=available_cpus())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_epoch(config.train.seed, -1)
    model = build_model(config, dataset.num_train_ids, device)
    optimizer = build_optimizer(config, model)
    loader = train_loader(
        dataset.train, config.data, seed=config.train.seed, device=device, cpus=env.cpus
    )  # fmt: skip
    began = time.perf_counter()
    losses = train_one_epoch(model, list(islice(loader, steps)), optimizer, config, env)
    loss, images = losses.loss, losses.images
    step_seconds = (time.perf_counter() - began) / steps
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"the dry run's loss is {loss}: the recipe diverges at once")
    batch = dataset.query[: config.data.eval_batch_size]
    began = time.perf_counter()
    features = extract_features(
        model, eval_loader(batch, config.data, device=device), device, precision=config.eval.precision
    )  # fmt: skip
    return DryRunReport(
        steps=steps,
        images_per_step=images // steps,
        step_seconds=step_seconds,
        loss=loss,
        eval_images=len(batch),
        eval_seconds=time.perf_counter() - began,
        feature_dim=features.features.shape[1],
        peak_memory_bytes=peak_memory(device),
        peak_memory_scope=(
            "allocated on the GPU by this row"
            if device.type == "cuda"
            else "resident, this process so far (on CPU it includes the data and earlier rows)"
        ),
    )
