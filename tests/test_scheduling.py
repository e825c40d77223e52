"""The order in which two pytest-xdist workers take the test files (tests/scheduling.py), driven
through pytest-xdist's own file scheduler with two stand-in workers."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests import scheduling

HEAVY, OTHER_HEAVY = scheduling.ONE_WORKER["memory_heavy_module"]
GRID, *OTHER_GRID_FILES = scheduling.ONE_WORKER["finished_grid"]
COLLECTION = [  # the collection order tests/conftest.py gives: longest file first
    "tests/orchestration/test_cluster.py::a", "tests/orchestration/test_cluster.py::b",
    "tests/orchestration/test_cluster.py::c",
    f"{HEAVY}::a", f"{HEAVY}::b", "tests/orchestration/test_faults.py::a", f"{OTHER_HEAVY}::a",
    "tests/test_model.py::a",
]  # fmt: skip


class Worker:
    """What the scheduler asks of a pytest-xdist worker: take test indices, shut down."""

    def __init__(self, name: str, collection: list[str]) -> None:
        self.gateway, self.taken, self.shutting_down = SimpleNamespace(id=name), [], False
        self.collection = collection

    def send_runtest_some(self, indices: list[int]) -> None:
        self.taken += [scheduling.test_file(self.collection[i]) for i in indices]

    def shutdown(self) -> None:
        self.shutting_down = True


def _config(dist: str) -> SimpleNamespace:
    values = {"dist": dist, "tx": ["2*popen"]}
    return SimpleNamespace(getvalue=values.__getitem__, option=SimpleNamespace(loadscopereorder=True))


def _scheduled(config: SimpleNamespace, collection: list[str]) -> tuple[Any, Worker, Worker]:
    """Our scheduler with two stand-in workers that collected ``collection``, after its first round."""
    scheduler = scheduling.make_scheduler(config, None)
    first, second = Worker("gw0", collection), Worker("gw1", collection)
    for worker in (first, second):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()  # one file each, and one more for a worker with 2 tests or fewer to run
    return scheduler, first, second


def _files(worker: Worker) -> list[str]:
    return list(dict.fromkeys(worker.taken))


def test_memory_heavy_files_run_on_one_worker_and_the_order_is_kept():
    config = _config("loadfile")
    scheduler, first, second = _scheduled(config, COLLECTION)
    assert config.option.loadscopereorder is False  # xdist's reorder by number of tests is off
    assert _files(first) == ["tests/orchestration/test_cluster.py"]
    assert _files(second) == [HEAVY, "tests/orchestration/test_faults.py"]
    scheduler.mark_test_complete(first, 0)  # gw0 has 2 tests left: it takes one more file...
    # ... not the other memory-heavy one (it would wait on gw1's lock), but the one after it.
    assert _files(first) == ["tests/orchestration/test_cluster.py", "tests/test_model.py"]
    scheduler.mark_test_complete(second, 3)
    assert _files(second) == [HEAVY, "tests/orchestration/test_faults.py", OTHER_HEAVY]
    assert not scheduler.workqueue


def test_a_group_whose_first_file_one_worker_took_stays_with_it():
    """The finished grid's files follow the worker that trained it, while the other worker runs
    everything else, the other group included."""
    collection = [f"{GRID}::a", f"{HEAVY}::a", f"{OTHER_GRID_FILES[0]}::a", f"{OTHER_HEAVY}::a",
                  f"{OTHER_GRID_FILES[1]}::a", "tests/test_model.py::a"]  # fmt: skip
    scheduler, first, second = _scheduled(_config("loadfile"), collection)
    assert _files(first) == [GRID, OTHER_GRID_FILES[0]] and _files(second) == [HEAVY, OTHER_HEAVY]
    scheduler.mark_test_complete(second, 1)  # gw1 is free first: not the grid's last file, the model's
    assert _files(second) == [HEAVY, OTHER_HEAVY, "tests/test_model.py"]
    scheduler.mark_test_complete(first, 0)
    assert _files(first) == [GRID, OTHER_GRID_FILES[0], OTHER_GRID_FILES[1]] and not scheduler.workqueue


def test_other_distributions_keep_pytest_xdists_scheduler():
    assert scheduling.make_scheduler(_config("load"), None) is None


def test_integration_files_first_then_the_longest():
    def item(nodeid: str, integration: bool) -> SimpleNamespace:
        return SimpleNamespace(
            nodeid=nodeid, get_closest_marker=lambda name: object() if integration else None
        )

    seconds = {"a.py": 10.0, "b.py": 300.0, "c.py": 40.0}
    items = [item("c.py::t", False), item("a.py::t", True), item("new.py::t", True), item("b.py::t", True)]
    items.sort(key=lambda i: scheduling.schedule_key(i, seconds))
    assert [i.nodeid for i in items] == ["new.py::t", "b.py::t", "a.py::t", "c.py::t"]


def test_each_group_is_the_files_that_take_its_fixture():
    """ONE_WORKER (read by the scheduler, which sees test ids, not fixtures) names, for each fixture,
    exactly the files whose tests or fixtures take it."""
    root = Path(__file__).resolve().parents[1]
    for fixture, files in scheduling.ONE_WORKER.items():
        takers = {
            str(path.relative_to(root))
            for path in (root / "tests").rglob("test_*.py")
            if re.search(rf"^def \w+\([^)]*\b{fixture}\b", path.read_text(), re.M)
        }
        assert takers == set(files), fixture
