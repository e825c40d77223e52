"""Cell intervals and differences to the reference row, from trials' per-query files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestration.runtime.tracking import ChildRun
from orchestration.tables.spec import Cell
from orchestration.tables.statistics import PerQuery


class _Store:
    """Stands in for the tracker: per-query files by run id."""

    def __init__(self, files: dict[str, dict[str, np.ndarray]]) -> None:
        self.files = files

    def download(self, run_id: str, artifact: str, folder: str) -> Path | None:
        if run_id not in self.files:
            return None
        path = Path(folder) / f"{run_id}-{artifact}"
        np.savez(path, **self.files[run_id])
        return path


def _run(run_id: str, row: str, seed: int = 0) -> ChildRun:
    return ChildRun(run_id, "FINISHED", row, seed, {})


def test_a_row_identical_to_the_reference_is_not_significant_a_worse_one_is():
    rng = np.random.default_rng(0)
    mgn = {"mAP": rng.uniform(0, 100, 120), "rerank/mAP": rng.uniform(0, 100, 120)}
    files = {"a": mgn, "b": {k: v.copy() for k, v in mgn.items()}, "c": {k: v * 0.5 for k, v in mgn.items()}}
    per_query = PerQuery(
        _Store(files), [_run("a", "MGN"), _run("b", "Copy"), _run("c", "Worse"), _run("d", "Old")]
    )
    reference = Cell("MGN", "mAP")
    same = per_query.statistics(Cell("Copy", "mAP"), reference)
    assert not same.versus.significant and same.versus.mean == 0
    assert same.interval.low < np.mean(mgn["mAP"]) < same.interval.high
    worse = per_query.statistics(Cell("Worse", "mAP"), reference)
    assert worse.versus.significant and worse.versus.high < 0
    assert per_query.statistics(reference, reference).versus is None  # the reference itself
    assert per_query.statistics(Cell("Old", "mAP"), reference) is None  # a run without the file
    assert per_query.statistics(Cell(None, "ensemble/x/seed{seed}/mAP"), reference) is None


def test_seeds_of_a_row_are_resampled_together():
    base = np.linspace(0, 100, 80)
    files = {"s0": {"R1": base}, "s1": {"R1": base + 4}}
    per_query = PerQuery(_Store(files), [_run("s0", "MGN", 0), _run("s1", "MGN", 1)])
    stats = per_query.statistics(Cell("MGN", "R1"), None)
    assert stats.interval.mean == np.mean(base) + 2 and stats.versus is None


def test_an_interval_does_not_depend_on_the_order_the_seeds_finished_in():
    rng = np.random.default_rng(1)
    files = {f"s{s}": {"mAP": rng.uniform(0, 100, 60)} for s in range(3)}
    runs = [_run(f"s{s}", "MGN", s) for s in range(3)]
    listed = PerQuery(_Store(files), runs).statistics(Cell("MGN", "mAP"), None)
    finished_otherwise = PerQuery(_Store(files), runs[::-1]).statistics(Cell("MGN", "mAP"), None)
    assert listed == finished_otherwise  # the store lists runs newest first: regenerated tables agree
