"""Bootstrap intervals against exact answers, and the paired comparison of two rows."""

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from mgn.evaluation import evaluate_rank
from mgn.evaluation.bootstrap import difference, interval


def test_a_rank_1_interval_is_the_binomial_one():
    """R1 per query is 0 or 100: resampling 50 queries makes the mean Binomial(50, 0.6) / 50."""
    hits = np.r_[np.full(30, 100.0), np.zeros(20)]
    found = interval([hits], draws=40_000)
    low, high = binom.ppf([0.025, 0.975], 50, 0.6) / 50 * 100
    assert found.mean == pytest.approx(60.0)
    assert abs(found.low - low) <= 2.0 and abs(found.high - high) <= 2.0  # one query's worth


def test_a_small_case_matches_every_resample_enumerated():
    values = np.array([10.0, 40.0, 45.0, 90.0])
    means = np.sort([np.mean(values[list(pick)]) for pick in itertools.product(range(4), repeat=4)])
    found = interval([values], draws=60_000)
    assert found.low == pytest.approx(np.quantile(means, 0.025), abs=2.5)
    assert found.high == pytest.approx(np.quantile(means, 0.975), abs=2.5)


def test_seeds_widen_the_interval_and_are_averaged():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, 200)
    one = interval([base])
    seeds = interval([base - 10, base, base + 10])  # the same queries, seeds far apart
    assert seeds.mean == pytest.approx(one.mean)
    assert seeds.high - seeds.low > one.high - one.low


def test_a_row_identical_to_the_reference_is_not_significant_and_a_shift_is():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 100, 300)
    same = difference([reference.copy()], [reference])
    assert same.mean == 0 and not same.significant and same.p_value == 1.0
    better = difference([np.minimum(reference + 5, 100)], [reference])
    assert better.significant and better.low > 0 and better.p_value < 0.05
    noise = difference([reference + rng.normal(0, 1, 300)], [reference], seed=3)
    assert not noise.significant


def test_other_queries_are_refused():
    with pytest.raises(ValueError, match="not the same queries"):
        difference([np.zeros(3)], [np.zeros(4)])


def test_per_query_values_average_to_the_summary():
    rng = np.random.default_rng(2)
    dist = rng.random((30, 60))
    q_pids, g_pids = rng.integers(0, 8, 30), rng.integers(0, 8, 60)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 60)
    result = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    per_query = result.per_query()
    for key, value in result.summary().items():
        assert np.mean(per_query[key]) == pytest.approx(value), key
        assert len(per_query[key]) == result.num_queries
