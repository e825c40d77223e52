"""Fault injection for the tests, through one object read from one environment variable.

Production never sets ``MGN_TEST_FAULTS``; a test sets it (a JSON object of ``Faults`` fields)
before it starts a grid, and it reaches every Ray process with the grid's environment::

    MGN_TEST_FAULTS='{"fail_at_epoch": 2, "fail_rank": 1}'      # rank 1 exits hard after epoch 2, once
    MGN_TEST_FAULTS='{"pause_file": "/tmp/pause"}'              # a row waits while /tmp/pause-<row> exists
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from orchestration.naming import slug

ENV = "MGN_TEST_FAULTS"


@dataclass(frozen=True)
class Faults:
    fail_at_epoch: int = 0  # after this epoch the worker of ``fail_rank`` exits hard, once per trial
    fail_rank: int = 0
    fail_row: str = ""  # only this row's trials; "" = every row
    pause_file: str = ""  # after each epoch a row's workers wait while "<pause_file>-<row slug>" exists

    @classmethod
    def from_env(cls) -> Faults:
        return cls(**json.loads(os.environ.get(ENV) or "{}"))

    def after_epoch(self, row: str, rank: int, epoch: int, trial_folder: Path) -> None:
        """Called by every worker after every epoch: crash or pause as asked, else nothing."""
        marker = trial_folder / f".fault-injected-rank{rank}"
        wanted = self.fail_at_epoch and self.fail_row in ("", row)
        if wanted and rank == self.fail_rank and epoch == self.fail_at_epoch and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os._exit(17)  # a hard crash: no cleanup, no exception handling
        while self.pause_file and Path(f"{self.pause_file}-{slug(row)}").exists():
            time.sleep(0.2)
