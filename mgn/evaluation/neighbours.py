"""Nearest neighbours of every image among all images, from one pass over half the distance matrix.

Re-ranking (``mgn.evaluation.reranking``) needs, for all N = Q + G images, the k nearest
neighbours, each row's largest distance and the query x gallery block. The distance matrix is
symmetric, so each pair is computed once: the upper triangle in strips of ``block`` rows. A strip
(rows s:e, columns s:N) feeds its own rows (nearest of columns s:N, the row maxima) and, read down
its columns, the rows e:N (nearest among columns s:e, their maxima). Rows are complete once every
strip above them has been read, which is what lets the gallery's own strips (gallery x gallery,
three quarters of Market-1501's pairs) be computed once and shared by single and multiple query.

Where the time goes on Market-1501 (``benchmarks/eval_speed.py``): the products, about 1.3x half
of an N x N product's time. What keeps the rest small:
- one product per strip gives squared distances (``Side``): no pass over the strip after it;
- the products run as column chunks in Python threads with one BLAS thread each
  (``distance.product_runner``): OpenBLAS's own workers spin after each product and would halve
  the torch selection that follows;
- selection reads group minima (``mgn.evaluation.selection``): along rows, the k groups of 32 with
  the smallest minima; down columns, only groups of 8 rows whose minimum beats the row's k-th
  nearest so far.

Distances are squared Euclidean, un-normalised; ties are ordered by index, as a stable sort would.
The matrix products run on the features' device (a GPU when they are there; ``distance.products``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from mgn.evaluation.distance import (
    ProductRunner,
    product_into,
    product_runner,
    products,
    query_blocks,
    squared_norms,
)
from mgn.evaluation.selection import down_to_bound, smallest

# Extra candidates taken at each cut, so that a tie straddling the k-th neighbour is still ordered
# by index (ties of up to this many images).
TIE_MARGIN = 8
# Columns per group when selecting along a strip's rows (``mgn.evaluation.selection``): 32 was the
# fastest of 16, 32 and 64 on a Market-1501 strip (2,048 x 19,732).
ALONG_GROUP = 32
# Rows per group when reading down a strip's columns: a hit group costs this many gathered entries.
DOWN_GROUP = 8
# Columns per product task of a strip: small enough that the threads sharing a strip's tasks finish
# together (a 2,048 x 1,024 product takes about 65 ms on one core), large enough for full BLAS speed.
COLUMN_CHUNK = 1024


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
                torch.full((n, width), torch.inf, dtype=torch.float32, device=device),
                torch.full((n, width), -1, dtype=torch.int64, device=device),
            )

        return cls(
            *table(cache), *table(near + TIE_MARGIN), torch.zeros(n, dtype=torch.float32, device=device)
        )

    def read_strip(self, d2: Tensor, start: int, stop: int) -> None:
        """d2: (stop - start, N - start), the strip of rows start:stop and columns start:N, squared
        distances not yet clamped at 0 (what is kept is clamped: the same order, ties by index)."""
        n = self.row_max.shape[0]
        self.row_max[start:stop] = torch.maximum(self.row_max[start:stop], d2.amax(dim=1))
        self.row_max[start:] = torch.maximum(self.row_max[start:], d2.amax(dim=0))
        cache = min(self.along_d2.shape[1], d2.shape[1])
        values, columns = smallest(d2, cache, ALONG_GROUP)
        self.along_d2[start:stop, :cache], self.along_index[start:stop, :cache] = (
            values.clamp_(min=0),
            columns + start,
        )
        if stop == n:
            return
        below = d2[:, stop - start :]  # read down: candidates of rows stop:N among columns start:stop
        width = self.down_d2.shape[1]
        column, row, value = down_to_bound(below, self.down_d2[stop:, -1], width, DOWN_GROUP)
        if column.numel():
            self._merge_down(column + stop, row + start, value.clamp_(min=0))

    def _merge_down(self, target: Tensor, index: Tensor, value: Tensor) -> None:
        """Join candidates (target row, neighbour index, squared distance), ordered by target, to
        the targets' down tables, which keep their ``width`` smallest, nearest first."""
        targets, counts = torch.unique_consecutive(target, return_counts=True)
        segment = torch.repeat_interleave(torch.arange(len(targets), device=target.device), counts)
        position = (
            torch.arange(len(target), device=target.device) - (torch.cumsum(counts, 0) - counts)[segment]
        )
        extra = int(counts.max())
        new_d2 = torch.full((len(targets), extra), torch.inf, dtype=value.dtype, device=value.device)
        new_index = torch.full((len(targets), extra), -1, dtype=torch.int64, device=value.device)
        new_d2[segment, position], new_index[segment, position] = value, index
        merged_d2 = torch.cat([self.down_d2[targets], new_d2], dim=1)
        merged_index = torch.cat([self.down_index[targets], new_index], dim=1)
        keep = torch.topk(merged_d2, self.down_d2.shape[1], dim=1, largest=False).indices  # sorted
        self.down_d2[targets] = merged_d2.gather(1, keep)
        self.down_index[targets] = merged_index.gather(1, keep)

    def freeze(self, near: int) -> Neighbours:
        both_d2 = torch.cat([self.along_d2, self.down_d2], dim=1)
        both_index = torch.cat([self.along_index, self.down_index], dim=1)
        _, near_index = _ordered(both_d2, both_index, min(near, both_d2.shape[0]))  # n < k1 + 1: all
        return Neighbours(near_index, both_d2, both_index, self.row_max)


@dataclass(frozen=True)
class Side:
    """Images whose rows start strips: features (N, D) and ``right`` (N, D + 2) = [-2x, 1, |x|^2].
    With a strip's ``left`` rows [x, |x|^2, 1], one matrix product gives squared distances,
    |x_i|^2 + |x_j|^2 - 2 x_i.x_j, with no pass over the strip after it (-2x is exact)."""

    features: Tensor
    right: Tensor

    @classmethod
    def of(cls, features: Tensor) -> Side:
        n, dim = features.shape
        right = torch.empty(
            (n, dim + 2), dtype=features.dtype, device=features.device
        )  # filled in place: no temporaries
        torch.mul(features, -2.0, out=right[:, :dim])
        right[:, dim], right[:, dim + 1] = 1.0, squared_norms(features)
        return cls(features, right)

    @property
    def squared(self) -> Tensor:
        """(N,) squared norms, the last column of ``right``."""
        return self.right[:, -1]

    def left(self, rows: slice) -> Tensor:
        """(R, D + 2) = [x, |x|^2, 1] of ``rows``."""
        squared = self.squared[rows, None]
        return torch.cat([self.features[rows], squared, torch.ones_like(squared)], dim=1)

    def __len__(self) -> int:
        return self.features.shape[0]


def _strip(buffer: Tensor, side: Side, rows: slice, run: ProductRunner, tail: Side | None) -> Tensor:
    """Squared distances of ``side``'s ``rows`` (start:stop) to its rows start:N, then (given) to
    every row of ``tail``: (stop - start, N - start [+ len(tail)]), a view of ``buffer``, not
    clamped at 0.

    The diagonal block is symmetric: NumPy computes ``x @ x.T`` as one triangle (syrk) and mirrors
    it, 40% less time than the full block. Everything right of it is one product per
    ``COLUMN_CHUNK`` columns, the chunks shared out among ``run``'s threads.
    """
    size, own = rows.stop - rows.start, len(side) - rows.start
    d2 = buffer[:size, : own + (len(tail) if tail is not None else 0)]
    x, squared = side.features[rows], side.squared[rows]
    left = side.left(rows)
    diagonal: list[Tensor] = []
    tasks = [lambda: diagonal.append(products(x, x))]
    pieces = [(side.right[rows.stop :], size)] + ([(tail.right, own)] if tail is not None else [])
    for right, at in pieces:
        for chunk in query_blocks(right.shape[0], COLUMN_CHUNK):
            out = d2[:, at + chunk.start : at + chunk.stop]
            tasks.append(partial(product_into, out, left, right[chunk]))
    run(tasks)
    torch.add(squared[:, None], diagonal[0], alpha=-2.0, out=d2[:, :size])
    d2[:, :size] += squared[None, :]
    return d2


def _strips(side: Side, block: int, tail: Side | None = None) -> Iterator[tuple[slice, Tensor]]:
    """Every strip of ``side``'s rows in order (``_strip``), each written into one reused buffer:
    read it before asking for the next."""
    width = len(side) + (len(tail) if tail is not None else 0)
    buffer = torch.empty(
        (min(block, len(side)), width), dtype=side.features.dtype, device=side.features.device
    )
    with product_runner(side.features.device) as run:
        for rows in query_blocks(len(side), block):
            yield rows, _strip(buffer, side, rows, run, tail)


@dataclass(frozen=True)
class GalleryPass:
    """The gallery x gallery strips, read once and shared by every query set (single, multiple)."""

    side: Side
    running: _Running  # for gallery rows only, gallery columns
    near: int

    @property
    def gallery(self) -> Tensor:
        return self.side.features


def gallery_pass(gallery: Tensor, near: int, cache: int, block: int) -> GalleryPass:
    side = Side.of(gallery)
    running = _Running.empty(len(side), cache, near, gallery.device)
    for rows, d2 in _strips(side, block):
        running.read_strip(d2, rows.start, rows.stop)
    return GalleryPass(side, running, near)


def neighbours(query: Tensor, shared: GalleryPass, block: int) -> tuple[Neighbours, Tensor]:
    """Neighbours of the N = Q + G images, query first, then ``shared.gallery``, and the (Q, G)
    squared query x gallery distances.

    Only the strips of the query rows are computed here (Q x Q above the diagonal and Q x G); the
    gallery's come from ``shared``.
    """
    near, num_query = shared.near, query.shape[0]
    n, cache = num_query + len(shared.side), shared.running.along_d2.shape[1]
    running = _Running.empty(n, cache, near, query.device)
    gallery_rows = shared.running
    running.along_d2[num_query:] = gallery_rows.along_d2
    running.along_index[num_query:] = torch.where(gallery_rows.along_index >= 0, gallery_rows.along_index + num_query, -1)  # fmt: skip
    running.down_d2[num_query:] = gallery_rows.down_d2
    running.down_index[num_query:] = torch.where(gallery_rows.down_index >= 0, gallery_rows.down_index + num_query, -1)  # fmt: skip
    running.row_max[num_query:] = gallery_rows.row_max
    query_gallery = torch.empty((num_query, n - num_query), dtype=query.dtype, device=query.device)
    for rows, d2 in _strips(Side.of(query), block, tail=shared.side):
        running.read_strip(d2, rows.start, rows.stop)
        torch.clamp(d2[:, num_query - rows.start :], min=0, out=query_gallery[rows])
    return running.freeze(near), query_gallery
