"""CMC, mAP and mINP with the Market-1501 protocol, exact and without sorting the gallery.

For each query, gallery entries with the same identity *and* the same camera, and entries with
identity -1, are junk: removed before ranking. Distractors (identity 0) stay, as wrong answers.
Queries with no valid match are skipped (and counted). Equal distances are ordered by gallery
index, as MATLAB's stable ``sort`` (the reference Market-1501 code) does.

Every metric depends only on the rank r_j of each correct match j (1-based, among valid entries):

* ``ap="step"``: AP = mean_j j / r_j (torchreid, fast-reid, scikit-learn >= 0.19).
* ``ap="trapezoid"``: the original MATLAB ``compute_AP.m``, which averages the precision just
  before and at each hit: AP = mean_j ((j-1)/(r_j-1) [1 if r_j = 1] + j/r_j) / 2.
* mINP = mean over queries of n_good / r_last (Ye et al., 2021); CMC(k) = P(r_1 <= k).

So instead of sorting each row (what every public evaluator does first), each row is compared
once with its hardest positive's distance; only entries at or below it can precede a match, and
they are counted against the sorted match distances with ``searchsorted``. Rows where a
non-matching entry ties exactly with a match are ranked with a stable sort instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mgn.evaluation import keys

APMode = Literal["step", "trapezoid"]


@dataclass(frozen=True)
class RankResult:
    """Evaluation result. ``cmc[k-1]`` is the rank-k matching rate; rates are fractions in [0, 1]."""

    cmc: np.ndarray  # (max_rank,) float64
    mAP: float
    mINP: float
    num_queries: int  # evaluated
    num_skipped: int  # no valid match in the gallery
    # Per evaluated query (Qv,), in query order: AP, INP (fractions) and the first match's rank.
    ap: np.ndarray | None = None
    inp: np.ndarray | None = None
    first_match: np.ndarray | None = None

    def per_query(self) -> dict[str, np.ndarray]:
        """Each summary figure per evaluated query, in percent: their means are ``summary()``."""
        if self.first_match is None or self.ap is None or self.inp is None:
            raise ValueError("this RankResult was made without its per-query figures (ap, inp, first_match)")
        ranks: dict[str, np.ndarray] = {key: 100.0 * (self.first_match <= rank) for key, rank in keys.CMC_RANKS.items()}
        return {**ranks, keys.MAP: 100.0 * self.ap, keys.MINP: 100.0 * self.inp}

    def summary(self) -> dict[str, float]:
        """The figures the paper's tables report, in percent."""
        ranks = {key: 100 * float(self.cmc[rank - 1]) for key, rank in keys.CMC_RANKS.items()}
        return {**ranks, keys.MAP: 100 * self.mAP, keys.MINP: 100 * self.mINP}


@dataclass
class _Gallery:
    """Gallery labels, with the gallery grouped by identity for finding each query's matches."""

    pids: np.ndarray  # (G,) int64
    camids: np.ndarray  # (G,) int64
    order: np.ndarray  # (G,) gallery indices sorted by pid, stable: ascending index within a pid
    sorted_pids: np.ndarray  # (G,)
    junk: np.ndarray  # gallery indices of identity -1

    @classmethod
    def build(cls, pids: np.ndarray | Tensor, camids: np.ndarray | Tensor) -> _Gallery:
        pids, camids = _as_int64(pids), _as_int64(camids)
        if pids.shape != camids.shape or pids.ndim != 1:
            raise ValueError(f"g_pids {pids.shape} and g_camids {camids.shape} must be 1-D of equal length")
        order = np.argsort(pids, kind="stable")
        return cls(pids, camids, order, pids[order], np.flatnonzero(pids == -1))


def _as_int64(values: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.cpu().numpy()
    values = np.asarray(values)
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise ValueError("identity and camera labels must be integers; found NaN, infinity or fractions")
    return values.astype(np.int64).ravel()


def _as_numpy(dist: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(dist, Tensor):
        dist = dist.detach().cpu().numpy()
    dist = np.asarray(dist)
    if dist.ndim != 2 or dist.dtype.kind != "f":
        raise ValueError(
            f"the distance matrix must be a 2-D float array, got shape {dist.shape} and {dist.dtype}"
        )
    return dist


@dataclass
class _Ranks:
    """Per-query ranks of the correct matches: ``ranks[i, :n_good[i]]``, ascending, 1-based."""

    ranks: np.ndarray  # (Q, M) int64, zero-padded
    n_good: np.ndarray  # (Q,) int64


# Rows per scan of the dense matrix: small enough for the block and its mask to stay in cache.
_SCAN_ROWS = 64


def _match_ranks(dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: _Gallery) -> _Ranks:
    """Ranks of every correct match for a block of queries. dist: (Qc, G)."""
    num_q, num_g = dist.shape
    # The query's identity group in the gallery, in ascending gallery index: its correct matches
    # (other cameras) and its same-camera junk.
    lo = np.searchsorted(gallery.sorted_pids, q_pids, side="left")
    size = np.searchsorted(gallery.sorted_pids, q_pids, side="right") - lo
    width = int(size.max()) if num_q else 0
    if width == 0:
        return _Ranks(np.zeros((num_q, 0), np.int64), np.zeros(num_q, np.int64))
    offsets = np.arange(width)
    in_group = offsets[None, :] < size[:, None]
    group = gallery.order[np.minimum(lo[:, None] + offsets[None, :], num_g - 1)]  # (Qc, M)
    good = in_group & (gallery.camids[group] != q_camids[:, None]) & (q_pids[:, None] != -1)
    group_dist = np.take_along_axis(dist, group, axis=1)
    if np.isnan(group_dist[good]).any():
        raise ValueError("the distance matrix holds NaN at a correct match: check the features")
    if np.isnan(dist).any():  # NaN ranks before nothing: a NaN non-match would pass silently as "far"
        raise ValueError("the distance matrix holds NaN: check the features")
    # A stable sort keeps ascending gallery index among equal distances (MATLAB's order).
    thresholds = np.sort(np.where(good, group_dist, np.inf), axis=1, kind="stable")  # (Qc, M), +inf padded
    n_good = good.sum(1)
    hardest = np.where(n_good > 0, thresholds[np.arange(num_q), np.maximum(n_good - 1, 0)], -np.inf)

    # 1. Every entry at or below the hardest positive, counted by how many matches lie at or before
    #    it (its bucket); an entry in bucket b precedes matches b+1, b+2, ...
    counts, ties = _bucket_counts(dist, thresholds, hardest)
    # 2. Take out what is not a valid non-match: the identity group (matches and same-camera junk) ...
    group_counts, group_ties = _bucket_counts_small(
        np.where(in_group, group_dist, np.inf), thresholds, hardest
    )
    counts -= group_counts
    ties -= group_ties
    # ... and junk identities (-1), wherever they are in the gallery.
    if len(gallery.junk):
        junk_counts, junk_ties = _bucket_counts(np.take(dist, gallery.junk, axis=1), thresholds, hardest)
        counts -= junk_counts
        ties -= junk_ties
    before = np.cumsum(counts, axis=1)[:, :width]  # valid non-matches strictly before match j (0-based)
    ranks = np.where(
        offsets[None, :] < n_good[:, None], 1 + before + offsets[None, :], 0
    )  # + j earlier matches
    for i in np.flatnonzero(ties > 0):  # a non-match ties exactly with a match: rank by a stable sort
        exact = _row_ranks_by_sort(dist[i], hardest[i], q_pids[i], q_camids[i], gallery)
        ranks[i, : len(exact)] = exact
    return _Ranks(ranks, n_good)


def _orderable_keys(values: np.ndarray) -> np.ndarray:
    """float32 -> int64 in [0, 2**32), in the same order (-0.0 and +0.0 map to the same key)."""
    bits = values.view(np.int32)
    if bits.size and bits.min() >= 0:  # only non-negative values (the usual case): bits are ordered
        return bits.astype(np.int64)
    bits = (values + np.float32(0.0)).view(np.int32)  # + 0.0 turns -0.0 into +0.0
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits).astype(np.int64) + 2**31


def _bucket_counts(
    dist: np.ndarray, thresholds: np.ndarray, hardest: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scan a dense (Qc, N) block of distances in cache-sized row blocks; see ``_ThresholdSearch``."""
    num_q, width = thresholds.shape
    search = _ThresholdSearch(thresholds)
    counts = np.zeros(num_q * (width + 1), np.int64)
    ties = np.zeros(num_q, np.int64)
    below = np.empty((min(_SCAN_ROWS, num_q), dist.shape[1]), dtype=bool)  # reused: no allocation per block
    for start in range(0, num_q, _SCAN_ROWS):
        block = dist[start : start + _SCAN_ROWS]
        mask = below[: block.shape[0]]
        np.less_equal(block, hardest[start : start + _SCAN_ROWS, None], out=mask)
        flat = np.flatnonzero(mask)
        per_row = np.diff(np.searchsorted(flat, np.arange(block.shape[0] + 1) * block.shape[1]))
        rows = np.repeat(np.arange(start, start + block.shape[0]), per_row)
        position, tied = search(np.take(block, flat), rows)
        counts += np.bincount(position, minlength=counts.size)
        if tied.any():
            ties += np.bincount(rows[tied], minlength=num_q)
    return counts.reshape(num_q, width + 1), ties


def _bucket_counts_small(
    values: np.ndarray, thresholds: np.ndarray, hardest: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The same counts for a few entries per row: values (Qc, M), +inf where absent."""
    num_q, width = thresholds.shape
    below = values <= hardest[:, None]
    rows, _ = np.nonzero(below)
    position, tied = _ThresholdSearch(thresholds)(values[below], rows)
    counts = np.bincount(position, minlength=num_q * (width + 1)).reshape(num_q, width + 1)
    return counts, np.bincount(rows[tied], minlength=num_q)


class _ThresholdSearch:
    """Finds, for entries (value, row), the cell row * (M+1) + bucket, where bucket is how many of
    the row's sorted thresholds are <= value; and whether the value equals one of them.

    Each row gets one +inf column more, so the cell is the entry's position in the flattened
    thresholds. For float32 one exact search covers all rows at once: keys order by (row, value).
    """

    def __init__(self, thresholds: np.ndarray) -> None:
        num_rows, width = thresholds.shape
        self.width = width
        self.padded = np.concatenate([thresholds, np.full((num_rows, 1), np.inf, thresholds.dtype)], axis=1)
        self.keys = None
        if thresholds.dtype == np.float32:
            self.keys = (
                (np.arange(num_rows, dtype=np.int64)[:, None] << 32) | _orderable_keys(self.padded)
            ).ravel()

    def __call__(self, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.keys is not None:
            keys = rows.astype(np.int64, copy=False) << 32
            keys |= _orderable_keys(values)
            position = torch.searchsorted(
                torch.from_numpy(self.keys), torch.from_numpy(keys), right=True
            ).numpy()
            tied = (
                np.take(self.keys, position - 1, mode="clip") == keys
            )  # position 0 clips to key 0: not equal
            bucket = position - rows * (self.width + 1)
        else:
            row_thresholds = torch.from_numpy(np.ascontiguousarray(self.padded[rows]))  # (Nc, M+1)
            bucket = (
                torch.searchsorted(row_thresholds, torch.from_numpy(values)[:, None], right=True)
                .squeeze(1)
                .numpy()
            )
            tied = self.padded[rows, np.maximum(bucket - 1, 0)] == values
        # An entry at +inf, when the hardest match is at +inf, passes the +inf pad as well: it still
        # only follows every match (and ties with one, which sends its row to the exact path).
        return rows * (self.width + 1) + np.minimum(bucket, self.width), tied


def _row_ranks_by_sort(
    row: np.ndarray, hardest: float, q_pid: int, q_camid: int, gallery: _Gallery
) -> np.ndarray:
    """Exact ranks for one row by a stable sort of the entries at or below its hardest positive."""
    near = np.flatnonzero(row <= hardest)  # ascending gallery index
    near = near[np.argsort(row[near], kind="stable")]  # by distance, then gallery index
    pids, camids = gallery.pids[near], gallery.camids[near]
    valid = (pids != -1) & ~((pids == q_pid) & (camids == q_camid))
    return np.flatnonzero(pids[valid] == q_pid) + 1


def _scores(ranks: _Ranks, ap: APMode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluated query: AP, INP and the first match's rank (float64)."""
    keep = ranks.n_good > 0
    r = ranks.ranks[keep].astype(np.float64)  # (Qv, M)
    n = ranks.n_good[keep].astype(np.float64)
    j = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
    valid = j <= n[:, None]
    safe_r = np.where(valid, r, 1.0)
    precision = j / safe_r
    if ap == "step":
        per_hit = precision
    elif ap == "trapezoid":
        before = np.where(safe_r > 1, (j - 1) / np.maximum(safe_r - 1, 1), 1.0)
        per_hit = (before + precision) / 2
    else:
        raise ValueError(f"ap={ap!r}: use 'step' or 'trapezoid'")
    ap_values = np.where(valid, per_hit, 0.0).sum(1) / n
    last = r[np.arange(len(n)), n.astype(np.int64) - 1]
    return ap_values, n / last, r[:, 0]


class RankAccumulator:
    """Accumulates match ranks block by block (so features can be evaluated in query chunks)."""

    def __init__(self, g_pids: np.ndarray | Tensor, g_camids: np.ndarray | Tensor) -> None:
        self._gallery = _Gallery.build(g_pids, g_camids)
        self._blocks: list[_Ranks] = []

    def add(
        self, dist: np.ndarray | Tensor, q_pids: np.ndarray | Tensor, q_camids: np.ndarray | Tensor
    ) -> None:
        """dist: (Qc, G) distances of a block of queries to the whole gallery (smaller = closer)."""
        dist = _as_numpy(dist)
        q_pids, q_camids = _as_int64(q_pids), _as_int64(q_camids)
        if dist.shape[1] != len(self._gallery.pids):
            raise ValueError(
                f"distance matrix has {dist.shape[1]} columns, gallery has {len(self._gallery.pids)} entries"
            )
        if len(q_pids) != dist.shape[0] or len(q_camids) != dist.shape[0]:
            raise ValueError(
                f"distance matrix has {dist.shape[0]} rows, but {len(q_pids)} query pids / {len(q_camids)} camids"
            )
        # Blocks of queries run on a thread pool: NumPy releases the GIL in the scans that dominate.
        blocks = list(_row_blocks(dist.shape[0], max(256, -(-dist.shape[0] // (4 * _threads())))))
        with ThreadPoolExecutor(max_workers=_threads()) as pool:
            parts = list(
                pool.map(
                    lambda rows: _match_ranks(dist[rows], q_pids[rows], q_camids[rows], self._gallery), blocks
                )
            )
        self._blocks.extend(parts)

    def result(self, max_rank: int = 50, ap: APMode = "step") -> RankResult:
        width = max((b.ranks.shape[1] for b in self._blocks), default=0)
        ranks = _Ranks(
            np.concatenate([np.pad(b.ranks, ((0, 0), (0, width - b.ranks.shape[1]))) for b in self._blocks]),
            np.concatenate([b.n_good for b in self._blocks]),
        )
        num_valid = int((ranks.n_good > 0).sum())
        skipped = len(ranks.n_good) - num_valid
        if num_valid == 0:
            raise ValueError("no query has a valid match in the gallery (same identity, another camera)")
        ap_values, inp, first = _scores(ranks, ap)
        hits = np.bincount(np.minimum(first.astype(np.int64), max_rank + 1) - 1, minlength=max_rank + 1)[
            :max_rank
        ]
        cmc = np.cumsum(hits, dtype=np.float64) / num_valid
        return RankResult(
            cmc, float(np.mean(ap_values)), float(np.mean(inp)), num_valid, skipped, ap_values, inp, first
        )


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _row_blocks(num_rows: int, block: int) -> Iterator[slice]:
    for start in range(0, num_rows, block):
        yield slice(start, min(start + block, num_rows))


def evaluate_rank(
    distmat: np.ndarray | Tensor,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    ap: APMode = "step",
) -> RankResult:
    """CMC / mAP / mINP of a query x gallery distance matrix (smaller = closer).

    Example::

        result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
        print(result.cmc[0], result.mAP, result.mINP)
    """
    dist = _as_numpy(distmat)
    accumulator = RankAccumulator(g_pids, g_camids)
    accumulator.add(dist, q_pids, q_camids)
    return accumulator.result(max_rank, ap)
