"""Losses of §3.2 as pure functions: softmax (cross entropy) and batch-hard triplet (Hermans et al.).

Within one loss term the batch is averaged (``F.cross_entropy``'s mean; the mean over anchors for
the triplet), so the learning rate does not depend on the batch size. How the several terms of one
kind are combined (sum as in the paper, or mean as in community ports) and their weights come from
``LossConfig``; a kind with weight 0 is not computed at all (its layers get no gradient).

With W data-parallel workers each rank passes its own share of the batch and a ``gather`` that
returns the global batch: its anchors are mined against all P x K images, and the mean over its
anchors, averaged over ranks by DDP, is the one-process loss (``mgn.distributed``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgn.config import LossConfig, Reduction
from mgn.model import MGN, MGNOutput

Gather = Callable[[Tensor], Tensor]  # (B_rank, ...) -> (B_global, ...), gradients flowing back


def full_precision(x: Tensor) -> Tensor:
    """fp16 / bf16 -> fp32; other dtypes unchanged. Losses never run in reduced precision: bf16's
    ~3 significant digits would mine triplets on distances rounded to ~0.04 against a margin of 1.2."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _full_precision_region(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Autocast switched off (on devices that have one: not, e.g., "meta" used to count FLOPs)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def pairwise_euclidean(features: Tensor, others: Tensor | None = None) -> Tensor:
    """(B, D), (M, D) -> (B, M) Euclidean distances (others = features when None), with a finite
    gradient at zero distance."""
    squared = features.pow(2).sum(dim=1)
    # One norm computation for one tensor: the rounding (and so the training trajectory) of a
    # single process stays bit-identical to earlier versions.
    others_squared = squared if others is None or others is features else others.pow(2).sum(dim=1)
    others = features if others is None else others
    d2 = squared[:, None] + others_squared[None, :] - 2.0 * features @ others.T
    # clamp before sqrt: the diagonal is 0 up to rounding, and d sqrt(x)/dx is infinite at 0.
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet_loss(
    features: Tensor,
    targets: Tensor,
    margin: float,
    pool: Tensor | None = None,
    pool_targets: Tensor | None = None,
) -> Tensor:
    """Batch-hard triplet loss (Eq. 2): for each anchor, the furthest positive and closest negative.

    Args:
        features: (B, D) embeddings of the anchors (a P x K batch, or one rank's share of it).
        targets: (B,) identity labels.
        margin: alpha in Eq. 2 (1.2 in the paper).
        pool, pool_targets: (M, D) and (M,): the images the anchors are mined against, the anchors
            among them (the global batch under data parallelism); the anchors themselves if None.

    Returns:
        Scalar: mean over anchors of [margin + max_p d(a, p) - min_n d(a, n)]_+. Anchors with no
        negative in the pool contribute 0.
    """
    features = full_precision(features)
    pool = features if pool is None else full_precision(pool)
    pool_targets = targets if pool_targets is None else pool_targets
    with _full_precision_region(features.device):  # distances in fp32 under any autocast
        dist = pairwise_euclidean(features, pool)  # (B, M)
    same = targets[:, None] == pool_targets[None, :]  # (B, M), True at each anchor's own column
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(dim=1)  # (B,)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)  # (B,)
    return F.relu(margin + hardest_positive - hardest_negative).mean()


def _combine(terms: list[Tensor], reduction: Reduction) -> Tensor:
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction is Reduction.MEAN else total


@dataclass(frozen=True)
class LossBreakdown:
    """Total loss and its parts (weighted), for logging."""

    total: Tensor
    softmax: Tensor
    triplet: Tensor


def mgn_loss(
    outputs: MGNOutput, targets: Tensor, config: LossConfig, gather: Gather | None = None
) -> LossBreakdown:
    """Softmax on every classifier's logits, triplet on the reduced globals f_g (§3.2, Table 5 note).

    Which global feature a classifier sees (z_g or f_g) is fixed by the model config; this
    function applies the loss kinds and weights of ``config``. ``gather``: see the module note.
    It computes in fp32 (or the outputs' wider dtype) whatever autocast the caller is under.
    """
    with _full_precision_region(targets.device):  # no reduced precision, whatever the caller's
        return _mgn_loss(outputs, targets, config, gather)


def _mgn_loss(
    outputs: MGNOutput, targets: Tensor, config: LossConfig, gather: Gather | None
) -> LossBreakdown:
    zero = full_precision(outputs.global_logits[0]).new_zeros(())
    softmax = triplet = zero
    if config.softmax_weight > 0:
        logits = outputs.global_logits + outputs.part_logits
        softmax = config.softmax_weight * _combine(
            [F.cross_entropy(full_precision(x), targets) for x in logits], config.softmax_reduction
        )
    if config.triplet_weight > 0:
        pool_targets = gather(targets) if gather else None
        triplets = [
            batch_hard_triplet_loss(f, targets, config.triplet_margin, gather(f) if gather else None, pool_targets)
            for f in outputs.embedded_globals
        ]  # fmt: skip
        triplet = config.triplet_weight * _combine(triplets, config.triplet_reduction)
    return LossBreakdown(total=softmax + triplet, softmax=softmax.detach(), triplet=triplet.detach())


def parameters_without_loss(model: MGN, config: LossConfig) -> list[str]:
    """Names of the parameters no loss term of ``config`` reaches, decided from the configs alone.

    * triplet weight 0 with classifiers on the pooled z_g: the global reductions (f_g feeds only
      the triplet loss), e.g. ``loss.triplet_weight=0`` on MGN;
    * softmax weight 0: every classifier, and the stripe reductions that only feed them.

    They would get no gradient in one process either (the optimiser skips them); under DDP they
    must be frozen, or the gradient reduction waits for them forever.
    """
    unused: list[nn.Module] = []
    for branch in model.branches:
        if config.triplet_weight == 0 and branch.classifier_on_pooled:
            unused.append(branch.reductions[0])
        if config.softmax_weight == 0:
            unused += [branch.classifiers, *branch.reductions[1:]]
    ids = {id(p) for module in unused for p in module.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]
