"""Cluster submission against a real local head (`ray start --head` on loopback)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration import submit
from orchestration.tables.registry import TABLES
from orchestration.tables.render import table_stem
from tests.orchestration.conftest import TINY_SETS, grid_args
from tests.servers import ray_head

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with the project's virtualenv on PATH, stopped after this module: only
    its own processes (never `ray stop`, which stops every Ray instance on the machine, a user's too)."""
    with ray_head(
        tmp_path_factory.mktemp("head"), {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ) as head:
        yield head.dashboard


def test_submit_a_table_to_a_running_cluster(head, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--address", head, "--storage-path", str(tmp_path / "shared"), "--tracking-uri", uri,
            "--env", f"MGN_CACHE={tmp_path / 'cache'}", "--wait", "--timeout", "600",
            "--fetch-into", str(tmp_path / "fetched"),
            "--", "experiments/ablation_table5.py", "--rows", "ResNet-50+TP", "--results-dir", str(tmp_path / "results")]  # fmt: skip
    for item in TINY_SETS:
        args += ["--set", item]
    assert submit.main(args) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "finished ResNet-50+TP seed0" in out
    assert (
        tmp_path / "results" / f"{table_stem(TABLES['table5'], ['ResNet-50+TP'])}.md"
    ).is_file()  # one row: beside the full table
    assert list((tmp_path / "shared").glob("table5-smoke-synthetic-*/tune"))  # grid storage where we said
    # The job's table, written on the head (gone with a real cluster), copied here from MLflow.
    subset = tmp_path / "results" / f"{table_stem(TABLES['table5'], ['ResNet-50+TP'])}.md"
    assert "copied" in out and (tmp_path / "fetched" / "table5.md").read_text() == subset.read_text()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("MGN Table 5").experiment_id])
    assert sorted(r.data.tags.get("mgn.row", "parent") for r in runs) == ["ResNet-50+TP", "parent"]


def test_submit_refuses_what_is_not_a_project_script(capsys):
    assert submit.main(["--address", "http://127.0.0.1:9", "--", "rm", "-rf", "/"]) == 2
    assert "give the script" in capsys.readouterr().err
    assert submit.main(["--address", "http://127.0.0.1:9", "--", "experiments/nope.py"]) == 2


def test_unreachable_job_server(capsys):
    assert submit.main(["--address", "http://127.0.0.1:9", "--", "experiments/ablation_table5.py"]) == 2
    assert "cannot reach the Ray job server" in capsys.readouterr().err


def test_a_cluster_already_running_here_does_not_capture_the_default_run(head, workspace):
    """`ray start` left a cluster (and its ray_current_cluster file) on this machine: a run without
    --address still starts its own private instance, with its own resources."""
    from orchestration.tables.command import main

    assert main("table5", grid_args(workspace, rows=("ResNet-50+TP",))) == 0
