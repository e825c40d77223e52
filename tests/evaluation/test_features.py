import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mgn.config import Metric, QueryPooling
from mgn.data.records import ImageRecord
from mgn.evaluation import (
    FeatureSet,
    evaluate_features,
    evaluate_rank,
    extract_features,
    pairwise_distance,
    pool_multiple_query,
)


def _sets(seed=0, num_q=40, num_g=300, dim=32):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    q_pids, g_pids = (
        rng.integers(1, 20, num_q),
        np.r_[rng.integers(1, 20, num_g - 20), np.zeros(10, int), -np.ones(10, int)],
    )
    q = FeatureSet(
        torch.tensor(centres[q_pids] + rng.standard_normal((num_q, dim)).astype(np.float32)),
        q_pids,
        rng.integers(0, 6, num_q),
    )
    g = FeatureSet(
        torch.tensor(centres[np.abs(g_pids)] + rng.standard_normal((num_g, dim)).astype(np.float32)),
        g_pids,
        rng.integers(0, 6, num_g),
    )
    return q, g


@pytest.mark.parametrize("metric", [Metric.EUCLIDEAN, Metric.COSINE])
def test_blockwise_evaluation_equals_the_full_matrix(metric):
    q, g = _sets()
    full = evaluate_rank(
        pairwise_distance(q.features, g.features, metric), q.pids, g.pids, q.camids, g.camids
    )
    blocks = evaluate_features(q, g, metric, block=7)
    assert blocks.mAP == pytest.approx(full.mAP, abs=1e-9) and np.allclose(blocks.cmc, full.cmc)


def test_pairwise_distance_is_euclidean():
    a, b = torch.randn(5, 8), torch.randn(7, 8)
    np.testing.assert_allclose(pairwise_distance(a, b), torch.cdist(a, b).numpy(), atol=1e-5)


class _Half(torch.nn.Module):
    """A model whose embedding is the left half of the image: flipping changes it."""

    def forward(self, x):
        return x[..., : x.shape[-1] // 2].flatten(1)


def test_extraction_averages_the_image_and_its_mirror():
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    loader = DataLoader(TensorDataset(images, torch.tensor([1, 2]), torch.tensor([0, 1])), batch_size=1)
    plain = extract_features(_Half(), loader, flip=False)
    flipped = extract_features(_Half(), loader, flip=True)
    expected = (images[..., :2] + torch.flip(images, dims=[3])[..., :2]).flatten(1) / 2
    torch.testing.assert_close(flipped.features, expected)
    assert not torch.equal(plain.features, flipped.features)
    assert list(flipped.pids) == [1, 2] and list(flipped.camids) == [0, 1]


def test_select_columns_then_normalise():
    features = FeatureSet(torch.tensor([[3.0, 4.0, 100.0]]), np.array([1]), np.array([0]))
    torch.testing.assert_close(features.select([0, 1], normalize=True).features, torch.tensor([[0.6, 0.8]]))


def test_multiple_query_pools_the_identity_camera_group():
    query_records = [
        ImageRecord("q/0001_c1s1_000001_00.jpg", 1, 0),
        ImageRecord("q/0002_c2s1_000001_00.jpg", 2, 1),
    ]
    extra_records = [
        ImageRecord("gt/0001_c1s1_000001_00.jpg", 1, 0),  # the query itself: counted once
        ImageRecord("gt/0001_c1s1_000002_00.jpg", 1, 0),
        ImageRecord("gt/0001_c2s1_000003_00.jpg", 1, 1),  # another camera: not pooled
    ]
    query = FeatureSet(torch.tensor([[1.0, 1.0], [5.0, 5.0]]), np.array([1, 2]), np.array([0, 1]))
    extra = FeatureSet(
        torch.tensor([[1.0, 1.0], [3.0, 0.0], [9.0, 9.0]]), np.array([1, 1, 1]), np.array([0, 0, 1])
    )
    mean = pool_multiple_query(query, query_records, extra, extra_records, QueryPooling.MEAN)
    torch.testing.assert_close(mean.features, torch.tensor([[2.0, 0.5], [5.0, 5.0]]))
    biggest = pool_multiple_query(query, query_records, extra, extra_records, QueryPooling.MAX)
    torch.testing.assert_close(biggest.features, torch.tensor([[3.0, 1.0], [5.0, 5.0]]))


def test_ensemble_concatenation_checks_alignment():
    q, _ = _sets()
    both = FeatureSet.concat([q, q.select([0, 1])])
    assert both.features.shape == (40, 34)
    with pytest.raises(ValueError, match="same images"):
        FeatureSet.concat([q, FeatureSet(q.features, q.pids[::-1].copy(), q.camids)])


def test_extraction_precision_follows_the_config():
    from mgn.config import Backbone, Init, ModelConfig, Precision
    from mgn.model import MGN

    torch.manual_seed(0)
    model = MGN(ModelConfig(backbone=Backbone.RESNET18, init=Init.RANDOM), num_classes=4).eval()
    images = torch.randn(3, 3, 64, 32)
    loader = DataLoader(TensorDataset(images, torch.tensor([1, 2, 3]), torch.tensor([0, 1, 0])), batch_size=3)
    fp32 = extract_features(model, loader, flip=False).features
    bf16 = extract_features(model, loader, flip=False, precision=Precision.BF16).features
    with torch.no_grad():
        assert torch.equal(fp32, model.embed(images))  # the default is the paper's fp32, bit for bit
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # bf16 arithmetic when asked
    assert torch.allclose(bf16, fp32, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(bad):
    from mgn.evaluation import evaluate_features

    query = torch.randn(3, 4)
    query[2, 1] = bad
    pids, cams = np.array([1, 2, 3]), np.array([0, 0, 0])
    with pytest.raises(ValueError, match="query features hold NaN or infinity"):
        evaluate_features(
            FeatureSet(query, pids, cams), FeatureSet(torch.randn(3, 4), pids, np.ones(3)), max_rank=10
        )
