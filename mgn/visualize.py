"""Pictures researchers read faster than tables (PNG, via matplotlib's object API, no global state).

* ``rank_list_figure``: queries and their top-k gallery images, framed green (same identity) or
  red, junk left out exactly as in evaluation (Fig. 4 of the paper).
* ``attention_maps`` / ``attention_figure``: the activation map of every branch overlaid on the
  image (Figs. 2 and 5): the squared activations of a branch's last feature map summed over
  channels, upsampled to the image.
* ``cmc_figure``: CMC curves, rank 1-50, one per row of a table.
* ``bar_figure``: R1 and mAP per row (Table 5), with error bars over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from mgn.data.images import load_image
from mgn.data.records import ImageRecord
from mgn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mgn.model import MGN

CORRECT, WRONG = "#1a9850", "#d73027"


def save(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


RANKING_RULE = (
    "ranked by distance; for a query named <pid>_c<camera>, gallery images of its identity from its own camera "
    "and distractors (-1) are left out, as evaluation does (Market-1501 protocol)"
)


def ranked_gallery(query: ImageRecord, gallery: Sequence[ImageRecord], distances: np.ndarray) -> list[int]:
    """Gallery indices by distance (ties by index); for a labelled query, junk removed as in
    evaluation (``RANKING_RULE``)."""
    order = np.argsort(distances, kind="stable")
    if query.pid < 0:  # an unlabelled query (e.g. `mgn search`): nothing is junk
        return list(order)
    return [
        i
        for i in order
        if gallery[i].pid != -1 and not (gallery[i].pid == query.pid and gallery[i].camid == query.camid)
    ]


def _show(axis: Axes, image: np.ndarray | Image.Image, color: str | None = None, title: str = "") -> None:
    axis.imshow(image)
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    if color:
        height, width = np.asarray(image).shape[:2]
        axis.add_patch(Rectangle((0, 0), width - 1, height - 1, fill=False, edgecolor=color, linewidth=4))
    axis.set_title(title, fontsize=7)


def rank_list_figure(
    queries: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    distances: np.ndarray,
    top_k: int = 10,
    title: str = "",
) -> Figure:
    """One row per query: the query, then its top-k gallery images. distances: (Q, G)."""
    figure = Figure(figsize=(1.0 * (top_k + 1.3), 2.2 * len(queries)))
    axes = figure.subplots(len(queries), top_k + 1, squeeze=False)
    for row, query in enumerate(queries):
        label = f"query\nid {query.pid} cam {query.camid + 1}" if query.pid >= 0 else "query"
        _show(axes[row, 0], load_image(query.path), None, label)
        ranked = ranked_gallery(query, gallery, distances[row])[:top_k]
        for col in range(top_k):
            axis = axes[row, col + 1]
            if col >= len(ranked):
                axis.axis("off")
                continue
            match = gallery[ranked[col]]
            color = None if query.pid < 0 else CORRECT if match.pid == query.pid else WRONG
            _show(axis, load_image(match.path), color, f"{col + 1}: {distances[row, ranked[col]]:.2f}")
    if title:
        figure.suptitle(title, fontsize=10)
    if any(q.pid >= 0 for q in queries):
        figure.text(
            0.01, 0.005, f"green frame: same identity, red: another; {RANKING_RULE}", fontsize=6, wrap=True
        )
    return figure


@torch.no_grad()
def attention_maps(
    model: MGN, images: torch.Tensor, size: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """Activation map of each branch, (N, H, W) in [0, 1], for normalised images (N, 3, H, W)."""
    was_training = model.training
    model.eval()
    height, width = images.shape[-2:]
    size = size or (height, width)
    feature_maps = model.feature_maps(images)
    maps = {}
    for name, feature_map in feature_maps.items():
        activation = feature_map.pow(2).sum(dim=1, keepdim=True)  # (N, 1, h, w)
        activation = F.interpolate(activation, size=size, mode="bilinear", align_corners=False)[:, 0]
        low = activation.flatten(1).amin(1)[:, None, None]
        high = activation.flatten(1).amax(1)[:, None, None]
        maps[name if len(feature_maps) > 1 else "Network"] = (
            (activation - low) / (high - low).clamp(min=1e-12)
        ).numpy()
    model.train(was_training)
    return maps


def denormalize(images: torch.Tensor) -> np.ndarray:
    """Normalised (N, 3, H, W) -> uint8 (N, H, W, 3) for display."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((images * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()


def attention_figure(images: np.ndarray, maps: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """Rows: images; columns: the image, then each named map overlaid (brighter = more attention)."""
    names = list(maps)
    figure = Figure(figsize=(1.3 * (len(names) + 1), 2.6 * len(images)))
    axes = figure.subplots(len(images), len(names) + 1, squeeze=False)
    for row, image in enumerate(images):
        _show(axes[row, 0], image, None, "image" if row == 0 else "")
        for col, name in enumerate(names):
            axis = axes[row, col + 1]
            _show(axis, image, None, name if row == 0 else "")
            axis.imshow(maps[name][row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def cmc_figure(curves: Mapping[str, np.ndarray], title: str = "CMC", max_rank: int = 50) -> Figure:
    """One curve per name; curves are matching rates in [0, 1] at ranks 1..len."""
    figure = Figure(figsize=(6.5, 4.5))
    axis = figure.subplots()
    for index, (name, curve) in enumerate(curves.items()):
        ranks = np.arange(1, min(max_rank, len(curve)) + 1)
        # Ten colours, then the same colours dashed: no two curves look alike.
        color, linestyle = f"C{index % 10}", ("-", "--", ":")[index // 10 % 3]
        axis.plot(ranks, 100 * np.asarray(curve)[: len(ranks)], label=name, linewidth=1.4, color=color,
                  linestyle=linestyle)  # fmt: skip
    axis.set_xlabel("rank")
    axis.set_ylabel("matching rate (%)")
    axis.set_xlim(1, max_rank)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2, loc="lower right")
    axis.set_title(title, fontsize=10)
    return figure


def bar_figure(
    names: Sequence[str],
    values: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float] | Sequence[Sequence[float]]] | None = None,
    title: str = "",
) -> Figure:
    """Grouped bars: one group per name, one bar per metric (e.g. R1 and mAP), optional error bars."""
    figure = Figure(figsize=(max(6.0, 0.55 * len(names) * len(values)), 4.5))
    axis = figure.subplots()
    width = 0.8 / len(values)
    positions = np.arange(len(names))
    for k, (metric, numbers) in enumerate(values.items()):
        error = None if errors is None else np.nan_to_num(np.asarray(errors[metric], dtype=float))
        if error is not None and not error.any():  # one seed: no spread to show
            error = None
        axis.bar(
            positions + k * width,
            np.nan_to_num(np.asarray(numbers, dtype=float)),
            width,
            yerr=error,
            capsize=2,
            label=metric,
        )
    axis.set_xticks(positions + width * (len(values) - 1) / 2)
    axis.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
    axis.set_ylabel("%")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    return figure
