"""Confidence intervals for the paper's figures, and whether two rows really differ.

A figure (R1, mAP, ...) is a mean over queries of a per-query value (``RankResult.per_query``),
averaged over seeds when a row was trained with several. Its 95% interval comes from the bootstrap:
queries are resampled with replacement (one draw shared by every seed, since each seed ranks the
same queries), and seeds too when there are several. Two rows evaluated on the same queries are
compared by a paired bootstrap of their difference: the same resampled queries for both, so that
what the queries have in common (an easy or a hard query) cancels out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DRAWS = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """Row minus reference: the mean difference, its interval and a two-sided bootstrap p-value."""

    mean: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """The 95% interval of the difference excludes 0."""
        return self.low > 0 or self.high < 0


def _stack(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    values = np.asarray([np.asarray(v, dtype=np.float64) for v in per_seed])
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError("give one (Q,) array of per-query values per seed, Q >= 1, the same Q for each")
    return values


def _replicates(values: np.ndarray, queries: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(draws,) means over resampled seeds of means over resampled queries."""
    per_seed = values[:, queries].mean(axis=2)  # (S, draws): each seed's mean over each query draw
    means: np.ndarray = np.take_along_axis(per_seed, seeds, axis=0).mean(axis=0)
    return means


def _draws(
    rng: np.random.Generator, num_queries: int, num_seeds: int, draws: int
) -> tuple[np.ndarray, np.ndarray]:
    queries = rng.integers(0, num_queries, (draws, num_queries))
    seeds = (
        rng.integers(0, num_seeds, (num_seeds, draws)) if num_seeds > 1 else np.zeros((1, draws), np.int64)
    )
    return queries, seeds


def interval(per_seed: Sequence[np.ndarray], draws: int = DRAWS, seed: int = 0) -> Interval:
    """The mean over seeds of the mean over queries, with its 95% percentile-bootstrap interval."""
    values = _stack(per_seed)
    queries, seeds = _draws(np.random.default_rng(seed), values.shape[1], values.shape[0], draws)
    low, high = np.quantile(_replicates(values, queries, seeds), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(values.mean()), float(low), float(high))


def difference(
    row: Sequence[np.ndarray], reference: Sequence[np.ndarray], draws: int = DRAWS, seed: int = 0
) -> Difference:
    """``row`` minus ``reference`` over the same queries (paired); seeds resampled within each."""
    a, b = _stack(row), _stack(reference)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"the rows were evaluated on {a.shape[1]} and {b.shape[1]} queries: not the same queries"
        )
    rng = np.random.default_rng(seed)
    queries, seeds_a = _draws(rng, a.shape[1], a.shape[0], draws)
    _, seeds_b = _draws(rng, 1, b.shape[0], draws)
    diffs = _replicates(a, queries, seeds_a) - _replicates(b, queries, seeds_b)
    low, high = np.quantile(diffs, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    # Two-sided: how often the resampled difference falls on the other side of zero, doubled.
    p_value = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return Difference(float(a.mean() - b.mean()), float(low), float(high), p_value)
