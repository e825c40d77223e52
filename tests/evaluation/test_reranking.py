"""re_rank against a literal port of the published algorithm (tests/evaluation/published_reranking.py)."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from mgn.evaluation import distance, re_rank
from mgn.evaluation.reranking import re_rank_with_distances, share_gallery
from tests.evaluation.published_reranking import published_re_ranking

torch_matmul = torch.matmul


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
        (5, 3, 6, 4, 20, 6, 0.3, None),  # fewer images than k1 + 1
        (6, 3, 6, 4, 100_000, 30, 0.3, None),  # k1 and k2 past every image: the whole ranking
    ],
)
def test_equals_the_published_algorithm_fed_euclidean_distances(seed, num_q, num_g, dim, k1, k2, lam, cache):
    query, gallery = _features(seed, num_q, num_g, dim)
    published = published_re_ranking(
        cdist(query, gallery).astype(np.float32), cdist(query, query).astype(np.float32),
        cdist(gallery, gallery).astype(np.float32), k1, k2, lam,
    )  # fmt: skip
    ours = re_rank(query, gallery, k1, k2, lam, cache_size=cache, block=16)  # strips straddle query/gallery
    assert ours.shape == (num_q, num_g) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, published, atol=1e-5)


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="16-d, gallery features 8-d"):
        re_rank(np.zeros((2, 16)), np.zeros((3, 8)))


def test_identical_features_give_finite_distances():
    features = np.ones((6, 4), dtype=np.float32)  # a collapsed network: every distance is 0
    assert np.isfinite(re_rank(features[:2], features[2:], k1=3, k2=2)).all()


def test_ties_and_duplicate_features_are_ordered_by_index_as_a_stable_sort():
    """Integer features: every distance is exact, many are equal, and some images are duplicates
    (distance 0 to another image, a tie with the image itself)."""
    rng = np.random.default_rng(7)
    features = rng.integers(0, 3, (90, 6)).astype(np.float32)
    features[60:75] = features[0:15]  # duplicates of queries in the gallery
    features[80:90] = features[70:80]  # duplicates within the gallery
    query, gallery = features[:20], features[20:]
    assert len(np.unique(cdist(features, features))) < 40  # ties everywhere
    published = published_re_ranking(
        cdist(query, gallery).astype(np.float32), cdist(query, query).astype(np.float32),
        cdist(gallery, gallery).astype(np.float32), 20, 6, 0.3, sort_kind="stable",
    )  # fmt: skip
    np.testing.assert_allclose(re_rank(query, gallery, block=8), published, atol=1e-5)


def test_a_shared_gallery_gives_the_same_result_as_computing_it_again():
    query, gallery = _features(8, 30, 120, 8)
    other_query = query[::-1] + 0.1
    shared = share_gallery(gallery, 20, 6, block=32)
    for q in (query, other_query):
        np.testing.assert_array_equal(
            re_rank(q, gallery, block=32, shared=shared), re_rank(q, gallery, block=32)
        )


def test_the_plain_distances_it_returns_are_the_squared_euclidean_ones():
    query, gallery = _features(9, 12, 40, 8)
    _, squared = re_rank_with_distances(query, gallery, block=8)
    np.testing.assert_allclose(squared, cdist(query, gallery, "sqeuclidean"), rtol=1e-5, atol=1e-4)


def test_hub_queries_and_gallery_sorted_by_identity():
    """Queries nearer to every gallery image than its own neighbours (averaged views, as multiple
    query pools them) and a gallery sorted by identity (each image's neighbours in its own or the
    next strip): a strip brings columns more candidates than the strips above left room for, and
    with strips of 256 rows (32 groups of 8, more than k) their bounds are tightened first."""
    rng = np.random.default_rng(11)
    ids = np.sort(rng.integers(0, 6, 800))
    centres = 3 * rng.standard_normal((6, 16))
    gallery = (centres[ids] + rng.standard_normal((800, 16))).astype(np.float32)
    query = (0.3 * (centres[ids[::3]] + rng.standard_normal((267, 16)))).astype(np.float32)  # hubs
    published = published_re_ranking(
        cdist(query, gallery).astype(np.float32), cdist(query, query).astype(np.float32),
        cdist(gallery, gallery).astype(np.float32), 20, 6, 0.3,
    )  # fmt: skip
    np.testing.assert_allclose(re_rank(query, gallery, block=256), published, atol=1e-5)


def test_the_gpu_code_path_gives_the_same_result(monkeypatch):
    """With NumPy's BLAS off, every product is a torch product written into the strip buffers, as on
    a GPU, and the products run one after another instead of in threads."""
    query, gallery = _features(12, 40, 300, 24)
    numpy_path = re_rank(query, gallery, block=64)
    monkeypatch.setattr(distance, "NUMPY_ON_CPU", False)
    calls = []
    monkeypatch.setattr(distance.torch, "matmul", lambda *a, **k: calls.append(1) or torch_matmul(*a, **k))
    torch_path = re_rank(query, gallery, block=64)
    assert len(calls) == 5  # each strip with columns right of its diagonal block: 4 gallery, 1 query
    np.testing.assert_allclose(torch_path, numpy_path, atol=1e-6)


def test_neighbour_buffers_stop_at_the_number_of_images():
    """A k1 of 100000 on a 20-image set asked for ~10 GB of neighbour lists before; no list is longer
    than every image."""
    query, gallery = _features(7, 5, 15, 4)
    shared = share_gallery(gallery, k1=100_000, k2=6, images=20)
    assert shared.near == 20 and shared.running.along_d2.shape[1] == 20
