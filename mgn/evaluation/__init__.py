"""Evaluation: CMC, mAP, mINP (Market-1501 protocol), multiple query, k-reciprocal re-ranking.

The names follow the re-ID toolkits (torchreid, fast-reid) so that code ports over::

    from mgn.evaluation import evaluate_rank, re_rank
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ap="step")
    reranked = re_rank(query_features, gallery_features, k1=20, k2=6, lambda_value=0.3)
"""

from mgn.evaluation.distance import pairwise_distance
from mgn.evaluation.features import FeatureSet, evaluate_features, extract_features, pool_multiple_query
from mgn.evaluation.rank import RankAccumulator, RankResult, evaluate_rank
from mgn.evaluation.reranking import re_rank

__all__ = [
    "FeatureSet",
    "RankAccumulator",
    "RankResult",
    "evaluate_features",
    "evaluate_rank",
    "extract_features",
    "pairwise_distance",
    "pool_multiple_query",
    "re_rank",
]
