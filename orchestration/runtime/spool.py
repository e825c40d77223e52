"""MLflow records that survive the tracking server going away mid-run.

Decision: training never stops because the tracking store is unreachable. A worker's records go
through ``SpoolingRecorder``: when the store does not answer, each record (metrics with their step
and time, tags, artifacts, the final status) is written as one small object to ``mlflow-spool/`` in
the trial's folder in grid storage (artifacts copied beside it; an object store has no append, and
the driver that replays may be on another machine) and training goes on. At the next record after a
quiet period the spool is replayed, in order, before anything new; what is still spooled when the
grid ends is replayed by the driver before it builds the table, or later with::

    python -m orchestration.runtime.replay ray_results/<grid folder>     # or s3://bucket/prefix/<grid folder>

Replay is idempotent per record: a record leaves the spool only once the store accepted it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestration.runtime.storage import Storage, StorageError
from orchestration.runtime.tracking import Tracker, redact, resolve_tracking_uri
from orchestration.runtime.trial_files import TrialFiles

RETRY_AFTER_SECONDS = 30.0


class SpoolingRecorder:
    """One run's records: to the store when it answers, to the spool in ``folder`` when it does not."""

    def __init__(
        self, tracker: Tracker, run_id: str, folder: Storage, warn: Callable[[str], None] = print
    ) -> None:
        self.tracker, self.run_id, self.warn = tracker, run_id, warn
        self.spool = TrialFiles(folder).spool
        self._down_since: float | None = None
        self._pending = True  # an earlier attempt of this trial may have left records
        self._logged_through = -1  # metrics at steps up to this one are already recorded

    def resume_steps(self, metric: str) -> int:
        """Record no metric at a step this run already has, in the store or in the spool.

        A trial resumed from its newest checkpoint re-runs the epochs after it (Ray may also lose
        the last report of a worker that died right after it): those steps were logged before,
        with the same values, and are not logged twice. Returns the last step already recorded."""
        steps = [record["step"] for record in self._spooled_records() if record["op"] == "metrics"]
        try:
            steps.append(self.tracker.last_step(self.run_id, metric))
        except Exception as error:  # the store is down: the spool is all we know
            self.warn(
                f"MLflow store {redact(self.tracker.uri)} unreachable ({type(error).__name__}) at resume"
            )
        self._logged_through = max(steps, default=-1)
        return self._logged_through

    def _spooled_records(self) -> list[dict[str, Any]]:
        return [json.loads(entry.read_text()) for entry in spooled(self.spool)]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step <= self._logged_through:
            return
        now = int(time.time() * 1000)
        self._record(
            {"op": "metrics", "step": step, "time": now, "values": {k: float(v) for k, v in metrics.items()}}
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        self._record({"op": "tags", "values": {k: str(v) for k, v in tags.items()}})

    def log_model(self, onnx: str | Path, name: str, registered_name: str | None) -> None:
        self._record({"op": "model", "path": str(onnx), "name": name, "registered_name": registered_name})

    def log_datasets(self, records: list[dict[str, Any]]) -> None:
        self._record({"op": "datasets", "values": records})

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._record({"op": "artifact", "path": str(path), "folder": folder})

    def finish(self, failed: bool = False) -> None:
        self._record({"op": "terminate", "failed": failed})

    def _record(self, record: dict[str, Any]) -> None:
        record["run_id"] = self.run_id
        if self._down_since is not None and time.monotonic() - self._down_since < RETRY_AFTER_SECONDS:
            self._append(record)
            return
        try:
            if self._pending:
                replay_file(self.spool, self.tracker)
                self._pending = False
            apply(record, self.tracker)
            self._down_since = None
        except Exception as error:  # the store is unreachable (or failing): keep training
            if self._down_since is None:
                self.warn(f"MLflow store {redact(self.tracker.uri)} unreachable ({type(error).__name__}); "
                          f"spooling records to {self.spool} and training on")  # fmt: skip
            self._down_since = time.monotonic()
            self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        # Names sort in write order; the pid keeps two writers of one trial (driver, rank 0) apart.
        key = f"{time.time_ns():020d}-{os.getpid()}"
        if "path" in record:  # an artifact or a model: keep a copy, temporary files vanish
            kept = self.spool / f"{key}.artifact" / Path(record["path"]).name
            kept.upload(record["path"])
            record = {**record, "stored": kept.uri}
        (self.spool / f"{key}.json").write_text(json.dumps(record))
        self._pending = True


@contextlib.contextmanager
def _record_file(record: dict[str, Any]) -> Iterator[str | Path]:
    """The file an artifact or model record names: where it was written, or the copy the spool kept."""
    if "stored" not in record:
        yield record["path"]
        return
    with tempfile.TemporaryDirectory() as folder:
        stored = Storage(record["stored"])
        yield stored.download(Path(folder) / stored.name)


def apply(record: dict[str, Any], tracker: Tracker) -> None:
    """Send one record to the store (raises if it does not answer)."""
    run_id = record["run_id"]
    if record["op"] == "metrics":
        tracker.log_metrics(run_id, record["values"], record["step"], record["time"])
    elif record["op"] == "tags":
        tracker.set_tags(run_id, record["values"])
    elif record["op"] == "model":
        with _record_file(record) as path:
            tracker.log_onnx_model(run_id, path, record.get("name", "model"), record["registered_name"])
    elif record["op"] == "datasets":
        tracker.log_datasets(run_id, record["values"])
    elif record["op"] == "artifact":
        with _record_file(record) as path:
            tracker.log_artifact(run_id, path, record["folder"])
    elif record["op"] == "terminate":
        tracker.finish(run_id, failed=record["failed"])
    else:
        raise ValueError(f"unknown spool record {record['op']!r}")


def spooled(spool: Storage) -> list[Storage]:
    """The records of one spool, oldest first."""
    return [entry for entry in spool.children() if entry.name.endswith(".json")]


def replay_file(spool: Storage, tracker: Tracker) -> int:
    """Replay a spool in order; each record stays spooled until the store takes it. Returns how many went."""
    records = spooled(spool)
    for entry in records:
        record = json.loads(entry.read_text())
        apply(record, tracker)
        entry.delete()
        if "stored" in record:
            Storage(record["stored"].rsplit("/", 1)[0]).delete()
    return len(records)


def spools(grid: Storage) -> list[Storage]:
    """Every trial spool of a study that still holds records: a grid's ``trials/<row>/seed<n>``, a
    sweep's ``<table>/trials/<row>/seed<n>``."""
    homes = [grid, *(table for table in grid.children() if (table / "trials").exists())]
    trials = [seed for home in homes for row in (home / "trials").children() for seed in row.children()]
    return [TrialFiles(trial).spool for trial in trials if spooled(TrialFiles(trial).spool)]


def replay_grid(grid: Storage, tracker: Tracker) -> int:
    """Replay every trial spool of a grid; returns the number of records sent."""
    return sum(replay_file(spool, tracker) for spool in spools(grid))


def parser() -> argparse.ArgumentParser:
    """``python -m orchestration.runtime.replay``: its options."""
    parser = argparse.ArgumentParser(description="Send a grid's spooled MLflow records to the store.")
    parser.add_argument("grid", help="the grid folder (under --storage-path): a path or an object-store URI")
    parser.add_argument(
        "--tracking-uri", help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tracker = Tracker(resolve_tracking_uri(args.tracking_uri))
    try:
        grid = Storage.parse(args.grid)
    except StorageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        sent = replay_grid(grid, tracker)
    except Exception as error:
        print(
            f"error: the store {redact(tracker.uri)} still does not take the records: {error}",
            file=sys.stderr,
        )
        return 1
    print(f"replayed {sent} records from {args.grid} into {redact(tracker.uri)}")
    return 0
