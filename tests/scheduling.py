"""The order in which pytest-xdist's workers take the test files (``--dist loadfile``), never what a
test checks. Two rules, both for a 2-core machine where the suite is bound by CPU:

* integration files first, the longest first (seconds per file in ``durations.json``, rewritten by
  ``pytest --store-durations``): the long files start early and the many short ones fill the last
  minutes, instead of one worker finishing a cluster test alone while the other idles. A file not
  in it counts as the longest. (pytest-xdist's own file scheduler would reorder the files by their
  number of tests: the one-test cluster and sweep files came last, and one worker ran them alone);
* the files of a group (``ONE_WORKER``) run on one worker, the first that takes one of them:
  the files whose fixtures take ``memory_heavy_module``'s lock (four-worker float64 Ray Train
  groups, gigabytes per worker), which would hold a second worker idle for minutes waiting on it;
  and the files that read the session's ``finished_grid``, which a second worker would train again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
# Each group's files, by the fixture that binds them (the scheduler sees test ids, not fixtures:
# tests/test_scheduling.py checks these lists against the fixtures the files take).
ONE_WORKER = {
    "memory_heavy_module": ("tests/orchestration/test_data_parallel.py", "tests/orchestration/test_worker_count.py"),
    "finished_grid": (
        "tests/orchestration/test_grid.py", "tests/orchestration/test_mlflow_ui.py", "tests/orchestration/test_sweep.py",
    ),
}  # fmt: skip
FILE_SECONDS: dict[str, float] = defaultdict(float)  # this run's, by file


def test_file(nodeid: str) -> str:
    """The file a test id names (``tests/x.py::test_y[z]`` -> ``tests/x.py``): the unit of --dist loadfile."""
    return nodeid.split("::", 1)[0]


def stored_seconds() -> dict[str, float]:
    return json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}


def store_seconds() -> None:
    """This run's files replace theirs in durations.json; files it did not run keep theirs."""
    stored = stored_seconds() | {name: round(seconds, 1) for name, seconds in FILE_SECONDS.items()}
    DURATIONS.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")


def schedule_key(item: pytest.Item, seconds: dict[str, float]) -> tuple[bool, float]:
    """Integration before the rest, then the longest file first; every test of a file has one key."""
    integration = item.get_closest_marker("integration") is not None
    unknown = float("inf") if integration else 0.0
    return (not integration, -seconds.get(test_file(item.nodeid), unknown))


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's file scheduler, with each ``ONE_WORKER`` group's files kept to the first worker
    that takes one of them (None for any other ``--dist``: xdist's own)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # the collection's order: see the module's docstring
    group_of = {file: group for group, files in ONE_WORKER.items() for file in files}

    class GroupsOnOneWorker(LoadFileScheduling):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.owner: dict[str, Any] = {}  # group -> the worker that took its first file

        def _assign_work_unit(self, node: Any) -> None:
            """The next file in order that no other worker's group holds (any, when none is left)."""
            free = next((f for f in self.workqueue if self.owner.get(group_of.get(f), node) is node), None)
            if free is not None:
                self.workqueue.move_to_end(free, last=False)
            group = group_of.get(next(iter(self.workqueue)))
            if group is not None:
                self.owner.setdefault(group, node)
            super()._assign_work_unit(node)

    return GroupsOnOneWorker(config, log)
