"""Faults a multi-day grid meets, each on a local Ray instance with tiny data and local storage: the
driver dies, the tracking server goes away, a checkpoint is corrupt. (A lost node and a driver
killed on a multi-node cluster with object storage: test_cluster.py.)"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestration.runtime.spool import main as replay
from orchestration.runtime.trial_files import SPOOL_DIR
from orchestration.tables import render as tables
from orchestration.tables.command import main
from orchestration.tables.registry import TABLES
from orchestration.tables.render import table_stem
from tests.orchestration.conftest import grid_args
from tests.orchestration.driver import Process, children, faults_env

pytestmark = pytest.mark.integration
CHECKPOINTING = ["--set", "train.epochs=3", "--set", "train.checkpoint_every=1"]


def _our_rows(results: str, rows: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(Path(results) / f"{table_stem(TABLES['table5'], list(rows))}.csv")
    return frame[frame["Source"] == "ours"].reset_index(drop=True)


def test_a_killed_driver_resumes_without_retraining_finished_trials(workspace, tmp_path):
    rows = ("ResNet-50+TP", "MGN")
    reference = {
        k: str(tmp_path / "reference" / Path(v).name) if k != "uri" else f"sqlite:///{tmp_path / 'ref.db'}"
        for k, v in workspace.items()
    }
    assert main("table5", grid_args(reference, *CHECKPOINTING, rows=rows)) == 0

    pause = tmp_path / "pause"
    (tmp_path / "pause-mgn").touch()  # MGN waits after its second epoch, ResNet-50+TP runs through
    # Tune saves its experiment state every second, so that it knows MGN's newest checkpoint.
    faults = {**faults_env(pause_file=str(pause), pause_from_epoch=2), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = Process(grid_args(workspace, *CHECKPOINTING, rows=rows), env=faults)
    driver.wait_for(r"finished ResNet-50\+TP seed0")
    driver.wait_for(r"MGN seed0: epoch 2/3")
    time.sleep(3)
    driver.kill()
    (tmp_path / "pause-mgn").unlink()
    assert len(children(workspace["uri"])) == 2

    # MGN's newest checkpoint (epoch 2, kept by Ray in the trial's storage) is truncated:
    # resume must fall back to the one before it (epoch 1).
    (grid,) = Path(workspace["storage"]).glob("table5-*")
    (trial,) = (grid / "tune").glob("*-mgn-seed0")
    newest, previous = sorted(trial.glob("checkpoint_*"), reverse=True)
    corrupt = newest / "checkpoint.pt"
    corrupt.write_bytes(corrupt.read_bytes()[:1000])

    resumed = Process(grid_args(workspace, *CHECKPOINTING, "--resume", rows=rows))
    assert resumed.finish() == 0, "".join(resumed.lines)
    log = "".join(resumed.lines)
    assert f"checkpoint {newest} is corrupt; falling back to the previous checkpoint" in log
    assert "resuming: 1 of 2 trials ended, 1 to run (each from its newest checkpoint)" in log
    assert "ResNet-50+TP seed0: epoch" not in log  # the finished trial was not trained again

    runs = children(workspace["uri"])
    assert sorted(c.data.tags["mgn.row"] for c in runs) == ["MGN", "ResNet-50+TP"]  # one run per trial
    client = MlflowClient(workspace["uri"])
    finished = next(c for c in runs if c.data.tags["mgn.row"] == "ResNet-50+TP")
    assert [m.step for m in client.get_metric_history(finished.info.run_id, "loss")] == [1, 2, 3]
    mgn = next(c for c in runs if c.data.tags["mgn.row"] == "MGN")
    assert mgn.info.status == "FINISHED" and mgn.data.tags["mgn.resumed_from_epoch"] == "1"
    pd.testing.assert_frame_equal(
        _our_rows(workspace["results"], rows), _our_rows(reference["results"], rows)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(port: int, folder: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts"),
         "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError("mlflow server did not start")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def test_the_tracking_server_going_away_loses_no_training(workspace, tmp_path):
    started = time.time()
    port = _free_port()
    server = _mlflow_server(port, tmp_path)
    uri = f"http://alice:s3cret@127.0.0.1:{port}"  # the password must never be recorded
    workspace = {**workspace, "uri": uri}
    pause = tmp_path / "pause"
    (tmp_path / "pause-resnet-50-tp").touch()
    driver = Process(
        grid_args(workspace, *CHECKPOINTING, rows=("ResNet-50+TP",)), env=faults_env(pause_file=str(pause))
    )
    try:
        driver.wait_for(r"ResNet-50\+TP seed0: epoch 1/3")
        _stop(server)  # the server goes away mid-run
        (tmp_path / "pause-resnet-50-tp").unlink()
        assert driver.finish() == 1  # training finished; the table waits for the store
        log = "".join(driver.lines)
        assert "Training is done and nothing is lost" in log and "python -m orchestration.runtime.replay" in log
        (spool,) = Path(workspace["storage"]).rglob(SPOOL_DIR)
        assert any('"op": "terminate"' in record.read_text() for record in spool.glob("*.json"))

        server = _mlflow_server(port, tmp_path)  # back again, same store
        (grid,) = Path(workspace["storage"]).glob("table5-*")
        assert replay([str(grid), "--tracking-uri", uri]) == 0 and not list(spool.glob("*"))
        resumed = Process(grid_args(workspace, *CHECKPOINTING, "--resume", rows=("ResNet-50+TP",)))
        assert resumed.finish() == 0, "".join(resumed.lines)

        client = MlflowClient(f"http://127.0.0.1:{port}")
        (run,) = children(f"http://127.0.0.1:{port}")
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
        assert "cmc.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
        # No credential anywhere: params, tags, the config artifact, the logs, the table.
        recorded = [*run.data.params.values(), *run.data.tags.values()]
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        recorded += [*parent.data.params.values(), *parent.data.tags.values()]
        recorded.append(
            Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
        )
        recorded += [
            log,
            "".join(resumed.lines),
            (Path(workspace["results"]) / f"{table_stem(TABLES['table5'], ['ResNet-50+TP'])}.md").read_text(),
        ]
        assert not [text for text in recorded if "s3cret" in text]
        # Nor in any log Ray wrote meanwhile (runtime environments are logged: the URI travels bare).
        ray_logs = [
            p
            for p in Path("/tmp/ray").glob("session_*/logs/**/*")
            if p.is_file() and p.stat().st_mtime >= started
        ]
        assert ray_logs and not [p for p in ray_logs if b"s3cret" in p.read_bytes()]
    finally:
        if server.poll() is None:
            _stop(server)


def test_ctrl_c_mid_grid_publishes_nothing_and_says_how_to_resume(workspace, tmp_path):
    (tmp_path / "pause-resnet-50-tp").touch()
    driver = Process(
        grid_args(workspace, *CHECKPOINTING, rows=("ResNet-50+TP",)),
        env=faults_env(pause_file=str(tmp_path / "pause")),
    )
    try:
        driver.wait_for(r"ResNet-50\+TP seed0: epoch 1/3")
        driver.interrupt()
        code = driver.finish(timeout=180)
    finally:
        (tmp_path / "pause-resnet-50-tp").unlink()
    log = "".join(driver.lines)
    assert code == 130, log
    assert "interrupted: 1 trial(s) unfinished (ResNet-50+TP seed0); no table was written" in log
    assert re.search(r"ablation_table5\.py .* --resume table5-smoke-synthetic-\S+", log)
    assert not list(Path(workspace["results"]).glob("table5*.md"))
    client = MlflowClient(workspace["uri"])
    (parent,) = [r for r in client.search_runs(["1"]) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert (
        tables.main(["table5", "--tracking-uri", workspace["uri"], "--results-dir", str(tmp_path / "t")]) == 2
    )
