"""Collectives for data-parallel training and evaluation: torch.distributed, gloo on CPU, NCCL on GPU.

Ray Train (or ``torchrun``) sets up the process group; nothing here imports Ray. Without a process
group of more than one rank every function is the identity, so the same training code runs in one
process.

Conventions that make W workers compute the paper's one-batch step (§4.1, P=16 x K=4 = 64):

* Each rank's loss is the *mean over its own anchors* (softmax and triplet), mined against the
  gathered global batch. DDP averages gradients over the W ranks, so the step's gradient is the
  mean over all P x K anchors: exactly one process's, not scaled a second time.
* ``all_gather_with_grad`` and ``all_reduce_with_grad`` send gradients back to the rank that owns
  each share (backward = all-reduce of the gradient), so a positive or negative mined on another
  rank moves that rank's network too.
* Batch norm over groups that span ranks (``mgn.batchnorm``) sums its statistics with
  ``all_reduce_with_grad``: torch's ``nn.SyncBatchNorm`` refuses CPU tensors and cannot form the
  recipe's groups, and one implementation on every device is one to test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any  # autograd contexts: torch types them loosely and we add fields

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    """Ranks in the default process group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:  # (B, ...) -> (W * B, ...), rank order
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Every rank's loss reached every share: sum the gradients, keep this rank's rows.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.contiguous().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """(B, ...) on each of W ranks -> (W*B, ...) in rank order; gradients flow back to every share.
    Every rank must pass the same shape (the P x K sampler gives each rank P/W x K images)."""
    return _AllGather.apply(tensor) if world_size() > 1 else tensor


def all_reduce_with_grad(tensor: Tensor) -> Tensor:
    """Sum over ranks, differentiable (the gradient of a sum is the sum of the ranks' gradients)."""
    return _AllReduceSum.apply(tensor) if world_size() > 1 else tensor


@torch.no_grad()
def mean_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """The mean over ranks of each value (e.g. each rank's mean loss), for logging."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / world_size()).tolist()


@torch.no_grad()
def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (they already agree after
    ``mgn.batchnorm.average_running_stats``; this makes evaluation independent of that)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src)


def shard_batches(num_items: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """The evaluation batches of one rank: batches ``rank, rank + W, ...`` of the single-process
    partition ``[0, bs), [bs, 2 bs), ...``. Each batch is computed exactly as one process computes
    it, so gathered features are bit-identical to single-process extraction."""
    starts = range(rank * batch_size, num_items, world * batch_size)
    return [list(range(s, min(s + batch_size, num_items))) for s in starts]


@torch.no_grad()
def gather_shards(local: Tensor, num_items: int, batch_size: int, device: torch.device) -> Tensor | None:
    """Rank 0: the (num_items, D) rows of every rank's ``shard_batches``, in item order; others: None.

    ``local`` is this rank's (rows, D) CPU tensor. Shards differ in length by at most one batch:
    each is padded to rank 0's length (the longest) for ``dist.gather``.
    """
    world, me = world_size(), rank()
    if world == 1:
        return local
    shards = [[i for b in shard_batches(num_items, batch_size, r, world) for i in b] for r in range(world)]
    longest = len(shards[0])
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)] if me == 0 else None
    dist.gather(padded, parts, dst=0)
    if me != 0:
        return None
    out = torch.empty((num_items, *local.shape[1:]), dtype=local.dtype)
    assert parts is not None  # rank 0 received them
    for shard, part in zip(shards, parts, strict=True):
        out[shard] = part[: len(shard)].cpu()
    return out
