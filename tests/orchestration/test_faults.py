"""Faults a multi-day grid meets on a shared cluster, each on a local Ray instance with tiny data:
a worker dies, the driver dies, the tracking server goes away, a checkpoint is corrupt."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestration.experiment import main
from orchestration.faults import ENV as FAULTS_ENV
from orchestration.spool import SPOOL_FILE
from orchestration.spool import main as replay
from tests.orchestration.conftest import grid_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTING = ["--set", "train.epochs=3", "--set", "train.checkpoint_every=1"]


def _children(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("MGN Table 5")
    return [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def _our_rows(results: str) -> pd.DataFrame:
    frame = pd.read_csv(Path(results) / "table5.csv")
    return frame[frame["Source"] == "ours"].reset_index(drop=True)


class Process:
    """A grid run in a subprocess (its own process group), its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "experiments/ablation_table5.py", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            if self.process.poll() is not None and not any(re.search(pattern, line) for line in self.lines):
                raise AssertionError(
                    f"exited ({self.process.returncode}) before {pattern!r}:\n{''.join(self.lines)}"
                )
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{''.join(self.lines)}")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the driver and the Ray it started: a lost machine
        self.process.wait()

    def finish(self, timeout: float = 600) -> int:
        self.process.wait(timeout)
        time.sleep(0.5)
        return self.process.returncode


def _faults(**fields: object) -> dict[str, str]:
    """The environment that injects faults into a grid (orchestration/faults.py)."""
    return {FAULTS_ENV: json.dumps(fields)}


def test_a_dead_worker_is_replaced_and_the_trial_ends_as_if_uninterrupted(workspace, tmp_path, monkeypatch):
    reference = {
        k: str(tmp_path / "reference" / Path(v).name) if k != "uri" else f"sqlite:///{tmp_path / 'ref.db'}"
        for k, v in workspace.items()
    }
    row = ("ResNet-50+TP",)
    assert main("table5", grid_args(reference, "--workers", "2", *CHECKPOINTING, rows=row)) == 0
    # Rank 1 of the two DDP workers exits hard after epoch 2; Ray Train restarts the worker group.
    monkeypatch.setenv(FAULTS_ENV, _faults(fail_at_epoch=2, fail_rank=1)[FAULTS_ENV])
    assert main("table5", grid_args(workspace, "--workers", "2", *CHECKPOINTING, rows=row)) == 0

    (faulty,), (clean,) = _children(workspace["uri"]), _children(reference["uri"])
    assert faulty.info.status == "FINISHED"
    assert faulty.data.tags["mgn.attempts"] == "2" and faulty.data.tags["mgn.resumed_from_epoch"] == "2"
    steps = [m.step for m in MlflowClient(workspace["uri"]).get_metric_history(faulty.info.run_id, "loss")]
    assert steps == [1, 2, 3]  # the same run, continued: no step logged twice
    for key in ("R1", "R5", "mAP", "mINP", "loss"):
        assert faulty.data.metrics[key] == clean.data.metrics[key], key


def test_a_killed_driver_resumes_without_retraining_finished_trials(workspace, tmp_path):
    rows = ("ResNet-50+TP", "MGN")
    reference = {
        k: str(tmp_path / "reference" / Path(v).name) if k != "uri" else f"sqlite:///{tmp_path / 'ref.db'}"
        for k, v in workspace.items()
    }
    assert main("table5", grid_args(reference, *CHECKPOINTING, rows=rows)) == 0

    pause = tmp_path / "pause"
    (tmp_path / "pause-mgn").touch()  # MGN waits after each epoch, ResNet-50+TP runs through
    driver = Process(grid_args(workspace, *CHECKPOINTING, rows=rows), env=_faults(pause_file=str(pause)))
    driver.wait_for(r"finished ResNet-50\+TP seed0")
    driver.wait_for(r"MGN seed0: epoch 1/3")
    driver.kill()
    (tmp_path / "pause-mgn").unlink()
    assert len(_children(workspace["uri"])) == 2

    # The newest checkpoint of the unfinished trial is truncated: resume must fall back to epoch 1.
    (grid,) = Path(workspace["storage"]).glob("table5-*")
    checkpoints = grid / "trials" / "mgn" / "seed0" / "checkpoints"
    assert (checkpoints / "epoch-0001" / "checkpoint.pt").is_file()
    corrupt = checkpoints / "epoch-0002" / "checkpoint.pt"
    corrupt.parent.mkdir(exist_ok=True)
    corrupt.write_bytes((checkpoints / "epoch-0001" / "checkpoint.pt").read_bytes()[:1000])

    resumed = Process(grid_args(workspace, "--resume", rows=rows))
    assert resumed.finish() == 0, "".join(resumed.lines)
    log = "".join(resumed.lines)
    assert f"checkpoint {corrupt} is corrupt" in log and "falling back to the previous checkpoint" in log
    assert "ResNet-50+TP seed0: epoch" not in log  # the finished trial was not trained again

    children = _children(workspace["uri"])
    assert sorted(c.data.tags["mgn.row"] for c in children) == ["MGN", "ResNet-50+TP"]  # one run per trial
    client = MlflowClient(workspace["uri"])
    finished = next(c for c in children if c.data.tags["mgn.row"] == "ResNet-50+TP")
    assert [m.step for m in client.get_metric_history(finished.info.run_id, "loss")] == [1, 2, 3]
    mgn = next(c for c in children if c.data.tags["mgn.row"] == "MGN")
    assert mgn.info.status == "FINISHED" and mgn.data.tags["mgn.resumed_from_epoch"] == "1"
    pd.testing.assert_frame_equal(_our_rows(workspace["results"]), _our_rows(reference["results"]))


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
    port = _free_port()
    server = _mlflow_server(port, tmp_path)
    uri = f"http://alice:s3cret@127.0.0.1:{port}"  # the password must never be recorded
    workspace = {**workspace, "uri": uri}
    pause = tmp_path / "pause"
    (tmp_path / "pause-resnet-50-tp").touch()
    driver = Process(
        grid_args(workspace, *CHECKPOINTING, rows=("ResNet-50+TP",)), env=_faults(pause_file=str(pause))
    )
    try:
        driver.wait_for(r"ResNet-50\+TP seed0: epoch 1/3")
        _stop(server)  # the server goes away mid-run
        (tmp_path / "pause-resnet-50-tp").unlink()
        assert driver.finish() == 1  # training finished; the table waits for the store
        log = "".join(driver.lines)
        assert "Training is done and nothing is lost" in log and "python -m orchestration.replay" in log
        (spool,) = Path(workspace["storage"]).rglob(SPOOL_FILE)
        assert '"op": "terminate"' in spool.read_text()

        server = _mlflow_server(port, tmp_path)  # back again, same store
        (grid,) = Path(workspace["storage"]).glob("table5-*")
        assert replay([str(grid), "--tracking-uri", uri]) == 0 and not spool.exists()
        resumed = Process(grid_args(workspace, "--resume", rows=("ResNet-50+TP",)))
        assert resumed.finish() == 0, "".join(resumed.lines)

        client = MlflowClient(f"http://127.0.0.1:{port}")
        (run,) = _children(f"http://127.0.0.1:{port}")
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
        recorded += [log, "".join(resumed.lines), (Path(workspace["results"]) / "table5.md").read_text()]
        assert not [text for text in recorded if "s3cret" in text]
    finally:
        if server.poll() is None:
            _stop(server)
