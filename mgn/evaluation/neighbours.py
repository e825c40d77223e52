"""Nearest neighbours of every image among all images, from one pass over half the distance matrix.

Re-ranking (``mgn.evaluation.reranking``) needs, for all N = Q + G images, the k nearest
neighbours, each row's largest distance and the query x gallery block. The distance matrix is
symmetric, so each pair is computed once: the upper triangle in strips of ``block`` rows. A strip
(rows s:e, columns s:N) feeds its own rows (nearest of columns s:N, the row maxima) and, read down
its columns, the rows e:N (nearest among columns s:e, their maxima). Rows are complete once every
strip above them has been read, which is what lets the gallery's own strips (gallery x gallery,
three quarters of Market-1501's pairs) be computed once and shared by single and multiple query.

Distances are squared Euclidean, un-normalised; ties are ordered by index, as a stable sort would.
The matrix products run on the features' device (a GPU when they are there; ``distance.products``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mgn.evaluation.distance import products, query_blocks, squared_norms

# Extra candidates taken at each cut, so that a tie straddling the k-th neighbour is still ordered
# by index (ties of up to this many images).
TIE_MARGIN = 8


def _ordered(values: Tensor, index: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k smallest of each row, ordered by (value, index). (R, C) -> (R, k), (R, k)."""
    by_index = torch.argsort(index, dim=1)
    values, index = values.gather(1, by_index), index.gather(1, by_index)
    by_value = torch.sort(values, dim=1, stable=True).indices[:, :k]
    return values.gather(1, by_value), index.gather(1, by_value)


@dataclass(frozen=True)
class Neighbours:
    """Per image (rows of the stacked features, query first), on the features' device.

    near_index: (N, k) the k nearest, nearest first (ties by index); the image itself included.
    known_d2, known_index: (N, C) further exact distances (-1 index: empty), a cache for lookups.
    row_max: (N,) the largest squared distance of each row.
    """

    near_index: Tensor
    known_d2: Tensor
    known_index: Tensor
    row_max: Tensor


@dataclass
class _Running:
    """What the strips read so far has told each row (mutated strip by strip, then frozen)."""

    along_d2: Tensor  # (N, C) nearest among the columns of the row's own strip (s:N)
    along_index: Tensor
    down_d2: Tensor  # (N, k + margin) nearest among columns above the row, read down strips
    down_index: Tensor
    row_max: Tensor

    @classmethod
    def empty(cls, n: int, cache: int, near: int, device: torch.device) -> _Running:
        def table(width: int) -> tuple[Tensor, Tensor]:
            return (
                torch.full((n, width), torch.inf, device=device),
                torch.full((n, width), -1, dtype=torch.int64, device=device),
            )

        return cls(*table(cache), *table(near + TIE_MARGIN), torch.zeros(n, device=device))

    def read_strip(self, d2: Tensor, start: int, stop: int) -> None:
        """d2: (stop - start, N - start), the strip of rows start:stop and columns start:N."""
        n = self.row_max.shape[0]
        self.row_max[start:stop] = torch.maximum(self.row_max[start:stop], d2.amax(dim=1))
        self.row_max[start:] = torch.maximum(self.row_max[start:], d2.amax(dim=0))
        cache = min(self.along_d2.shape[1], d2.shape[1])
        values, columns = torch.topk(d2, cache, dim=1, largest=False)
        self.along_d2[start:stop, :cache], self.along_index[start:stop, :cache] = values, columns + start
        if stop == n:
            return
        below = d2[:, stop - start :]  # read down: candidates of rows stop:N among columns start:stop
        width = min(self.down_d2.shape[1], below.shape[0])
        values, rows = torch.topk(below, width, dim=0, largest=False)
        merged_d2 = torch.cat([self.down_d2[stop:], values.T], dim=1)
        merged_index = torch.cat([self.down_index[stop:], rows.T + start], dim=1)
        keep = torch.topk(merged_d2, self.down_d2.shape[1], dim=1, largest=False).indices
        self.down_d2[stop:] = merged_d2.gather(1, keep)
        self.down_index[stop:] = merged_index.gather(1, keep)

    def freeze(self, near: int) -> Neighbours:
        both_d2 = torch.cat([self.along_d2, self.down_d2], dim=1)
        both_index = torch.cat([self.along_index, self.down_index], dim=1)
        _, near_index = _ordered(both_d2, both_index, min(near, both_d2.shape[0]))  # n < k1 + 1: all
        return Neighbours(near_index, both_d2, both_index, self.row_max)


def _strip(features: Tensor, sq: Tensor, start: int, stop: int) -> Tensor:
    """Squared distances of rows start:stop to rows start:N, (stop - start, N - start)."""
    d2 = products(features[start:stop], features[start:]).to(features.device)
    return d2.mul_(-2.0).add_(sq[start:stop, None]).add_(sq[None, start:]).clamp_(min=0)


@dataclass(frozen=True)
class GalleryPass:
    """The gallery x gallery strips, read once and shared by every query set (single, multiple)."""

    gallery: Tensor
    running: _Running  # for gallery rows only, gallery columns
    near: int


def gallery_pass(gallery: Tensor, near: int, cache: int, block: int) -> GalleryPass:
    sq = squared_norms(gallery)
    running = _Running.empty(gallery.shape[0], cache, near, gallery.device)
    for rows in query_blocks(gallery.shape[0], block):
        running.read_strip(_strip(gallery, sq, rows.start, rows.stop), rows.start, rows.stop)
    return GalleryPass(gallery, running, near)


def neighbours(
    features: Tensor, num_query: int, shared: GalleryPass, block: int
) -> tuple[Neighbours, Tensor]:
    """Neighbours of the N = Q + G stacked images (query first, then ``shared.gallery``), and the
    (Q, G) squared query x gallery block.

    Only the strips of the query rows are computed here (Q x Q above the diagonal and Q x G); the
    gallery's come from ``shared``.
    """
    near = shared.near
    n, cache = features.shape[0], shared.running.along_d2.shape[1]
    running = _Running.empty(n, cache, near, features.device)
    gallery_rows = shared.running
    running.along_d2[num_query:] = gallery_rows.along_d2
    running.along_index[num_query:] = torch.where(gallery_rows.along_index >= 0, gallery_rows.along_index + num_query, -1)  # fmt: skip
    running.down_d2[num_query:] = gallery_rows.down_d2
    running.down_index[num_query:] = torch.where(gallery_rows.down_index >= 0, gallery_rows.down_index + num_query, -1)  # fmt: skip
    running.row_max[num_query:] = gallery_rows.row_max
    sq = squared_norms(features)
    query_gallery = torch.empty((num_query, n - num_query), device=features.device)
    for rows in query_blocks(num_query, block):
        d2 = _strip(features, sq, rows.start, rows.stop)
        running.read_strip(d2, rows.start, rows.stop)
        query_gallery[rows] = d2[:, num_query - rows.start :]
    return running.freeze(near), query_gallery
