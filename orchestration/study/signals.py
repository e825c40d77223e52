"""A scheduler's SIGTERM (Slurm, Kubernetes, ``ray job stop``) is Ctrl-C to a study.

Tune stops a run gracefully on SIGINT: it saves its state, the driver marks the parent run KILLED
and prints the ``--resume`` command (exit 130). On SIGTERM Python would die at once, leaving the
parent RUNNING and no hint. While a study runs, SIGTERM is therefore turned into SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises SIGINT in this process (main thread only: Python delivers
    signals there; elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
