"""Fault injection for the tests, through one object read from one environment variable.

Production never sets ``MGN_TEST_FAULTS``; a test sets it (a JSON object of ``Faults`` fields)
before it starts a grid, and it reaches every Ray process with the grid's environment::

    MGN_TEST_FAULTS='{"fail_at_epoch": 2, "fail_rank": 1}'      # rank 1 exits hard after epoch 2, once
    MGN_TEST_FAULTS='{"pause_file": "/tmp/pause"}'              # a row waits while /tmp/pause-<row> exists
    MGN_TEST_FAULTS='{"pause_file": "/tmp/pause", "pause_from_epoch": 2}'   # ... from its second epoch on
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from orchestration.runtime.naming import slug
from orchestration.runtime.storage import Storage

ENV = "MGN_TEST_FAULTS"


@dataclass(frozen=True)
class Faults:
    fail_at_epoch: int = 0  # after this epoch the worker of ``fail_rank`` exits hard, once per trial
    fail_rank: int = 0
    fail_row: str = ""  # only this row's trials; "" = every row
    pause_file: str = ""  # after each epoch a row's workers wait while "<pause_file>-<row slug>" exists
    pause_from_epoch: int = 1  # ... after this epoch and every later one

    @classmethod
    def from_env(cls) -> Faults:
        return cls(**json.loads(os.environ.get(ENV) or "{}"))

    def after_epoch(self, row: str, rank: int, epoch: int, trial: Storage) -> None:
        """Called by every worker after every epoch: crash or pause as asked, else nothing."""
        marker = trial / f"fault-injected-rank{rank}"  # in grid storage: a replaced node sees it too
        wanted = self.fail_at_epoch and self.fail_row in ("", row)
        if wanted and rank == self.fail_rank and epoch == self.fail_at_epoch and not marker.exists():
            marker.write_text("")
            os._exit(17)  # a hard crash: no cleanup, no exception handling
        while (
            self.pause_file
            and epoch >= self.pause_from_epoch
            and Path(f"{self.pause_file}-{slug(row)}").exists()
        ):
            time.sleep(0.2)
