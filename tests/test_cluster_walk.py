"""The walk of docs/cluster.md (tests/cluster_walk.py, run by hand) knows every command of the docs'
block, and what it runs in their place names nothing that does not exist here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tests.cluster_walk import DOCS, Place, cluster_block, rewrite, script

PLACE = Place(Path("/tmp/walk"), "192.0.2.2", 6001, 6002, 6003, (6004, 6005), 6006)


def test_the_block_is_read_as_commands():
    commands = cluster_block(DOCS.read_text())
    assert commands[0].startswith("export AWS_ACCESS_KEY_ID=")
    assert any(
        c.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --host") for c in commands
    )
    assert not [c for c in commands if c.endswith("\\") or "#" in c.replace("'#", "")]  # joined, no comments


def test_every_command_of_the_docs_is_walked_with_only_local_names(tmp_path):
    place = dataclasses.replace(PLACE, folder=tmp_path)  # where the servers' scripts are written
    steps = [rewrite(command, place) for command in cluster_block(DOCS.read_text())]
    text = script(steps, place, "http://127.0.0.1:6007", 6008)
    for placeholder in (
        "db.internal",
        "mlflow.internal",
        "10.0.0.",
        ":5000",
        ":8265",
        ":6379",
        "=...",
        " /data ",
    ):
        assert placeholder not in text, placeholder
    servers = {s.background for s in steps if s.background}
    assert servers == {"mlflow-server", "ray-head", "ray-worker"}
    heads = [s.command for s in steps if s.background == "ray-head"]
    assert (
        heads
        and f"--block --temp-dir {tmp_path / 'h'}" in heads[0]
        and "--node-ip-address 192.0.2.2" in heads[0]
    )
    (submit,) = [s.command for s in steps if "orchestration.submit" in s.command]
    assert (
        "--gpu" not in submit
        and f"--fetch-into {tmp_path / 'fetched'}" in submit
        and "--profile smoke" in submit
    )
    # The token is generated before the head starts, and RAY_AUTH_MODE exported before every `ray start`.
    order = [s.command.split(" --")[0] for s in steps]
    assert (
        order.index("ray get-auth-token") < order.index("ray start")
        and "export RAY_AUTH_MODE=token" in order[: order.index("ray start")]
    )


def test_a_command_the_walk_does_not_know_stops_it():
    with pytest.raises(SystemExit, match=re.escape("a command the walk does not know: 'kubectl apply -f x'")):
        rewrite("kubectl apply -f x", PLACE)
