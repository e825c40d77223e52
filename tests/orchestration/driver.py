"""A grid (or search) driver in a subprocess, for tests that kill it, pause it or read its output as it runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestration.runtime.faults import ENV as FAULTS_ENV

ROOT = Path(__file__).resolve().parents[2]


def children(uri: str, experiment: str = "MGN Table 5") -> list:
    """The trial runs of an experiment (by default Table 5's) in the store at ``uri``."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


class Process:
    """A grid run in a subprocess (its own process group), its output collected line by line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        script: str = "experiments/ablation_table5.py",
    ) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, script, *args], cwd=ROOT, text=True,
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

    def interrupt(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole group

    def finish(self, timeout: float = 600) -> int:
        self.process.wait(timeout)
        time.sleep(0.5)
        return self.process.returncode


def faults_env(**fields: object) -> dict[str, str]:
    """The environment that injects faults into a grid (orchestration/runtime/faults.py)."""
    return {FAULTS_ENV: json.dumps(fields)}
