"""evaluate_protocol (one call, distances shared) against each piece computed on its own."""

import dataclasses

import numpy as np
import pytest

from mgn.config import EvalConfig, Metric
from mgn.evaluation import FeatureSet, evaluate_features, evaluate_rank, keys, re_rank
from mgn.evaluation.protocol import evaluate_protocol
from tests.evaluation.test_features import _sets


def _separately(query: FeatureSet, gallery: FeatureSet, config: EvalConfig) -> dict[str, float]:
    query, gallery = query.select(normalize=config.normalize), gallery.select(normalize=config.normalize)
    plain = evaluate_features(query, gallery, config.metric, config.max_rank).summary()
    distance = re_rank(
        query.features, gallery.features, config.rerank_k1, config.rerank_k2, config.rerank_lambda
    )
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    reranked = evaluate_rank(distance, *labels, config.max_rank).summary()
    return plain | keys.prefixed(reranked, keys.reranked)


@pytest.mark.parametrize("metric", [Metric.EUCLIDEAN, Metric.COSINE])
def test_one_call_equals_each_evaluation_on_its_own(metric):
    query, gallery = _sets(seed=3)
    pooled = dataclasses.replace(query, features=query.features.flip(0) * 0.5 + query.features * 0.5)
    config = EvalConfig(metric=metric, max_rank=10)
    metrics, per_query, plain = evaluate_protocol(query, gallery, pooled, config)
    assert per_query.keys() == metrics.keys()
    for key, values in per_query.items():
        assert np.mean(values) == pytest.approx(metrics[key]), key
    expected = _separately(query, gallery, config) | keys.prefixed(
        _separately(pooled, gallery, config), keys.multi_query
    )
    assert metrics.keys() == expected.keys() and keys.multi_query(keys.reranked(keys.MAP)) in metrics
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    reference = evaluate_features(query.select(normalize=config.normalize), gallery.select(normalize=config.normalize),
                                  metric, 10)  # fmt: skip
    np.testing.assert_array_equal(plain.cmc, reference.cmc)
