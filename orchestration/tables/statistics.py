"""Confidence intervals and significance for a table's cells, from its trials' per-query values.

Each trial logs ``per_query.npz``: every figure (``R1``, ``mAP``, ``rerank/mAP``, ...) per evaluated
query. A cell's interval resamples the queries (and the seeds of its row); a row's difference to
the table's reference row (``PaperTable.compare_to``, MGN in Table 5) is a paired bootstrap over the
same queries (``mgn.evaluation.bootstrap``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mgn.evaluation.bootstrap import Difference, Interval, difference, interval
from orchestration.runtime.tracking import ChildRun, Tracker
from orchestration.runtime.trial_files import PER_QUERY_ARTIFACT
from orchestration.tables.spec import Cell


@dataclass(frozen=True)
class CellStatistics:
    interval: Interval
    versus: Difference | None  # against the reference row's cell in the same column


class PerQuery:
    """The per-query values of a table's finished trials, downloaded once."""

    def __init__(self, tracker: Tracker, runs: Sequence[ChildRun]) -> None:
        self._values: dict[str, dict[str, np.ndarray]] = {}
        self._runs = [run for run in runs if run.finished]
        with tempfile.TemporaryDirectory() as folder:
            for run in self._runs:
                path = tracker.download(run.run_id, PER_QUERY_ARTIFACT, folder)
                if path is not None:
                    with np.load(path) as stored:
                        self._values[run.run_id] = {key: stored[key] for key in stored.files}
                    path.unlink()

    def of(self, cell: Cell | None) -> list[np.ndarray]:
        """One array per seed of ``cell``'s trial; empty when any seed lacks them (an older run)."""
        if cell is None or cell.trial is None:  # an ensemble: no per-query values
            return []
        # In seed order, not the store's (which follows finishing times): the seed resampling
        # draws by position, so the same runs give the same interval however they finished.
        runs = sorted((run for run in self._runs if run.row == cell.trial), key=lambda run: run.seed)
        found = [self._values.get(run.run_id, {}).get(cell.key) for run in runs]
        arrays = [v for v in found if v is not None]
        return arrays if found and len(arrays) == len(found) else []

    def statistics(self, cell: Cell | None, reference: Cell | None) -> CellStatistics | None:
        values = self.of(cell)
        if not values:
            return None
        other = self.of(reference) if reference is not None and reference != cell else []
        versus = difference(values, other) if other and len(other[0]) == len(values[0]) else None
        return CellStatistics(interval(values), versus)
