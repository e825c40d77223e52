"""MLflow records that survive the tracking server going away mid-run.

Decision: training never stops because the tracking store is unreachable. A worker's records go
through ``SpoolingRecorder``: when the store does not answer, each record (metrics with their step
and time, tags, artifacts, the final status) is appended to ``mlflow-spool.jsonl`` in the trial's
folder (artifacts copied beside it) and training goes on. At the next record after a quiet period
the spool is replayed, in order, before anything new; what is still spooled when the grid ends is
replayed by the driver before it builds the table, or later with::

    python -m orchestration.replay ray_results/<grid folder>

Replay is idempotent per record: a record leaves the spool only once the store accepted it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestration.tracking import Tracker, redact, resolve_tracking_uri

SPOOL_FILE = "mlflow-spool.jsonl"
RETRY_AFTER_SECONDS = 30.0


class SpoolingRecorder:
    """One run's records: to the store when it answers, to the spool in ``folder`` when it does not."""

    def __init__(
        self, tracker: Tracker, run_id: str, folder: str | Path, warn: Callable[[str], None] = print
    ) -> None:
        self.tracker, self.run_id, self.folder, self.warn = tracker, run_id, Path(folder), warn
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spool = self.folder / SPOOL_FILE
        self._down_since: float | None = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._record(
            {"op": "metrics", "step": step, "time": now, "values": {k: float(v) for k, v in metrics.items()}}
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        self._record({"op": "tags", "values": {k: str(v) for k, v in tags.items()}})

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
            replay_file(self.spool, self.tracker)
            apply(record, self.tracker)
            self._down_since = None
        except Exception as error:  # the store is unreachable (or failing): keep training
            if self._down_since is None:
                self.warn(f"MLflow store {redact(self.tracker.uri)} unreachable ({type(error).__name__}); "
                          f"spooling records to {self.spool} and training on")  # fmt: skip
            self._down_since = time.monotonic()
            self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        if record["op"] == "artifact":  # keep a copy: temporary files vanish
            kept = self.folder / "mlflow-spool-artifacts" / f"{time.time_ns()}" / Path(record["path"]).name
            kept.parent.mkdir(parents=True)
            shutil.copy2(record["path"], kept)
            record = {**record, "path": str(kept)}
        with self.spool.open("a") as spool:
            spool.write(json.dumps(record) + "\n")


def apply(record: dict[str, Any], tracker: Tracker) -> None:
    """Send one record to the store (raises if it does not answer)."""
    run_id = record["run_id"]
    if record["op"] == "metrics":
        tracker.log_metrics(run_id, record["values"], record["step"], record["time"])
    elif record["op"] == "tags":
        tracker.set_tags(run_id, record["values"])
    elif record["op"] == "artifact":
        tracker.log_artifact(run_id, record["path"], record["folder"])
    elif record["op"] == "terminate":
        tracker.finish(run_id, failed=record["failed"])
    else:
        raise ValueError(f"unknown spool record {record['op']!r}")


def replay_file(spool: Path, tracker: Tracker) -> int:
    """Replay a spool in order; records stay spooled until the store takes them. Returns how many went."""
    if not spool.is_file():
        return 0
    records = [json.loads(line) for line in spool.read_text().splitlines() if line.strip()]
    for done, record in enumerate(records):
        try:
            apply(record, tracker)
        except Exception:
            spool.write_text("".join(json.dumps(r) + "\n" for r in records[done:]))
            raise
    spool.unlink()
    shutil.rmtree(spool.parent / "mlflow-spool-artifacts", ignore_errors=True)
    return len(records)


def replay_grid(folder: Path, tracker: Tracker) -> int:
    """Replay every trial spool of a grid folder; returns the number of records sent."""
    return sum(replay_file(spool, tracker) for spool in sorted(Path(folder).rglob(SPOOL_FILE)))


def pending(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob(SPOOL_FILE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send a grid's spooled MLflow records to the store.")
    parser.add_argument("grid", type=Path, help="the grid folder (under --storage-path)")
    parser.add_argument(
        "--tracking-uri", help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    args = parser.parse_args(argv)
    tracker = Tracker(resolve_tracking_uri(args.tracking_uri))
    try:
        sent = replay_grid(args.grid, tracker)
    except Exception as error:
        print(
            f"error: the store {redact(tracker.uri)} still does not take the records: {error}",
            file=sys.stderr,
        )
        return 1
    print(f"replayed {sent} records from {args.grid} into {redact(tracker.uri)}")
    return 0
