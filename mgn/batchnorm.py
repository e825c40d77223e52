"""Batch norm over the recipe's groups of images, whatever the number of workers (``model.bn_group``).

The paper trained one P x K = 64 batch on two GPUs with DataParallel: each GPU normalised its 32
images. That group size is a fact of the experiment, not of the hardware, so here it is a recipe
field, and W workers of P x K / W images each form exactly those groups:

* a worker's share equals a group: the plain ``nn.BatchNorm`` (its fused kernels);
* a worker's share holds several groups (one process, ``bn_group=32`` of 64): *ghost batches*, each
  group normalised by its own statistics (``GroupBatchNorm`` with ``ghosts > 1``);
* a group spans several workers (4 workers of 16, ``bn_group=32``): neighbouring ranks share their
  sums in one differentiable all-reduce (``GroupBatchNorm`` with ``ranks > 1``; gradients flow back
  to every rank of the group, as through one process's BN over those images).

Group j is always global batch positions ``[j * images, (j + 1) * images)``, the same images for any
W. The running statistics, which evaluation uses, are the mean over the global batch's groups of
their mean and unbiased variance: each rank folds in its own groups' means, and
``average_running_stats`` averages the ranks' buffers (exact, since the exponential average is
linear and the buffers start equal), so they too are the same for any W.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mgn.config import BatchNormGroups
from mgn.distributed import all_reduce_with_grad, rank, world_size

M = TypeVar("M", bound=nn.Module)


class GroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of ``ghosts`` groups inside this rank's batch,
    or of one group shared by ``ranks`` neighbouring ranks. In eval mode, the plain batch norm."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, ghosts: int, ranks: int) -> None:
        super().__init__(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        if norm.affine:  # shared, not copied: optimisers and state-dict keys are unchanged
            self.weight, self.bias = norm.weight, norm.bias
        if norm.track_running_stats:
            self.running_mean, self.running_var = norm.running_mean, norm.running_var
            self.num_batches_tracked = norm.num_batches_tracked
        self.ghosts, self.ranks = ghosts, ranks
        self.train(norm.training)

    def forward(self, x: Tensor) -> Tensor:  # (N, C) or (N, C, H, W)
        if not self.training:
            return super().forward(x)
        groups = x.unflatten(0, (self.ghosts, -1))  # (G, N/G, C, ...)
        dims = [1, *range(3, groups.dim())]  # images and positions of each group
        shape = [self.ghosts, 1, -1] + [1] * (x.dim() - 2)
        count = groups[0].numel() / x.shape[1] * self.ranks
        # Two passes (mean, then mean squared deviation): as accurate as nn.BatchNorm's variance.
        mean = self._over_group(groups.sum(dims)) / count  # (G, C)
        centered = groups - mean.view(shape)
        var = self._over_group(centered.pow(2).sum(dims)) / count  # biased, as BN normalises
        if self.track_running_stats:
            self._track(mean.detach(), var.detach() * count / max(count - 1, 1))
        out: Tensor = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape[1:]) + self.bias.view(shape[1:])
        return out.flatten(0, 1)

    def _over_group(self, sums: Tensor) -> Tensor:
        """(G, C) sums of this rank's groups -> the sums over each group's ranks."""
        if self.ranks == 1:
            return sums
        world = world_size()
        if self.ranks == world:
            return all_reduce_with_grad(sums)
        # Every rank's (1, C) sums in one (W, C) all-reduce; this rank adds its group's rows.
        mine = torch.zeros(world, 1, dtype=sums.dtype, device=sums.device)
        mine[rank()] = 1
        everyone = all_reduce_with_grad(mine * sums)  # (W, C); backward: each rank its own row
        first = rank() // self.ranks * self.ranks
        return everyone[first : first + self.ranks].sum(0, keepdim=True)

    @torch.no_grad()
    def _track(self, mean: Tensor, unbiased: Tensor) -> None:
        """Fold the mean over this rank's groups into the running statistics (one update a step)."""
        tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
        assert tracked is not None and running_mean is not None and running_var is not None  # tracking
        tracked.add_(1)
        momentum = 1.0 / float(tracked) if self.momentum is None else self.momentum
        running_mean.lerp_(mean.mean(0), momentum)
        running_var.lerp_(unbiased.mean(0), momentum)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")


def group_batch_norm(module: M, groups: BatchNormGroups) -> M:
    """``module``, with every ``BatchNorm1d``/``2d`` inside it replaced (in place) by one normalising
    ``groups`` (shared parameters and buffers); unchanged when a rank's share is one group (the
    plain BN does exactly that)."""
    if groups.ghosts == 1 and groups.ranks == 1:
        return module
    for name, child in module.named_children():
        module.add_module(name, _grouped(child, groups))
    return module


def _grouped(module: nn.Module, groups: BatchNormGroups) -> nn.Module:
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        return GroupBatchNorm(module, groups.ghosts, groups.ranks)
    return group_batch_norm(module, groups)


@torch.no_grad()
def average_running_stats(module: nn.Module) -> None:
    """Set every BN's running mean and variance to their mean over the ranks (one all-reduce).
    Each rank tracked its own groups; the mean is the running statistics of all the groups."""
    if world_size() == 1:
        return
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    buffers = [b for m in norms for b in (m.running_mean, m.running_var) if b is not None]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1).double() for b in buffers])
    dist.all_reduce(flat)
    flat /= world_size()
    for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
        buffer.copy_(part.view_as(buffer))
