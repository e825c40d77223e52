"""re_rank against a literal port of the published algorithm (tests/evaluation/published_reranking.py)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mgn.evaluation import re_rank
from tests.evaluation.published_reranking import published_re_ranking


def _features(seed: int, num_q: int, num_g: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 12, num_q + num_g)
    centres = rng.standard_normal((12, dim))
    features = (centres[ids] + 0.7 * rng.standard_normal((num_q + num_g, dim))).astype(np.float32)
    return features[:num_q], features[num_q:]


@pytest.mark.parametrize(
    ("seed", "num_q", "num_g", "dim", "k1", "k2", "lam", "cache"),
    [
        (0, 20, 80, 16, 20, 6, 0.3, None),
        (1, 30, 150, 8, 20, 6, 0.3, 22),  # a small cache: expansion members outside it are computed
        (2, 15, 60, 32, 7, 3, 0.5, None),  # odd k1: round(3.5) = 4, as numpy's around()
        (3, 40, 200, 4, 20, 1, 0.3, None),  # no query expansion
        (4, 25, 100, 12, 5, 6, 0.0, None),
    ],
)
def test_equals_the_published_algorithm_fed_euclidean_distances(seed, num_q, num_g, dim, k1, k2, lam, cache):
    query, gallery = _features(seed, num_q, num_g, dim)
    published = published_re_ranking(
        cdist(query, gallery).astype(np.float32), cdist(query, query).astype(np.float32),
        cdist(gallery, gallery).astype(np.float32), k1, k2, lam,
    )  # fmt: skip
    ours = re_rank(query, gallery, k1, k2, lam, cache_size=cache, block=32)
    assert ours.shape == (num_q, num_g) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, published, atol=1e-5)


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="16-d, gallery features 8-d"):
        re_rank(np.zeros((2, 16)), np.zeros((3, 8)))


def test_identical_features_give_finite_distances():
    features = np.ones((6, 4), dtype=np.float32)  # a collapsed network: every distance is 0
    assert np.isfinite(re_rank(features[:2], features[2:], k1=3, k2=2)).all()
