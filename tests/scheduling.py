"""The order in which pytest-xdist's workers take the test files (``--dist loadfile``), never what a
test checks. Two rules, both for a 2-core machine where the suite is bound by CPU:

* integration files first, the longest first (seconds per file in ``durations.json``, rewritten by
  ``pytest --store-durations``): the long files start early and the many short ones fill the last
  minutes, instead of one worker finishing a cluster test alone while the other idles. A file not
  in it counts as the longest. (pytest-xdist's own file scheduler would reorder the files by their
  number of tests: the one-test cluster and sweep files came last, and one worker ran them alone);
* the files that run four-worker float64 Ray Train groups (gigabytes per worker) all run on one
  worker. They never run at once anyway (``memory_heavy_module`` takes an flock), and on two
  workers the second one would hold its worker idle for minutes waiting on that lock.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
MEMORY_HEAVY = ("tests/orchestration/test_data_parallel.py", "tests/orchestration/test_worker_count.py")
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
    """pytest-xdist's file scheduler, with the memory-heavy files kept to the first worker that takes
    one (None for any other ``--dist``: xdist's own)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # the collection's order: see the module's docstring

    class MemoryHeavyOnOneWorker(LoadFileScheduling):
        heavy_node: Any = None

        def _assign_work_unit(self, node: Any) -> None:
            """The next file in order, skipping memory-heavy ones on every worker but theirs (unless
            nothing else is left)."""
            if self.heavy_node not in (None, node) and next(iter(self.workqueue)) in MEMORY_HEAVY:
                light = next((file for file in self.workqueue if file not in MEMORY_HEAVY), None)
                if light is not None:
                    self.workqueue.move_to_end(light, last=False)
            if next(iter(self.workqueue)) in MEMORY_HEAVY:
                self.heavy_node = node
            super()._assign_work_unit(node)

    return MemoryHeavyOnOneWorker(config, log)
