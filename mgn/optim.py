"""Optimiser and learning-rate schedule, built from ``ExperimentConfig``."""

from __future__ import annotations

import bisect

import torch
from torch import nn

from mgn.config import ExperimentConfig, OptimizerKind


def build_optimizer(config: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (paper §4.1) or Adam/AMSGrad (community recipe), at ``config.effective_lr``."""
    opt = config.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.kind is OptimizerKind.SGD:
        return torch.optim.SGD(
            params, lr=config.effective_lr, momentum=opt.momentum, weight_decay=opt.weight_decay
        )
    return torch.optim.Adam(
        params, lr=config.effective_lr, weight_decay=opt.weight_decay, amsgrad=opt.amsgrad
    )


def lr_factor(config: ExperimentConfig, epoch: int) -> float:
    """Multiplier of the base lr during ``epoch`` (0-based): linear warm-up, then step decay."""
    opt = config.optimizer
    if epoch < opt.warmup_epochs:
        return 0.1 + 0.9 * epoch / opt.warmup_epochs
    return opt.gamma ** bisect.bisect_right(list(opt.milestones), epoch)


def build_scheduler(
    config: ExperimentConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch; lr = base * gamma^(milestones passed), e.g. x0.1 after epochs 40 and 60."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(config, epoch))
