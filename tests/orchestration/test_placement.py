"""Trials that no node can hold: a bounded wait on a cluster that may grow, then a message."""

from __future__ import annotations

import time

import pytest

from orchestration.runtime import cluster
from orchestration.runtime.cluster import ClusterError, wait_until_placeable


def _node(cpus: float, alive: bool = True, **more: float) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **more}}


def test_a_node_that_joins_during_the_wait_ends_it(monkeypatch):
    views = iter([[_node(1), _node(1)], [_node(1), _node(1)], [_node(1), _node(2)]])
    monkeypatch.setattr(cluster.ray, "nodes", lambda: next(views))
    wait_until_placeable({"training worker": {"CPU": 2.0}}, timeout_s=60, poll_s=0)


def test_no_node_big_enough_is_refused_after_the_wait_naming_the_largest(monkeypatch):
    nodes = [_node(1), _node(1), _node(8, alive=False), _node(0, TRAIN_DRIVER=4)]
    monkeypatch.setattr(cluster.ray, "nodes", lambda: nodes)
    started = time.monotonic()
    with pytest.raises(ClusterError) as error:
        wait_until_placeable({"training worker": {"CPU": 2.0, "GPU": 1.0}}, timeout_s=0.3, poll_s=0.1)
    assert time.monotonic() - started >= 0.3
    message = str(error.value)
    assert "after waiting 0.3 s" in message and "a training worker needs 2 CPU, 1 GPU" in message
    assert "the largest live node has 1 CPU" in message  # the dead 8-CPU node does not count
    assert "--placement-timeout" in message and "--cpus-per-worker" in message
