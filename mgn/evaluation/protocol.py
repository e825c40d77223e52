"""From a model and a data set to the figures of the paper's tables, as ``EvalConfig`` asks.

Metric names are those of ``mgn.evaluation.keys``: the summary figures, re-ranked, for Market-1501's
multiple query and for each branch of a multi-branch network. Values are percentages.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mgn.config import DataConfig, EvalConfig, Metric
from mgn.data.loading import eval_loader
from mgn.data.records import ImageRecord, ReidDataset
from mgn.evaluation import keys
from mgn.evaluation.features import FeatureSet, evaluate_features, extract_features, pool_multiple_query
from mgn.evaluation.neighbours import GalleryPass
from mgn.evaluation.rank import RankResult, evaluate_rank
from mgn.evaluation.reranking import re_rank_with_distances, share_gallery


@dataclass(frozen=True)
class Evaluation:
    """Metrics (percent), the CMC curve (fractions, ranks 1..max_rank) and the raw test features."""

    metrics: dict[str, float]
    cmc: np.ndarray
    query: FeatureSet
    gallery: FeatureSet
    per_query: dict[str, np.ndarray] = field(default_factory=dict)  # the metrics per evaluated query


@dataclass(frozen=True)
class TestFeatures:
    """Flip-averaged, un-normalised features of the test splits."""

    query: FeatureSet
    gallery: FeatureSet
    multi_query: FeatureSet | None


def extract_test_features(
    model: nn.Module,
    dataset: ReidDataset,
    data: DataConfig,
    config: EvalConfig,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> TestFeatures:
    """Features of every test split; with ``world_size`` > 1 only this rank's evaluation batches
    (``mgn.distributed.shard_batches``), to be gathered by the caller."""

    def extract(records: list[ImageRecord]) -> FeatureSet:
        loader = eval_loader(records, data, device=device, rank=rank, world_size=world_size)
        return extract_features(model, loader, device, flip=config.flip, precision=config.precision)

    multi = extract(dataset.multi_query) if config.multi_query and dataset.multi_query else None
    return TestFeatures(extract(dataset.query), extract(dataset.gallery), multi)


def rank_metrics(
    query: FeatureSet,
    gallery: FeatureSet,
    config: EvalConfig,
    *,
    rerank: bool,
    shared: GalleryPass | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray], RankResult]:
    """Metrics without (and, with ``rerank``, with) re-ranking, for one pair of feature sets: the
    figures, the same per evaluated query (``RankResult.per_query``) and the plain result.

    Re-ranking computes the query x gallery distances on its way; the plain ranking reuses them
    (Euclidean metric), and ``shared`` carries the gallery x gallery half between calls.
    Re-ranking runs on ``device`` (a GPU: its distance products there), the ranking on the CPU.
    """
    if not rerank:
        plain = evaluate_features(query, gallery, config.metric, config.max_rank)
        return plain.summary(), plain.per_query(), plain
    distance, squared = re_rank_with_distances(
        query.features.to(device or "cpu"), shared.gallery if shared else gallery.features.to(device or "cpu"),
        config.rerank_k1, config.rerank_k2, config.rerank_lambda, shared=shared,
    )  # fmt: skip
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    if config.metric is Metric.EUCLIDEAN:  # squared distances rank as Euclidean ones
        plain = evaluate_rank(squared, *labels, config.max_rank)
    else:
        plain = evaluate_features(query, gallery, config.metric, config.max_rank)
    reranked = evaluate_rank(distance, *labels, config.max_rank)
    metrics = plain.summary() | keys.prefixed(reranked.summary(), keys.reranked)
    per_query = plain.per_query() | keys.prefixed(reranked.per_query(), keys.reranked)
    return metrics, per_query, plain


def evaluate_protocol(
    query: FeatureSet,
    gallery: FeatureSet,
    pooled_query: FeatureSet | None,
    config: EvalConfig,
    device: torch.device | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray], RankResult]:
    """Single query and, given ``pooled_query``, multiple query, each plain and (``config.rerank``)
    re-ranked, in one call that does each distance once: re-ranking's query x gallery distances are
    the plain ranking's, and the gallery x gallery half of re-ranking (three quarters of
    Market-1501's pairs) is shared by single and multiple query. Features are raw; ``config``
    normalises them. Returns the metrics (percent), the same per evaluated query (for confidence
    intervals: ``mgn.evaluation.bootstrap``) and the single-query plain result. On a GPU ``device``
    re-ranking's distance work runs there (results equal the CPU's within float rounding)."""
    query, gallery = query.select(normalize=config.normalize), gallery.select(normalize=config.normalize)
    device = device if device is not None and device.type == "cuda" else None  # the CPU path otherwise
    shared = None
    if config.rerank:
        shared = share_gallery(gallery.features.to(device or "cpu"), config.rerank_k1, config.rerank_k2)
    metrics, per_query, plain = rank_metrics(
        query, gallery, config, rerank=config.rerank, shared=shared, device=device
    )
    if pooled_query is not None:
        pooled = pooled_query.select(normalize=config.normalize)
        mq, mq_per_query, _ = rank_metrics(
            pooled, gallery, config, rerank=config.rerank, shared=shared, device=device
        )
        metrics.update(keys.prefixed(mq, keys.multi_query))
        per_query.update(keys.prefixed(mq_per_query, keys.multi_query))
    return metrics, per_query, plain


def metrics_of(
    features: TestFeatures,
    dataset: ReidDataset,
    config: EvalConfig,
    branches: Mapping[str, Sequence[int]] | None = None,
    device: torch.device | None = None,
) -> Evaluation:
    """Every metric ``config`` asks for; ``branches`` maps a branch name to its embedding columns;
    re-ranking runs on ``device`` when it is a GPU."""
    pooled = None
    if features.multi_query is not None:
        pooled = pool_multiple_query(
            features.query, dataset.query, features.multi_query, dataset.multi_query, config.query_pooling
        )
    metrics, per_query, plain = evaluate_protocol(features.query, features.gallery, pooled, config, device)
    for name, columns in (branches or {}).items():
        branch, _, _ = rank_metrics(
            features.query.select(columns, config.normalize),
            features.gallery.select(columns, config.normalize),
            config,
            rerank=False,
        )
        metrics.update(keys.prefixed(branch, functools.partial(keys.branch, name)))
    return Evaluation(metrics, plain.cmc, features.query, features.gallery, per_query)
