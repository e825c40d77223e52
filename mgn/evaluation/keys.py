"""Metric names, defined once: what evaluation returns, what workers log and what tables read.

Values are percentages. A key is a summary name with prefixes for the variant of the protocol,
composed inside out: ``R1``, ``rerank/R1`` (k-reciprocal re-ranking), ``mq/mAP`` and
``mq/rerank/mAP`` (Market-1501 multiple query), ``branch/Part-2/mAP`` (one branch alone: Table 5's
"Branch" rows), ``untrained/mAP`` (the network before training), ``val/mAP`` (a recipe search's validation
split, ``data.validation_ids``: never mistaken for a test figure by a table), and on a table's parent run
``ensemble/<row>/seed<s>/mAP`` (concatenated features of several trained networks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

V = TypeVar("V")  # a figure (float) or per-query figures (an array)

R1, R5, R10, MAP, MINP = "R1", "R5", "R10", "mAP", "mINP"
SUMMARY = (R1, R5, R10, MAP, MINP)
CMC_RANKS = {R1: 1, R5: 5, R10: 10}  # rank-k matching rates among the summary figures


def reranked(key: str) -> str:
    return f"rerank/{key}"


def multi_query(key: str) -> str:
    return f"mq/{key}"


def branch(name: str, key: str) -> str:
    return f"branch/{name}/{key}"


def untrained(key: str) -> str:
    return f"untrained/{key}"


def validation(key: str) -> str:
    """On the held-out training identities (``data.validation_ids``), never a test figure."""
    return f"val/{key}"


def transfer(target: str, key: str) -> str:
    """Tested on another data set's test protocol, as trained (direct transfer, no adaptation)."""
    return f"transfer/{target}/{key}"


def ensemble(row_slug: str, seed: int | str, key: str) -> str:
    return f"ensemble/{row_slug}/seed{seed}/{key}"


def prefixed(metrics: Mapping[str, V], prefix: Callable[[str], str]) -> dict[str, V]:
    """``{"mAP": 40.0}``, ``multi_query`` -> ``{"mq/mAP": 40.0}``."""
    return {prefix(key): value for key, value in metrics.items()}
