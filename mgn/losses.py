"""Losses of §3.2 as pure functions: softmax (cross entropy) and batch-hard triplet (Hermans et al.).

Within one loss term the batch is averaged (``F.cross_entropy``'s mean; the mean over anchors for
the triplet), so the learning rate does not depend on the batch size. How the several terms of one
kind are combined (sum as in the paper, or mean as in community ports) and their weights come from
``LossConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mgn.config import LossConfig, Reduction
from mgn.model import MGNOutput


def pairwise_euclidean(features: Tensor) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances, with a finite gradient at zero distance."""
    squared = features.pow(2).sum(dim=1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * features @ features.T
    # clamp before sqrt: the diagonal is 0 up to rounding, and d sqrt(x)/dx is infinite at 0.
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet_loss(features: Tensor, targets: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss (Eq. 2): for each anchor, the furthest positive and closest negative.

    Args:
        features: (B, D) embeddings of a P x K batch.
        targets: (B,) identity labels.
        margin: alpha in Eq. 2 (1.2 in the paper).

    Returns:
        Scalar: mean over anchors of [margin + max_p d(a, p) - min_n d(a, n)]_+. Anchors with no
        negative in the batch contribute 0.
    """
    dist = pairwise_euclidean(features)  # (B, B)
    same = targets[:, None] == targets[None, :]  # (B, B), diagonal True
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


def mgn_loss(outputs: MGNOutput, targets: Tensor, config: LossConfig) -> LossBreakdown:
    """Softmax on every classifier's logits, triplet on the reduced globals f_g (§3.2, Table 5 note).

    Which global feature a classifier sees (z_g or f_g) is fixed by the model config; this
    function applies the loss kinds and weights of ``config``.
    """
    logits = outputs.global_logits + outputs.part_logits
    softmax = config.softmax_weight * _combine(
        [F.cross_entropy(x, targets) for x in logits], config.softmax_reduction
    )
    if config.triplet_weight > 0:
        triplets = [
            batch_hard_triplet_loss(f, targets, config.triplet_margin) for f in outputs.embedded_globals
        ]
        triplet = config.triplet_weight * _combine(triplets, config.triplet_reduction)
    else:
        triplet = softmax.new_zeros(())
    return LossBreakdown(total=softmax + triplet, softmax=softmax.detach(), triplet=triplet.detach())
