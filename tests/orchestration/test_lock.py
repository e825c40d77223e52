"""One driver per study folder, even when two start at the same instant."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from orchestration.runtime.storage import Storage
from orchestration.study.lock import StudyLocked, acquire

TRIES = 20


def _driver(folder: str, start, done, outcome) -> None:
    start.wait()
    try:
        acquire(Storage(folder))
        outcome.put("took it")
    except StudyLocked:
        outcome.put("refused")
    done.wait()  # the holder stays alive until both have tried (a dead holder's lock is taken over)


def test_two_drivers_starting_at_once_never_both_take_the_lock(tmp_path: Path):
    context = multiprocessing.get_context("fork")
    for attempt in range(TRIES):
        start, done, outcome = context.Barrier(2), context.Barrier(2), context.Queue()
        folder = str(tmp_path / f"grid{attempt}")
        drivers = [context.Process(target=_driver, args=(folder, start, done, outcome)) for _ in range(2)]
        for driver in drivers:
            driver.start()
        results = sorted(outcome.get(timeout=30) for _ in drivers)
        for driver in drivers:
            driver.join(30)
        assert results == ["refused", "took it"], f"try {attempt}: {results}"
