"""Features for evaluation: flip-averaged extraction (§4.1), subsets, multiple query, ranking."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mgn.config import Metric, Precision, QueryPooling
from mgn.data.records import ImageRecord
from mgn.evaluation.distance import as_features, distance_block, query_blocks, squared_norms
from mgn.evaluation.rank import APMode, RankAccumulator, RankResult

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


@dataclass(frozen=True)
class FeatureSet:
    """Features of a split with its labels: features (N, D) float32, pids and camids (N,)."""

    features: Tensor
    pids: np.ndarray
    camids: np.ndarray

    def select(self, columns: Sequence[int] | None = None, normalize: bool = False) -> FeatureSet:
        """A subset of embedding columns (e.g. one branch), optionally L2-normalised afterwards."""
        features = self.features if columns is None else self.features[:, list(columns)]
        if normalize:
            features = torch.nn.functional.normalize(features, dim=1)
        return FeatureSet(features, self.pids, self.camids)

    @staticmethod
    def concat(parts: Sequence[FeatureSet]) -> FeatureSet:
        """Concatenate the features of several models over the same images (an ensemble)."""
        for part in parts[1:]:
            if not (
                np.array_equal(part.pids, parts[0].pids) and np.array_equal(part.camids, parts[0].camids)
            ):
                raise ValueError(
                    "feature sets to concatenate must describe the same images in the same order"
                )
        return FeatureSet(torch.cat([p.features for p in parts], dim=1), parts[0].pids, parts[0].camids)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable[Sequence[Any]],
    device: torch.device | str = "cpu",
    *,
    flip: bool = True,
    precision: Precision = Precision.FP32,
) -> FeatureSet:
    """Embed every image of ``loader`` ((images, pids, camids) batches) in eval mode.

    With ``flip`` the embedding of the image and of its horizontal mirror are averaged (§4.1).
    ``precision``: fp32 (the paper's), or bf16 / fp16 autocast on the model's device. Returns
    float32 features on the CPU, in loader order.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    feats, pids, camids = [], [], []
    autocast = torch.autocast(device.type, dtype=_DTYPES[precision], enabled=precision is not Precision.FP32)
    for images, batch_pids, batch_camids in loader:
        images = images.to(device, non_blocking=True)
        with autocast:
            embedding = model(images)
            if flip:
                embedding = (embedding + model(torch.flip(images, dims=[3]))) / 2
        feats.append(embedding.float().cpu())
        pids.append(torch.as_tensor(batch_pids))
        camids.append(torch.as_tensor(batch_camids))
    model.train(was_training)
    if not feats:  # a rank whose share of a small split is empty (distributed evaluation)
        empty, dim = torch.empty(0, dtype=torch.int64), model.embedding_dim
        assert isinstance(dim, int)  # an MGN, or any module that says its embedding width
        return FeatureSet(
            torch.empty((0, dim), dtype=torch.float32), empty.numpy(), empty.numpy()
        )
    return FeatureSet(torch.cat(feats), torch.cat(pids).numpy(), torch.cat(camids).numpy())


def pool_multiple_query(
    query: FeatureSet,
    query_records: Sequence[ImageRecord],
    extra: FeatureSet,
    extra_records: Sequence[ImageRecord],
    pooling: QueryPooling = QueryPooling.MEAN,
) -> FeatureSet:
    """Market-1501 multiple query (§4.2): each query becomes the mean (or max) of the features of
    the images of its identity and camera in ``gt_bbox``, together with the query itself (counted
    once when ``gt_bbox`` already holds it)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, record in enumerate(extra_records):
        groups[(record.pid, record.camid)].append(index)
    pooled = []
    for index, record in enumerate(query_records):
        members = groups.get((record.pid, record.camid), [])
        names = {Path(extra_records[m].path).name for m in members}
        stack = [extra.features[members]] if members else []
        if Path(record.path).name not in names:
            stack.append(query.features[index : index + 1])
        group = torch.cat(stack)
        pooled.append(group.mean(0) if pooling is QueryPooling.MEAN else group.amax(0))
    return FeatureSet(torch.stack(pooled), query.pids, query.camids)


def evaluate_features(
    query: FeatureSet,
    gallery: FeatureSet,
    metric: Metric = Metric.EUCLIDEAN,
    max_rank: int = 50,
    ap: APMode = "step",
    block: int = 512,
) -> RankResult:
    """CMC / mAP / mINP from features, a block of queries at a time: the (Q, G) matrix is never whole.

    Memory beyond the features: ``block`` x G distances (32 MiB for Market-1501 at the default).
    """
    q_features, g_features = as_features(query.features), as_features(gallery.features)
    for split, features in (("query", q_features), ("gallery", g_features)):
        if not torch.isfinite(features).all():
            raise ValueError(
                f"the {split} features hold NaN or infinity: the network diverged or the file is damaged"
            )
    if q_features.shape[1] != g_features.shape[1]:
        raise ValueError(
            f"query features are {q_features.shape[1]}-d, gallery features {g_features.shape[1]}-d"
        )
    gallery_sq = squared_norms(g_features)
    accumulator = RankAccumulator(gallery.pids, gallery.camids)
    for rows in query_blocks(len(q_features), block):
        dist = distance_block(q_features[rows], g_features, metric, gallery_sq)
        accumulator.add(dist.numpy(), query.pids[rows], query.camids[rows])
    return accumulator.result(max_rank, ap)
