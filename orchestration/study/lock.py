"""One driver per study: a lock file in the study's folder naming the driver's host and PID.

Two drivers on one grid would both write its Tune state and its parent run, and the second would
take the first's finished trials for its own. A lock whose driver is gone (a killed process on
this host) is taken over, which is what ``--resume`` after a crash needs; a lock held by a live
process, or by a driver on another host (whose liveness cannot be seen from here), is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import asdict, dataclass

from orchestration.runtime.storage import Storage

LOCK_FILE = "driver.lock"


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
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


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
    """Take the study's lock, or raise ``StudyLocked`` naming the driver that holds it."""
    lock = grid / LOCK_FILE
    holder = _holder(lock)
    if holder is not None and holder.alive() and holder.pid != os.getpid():
        where = "" if holder.host == socket.gethostname() else f" on {holder.host}"
        raise StudyLocked(
            f"{grid} is being run by PID {holder.pid}{where} (since {holder.started}). Wait for it to "
            f"finish or stop it (kill -INT {holder.pid}), then --resume. If that driver is gone, delete {lock}."
        )
    mine = DriverLock.mine()
    lock.write_text(json.dumps(asdict(mine)))
    return mine


def release(grid: Storage, mine: DriverLock) -> None:
    """Remove the lock if it is still ours."""
    lock = grid / LOCK_FILE
    if _holder(lock) == mine:
        lock.delete()
