"""One driver per study: a lock file in the study's folder naming the driver's host and PID.

Two drivers on one grid would both write its Tune state and its parent run, and the second would
take the first's finished trials for its own. A lock whose driver is gone (a killed process on
this host) is taken over, which is what ``--resume`` after a crash needs; a lock held by a live
process, or by a driver on another host (whose liveness cannot be seen from here), is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from mgn.processes import alive
from orchestration.runtime.file_lock import exclusive
from orchestration.runtime.storage import Storage

LOCK_FILE = "driver.lock"
MUTEX_FILE = ".driver.lock.mutex"  # held only while a driver checks and writes LOCK_FILE
OBJECT_STORE_SETTLE_S = 1.0


class StudyLocked(RuntimeError):
    """Another driver runs this grid; the message names it and what to do."""


@dataclass(frozen=True)
class DriverLock:
    host: str
    pid: int
    started: str

    @classmethod
    def mine(cls) -> DriverLock:
        return cls(socket.gethostname(), os.getpid(), dt.datetime.now().isoformat(timespec="seconds"))

    def alive(self) -> bool:
        """Whether the holder still runs (only knowable on its own host: elsewhere assume it does)."""
        return self.host != socket.gethostname() or alive(self.pid)


def _holder(lock: Storage) -> DriverLock | None:
    """The lock's holder; None when there is no lock or it cannot be read (a driver killed while
    writing it left it empty or cut: nobody holds it)."""
    if not lock.exists():
        return None
    try:
        return DriverLock(**json.loads(lock.read_text()))
    except (ValueError, TypeError):
        return None


def acquire(grid: Storage) -> DriverLock:
    """Take the study's lock, or raise ``StudyLocked`` naming the driver that holds it. Two drivers
    starting at once cannot both take it: on a local (or NFS) folder the check and the write happen
    under an OS file lock; on an object store, which has no such lock, the lock is read back after a
    moment and the driver whose write did not last gives way."""
    lock = grid / LOCK_FILE
    with _exclusive(grid):
        _refuse_if_held(grid, lock)
        mine = DriverLock.mine()
        lock.write_text(json.dumps(asdict(mine)))
    if not grid.is_local:
        time.sleep(OBJECT_STORE_SETTLE_S)  # a competing write lands within this; the last one wins
        _refuse_if_held(grid, lock)
    return mine


def _refuse_if_held(grid: Storage, lock: Storage) -> None:
    holder = _holder(lock)
    if holder is not None and holder.alive() and holder.pid != os.getpid():
        where = "" if holder.host == socket.gethostname() else f" on {holder.host}"
        raise StudyLocked(
            f"{grid} is being run by PID {holder.pid}{where} (since {holder.started}). Wait for it to "
            f"finish or stop it (kill -INT {holder.pid}), then --resume. If that driver is gone, delete {lock}."
        )


@contextlib.contextmanager
def _exclusive(grid: Storage) -> Iterator[None]:
    """One process at a time between checking the lock and writing it (local folders; a no-op on an
    object store)."""
    if not grid.is_local:
        yield
        return
    with exclusive(Path(grid.path) / MUTEX_FILE):
        yield


def release(grid: Storage, mine: DriverLock) -> None:
    """Remove the lock if it is still ours."""
    lock = grid / LOCK_FILE
    if _holder(lock) == mine:
        lock.delete()
