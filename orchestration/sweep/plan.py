"""The paper sweep's plan, without Ray: every table's grid (``orchestration.tables.planning``), and
the trainings they need, each network trained once however many tables read it.

Two trials are one training when their configs agree on everything that shapes the network and
its test features (``fingerprint``): Table 2's "MGN" on Market-1501 and Table 5's "MGN" row are the
same recipe and seed; they differ only in which evaluations they ask for (Table 2 adds multiple
query, Table 5 the untrained network), and an evaluation only adds metrics to a run. The training
asks for the union of them, lives in the first table that needs it (its *home*: parent run, files)
and every later table reads its run under its own row name (``render.table_runs``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from mgn.config import DataConfig, ExperimentConfig
from mgn.config_io import to_dict
from mgn.recipes import paper
from orchestration.runtime.trial import TrialHome, TrialSpec
from orchestration.tables.planning import Plan, cost, record, trial_run_name, trial_tags
from orchestration.tables.spec import PaperTable

# Evaluations that only add metrics to a run: trials differing in them share one training.
ADDITIVE_EVALUATIONS = ("multi_query", "rerank", "untrained")


def fingerprint(config: ExperimentConfig) -> str:
    """What a trial trains (and how it is tested), without the evaluations that only add metrics."""
    values = to_dict(config)
    for name in ADDITIVE_EVALUATIONS:
        values["eval"].pop(name)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def with_evaluations(config: ExperimentConfig, others: list[ExperimentConfig]) -> ExperimentConfig:
    """``config`` asking for every additive evaluation that any of ``others`` asks for."""
    asked: dict[str, Any] = {name: any(getattr(c.eval, name) for c in [config, *others]) for name in ADDITIVE_EVALUATIONS}
    return replace(config, eval=replace(config.eval, **asked))


@dataclass(frozen=True)
class Reader:
    """A table row that reads a training: ``table``'s row ``row``."""

    table: str
    row: str


@dataclass(frozen=True)
class Training:
    """One network trained once: its home row (the first reader), seed, config and every reader."""

    fingerprint: str
    seed: int
    config: ExperimentConfig
    readers: tuple[Reader, ...]

    @property
    def home(self) -> Reader:
        return self.readers[0]


def trains_on(spec: PaperTable, trial: str) -> str:
    """The real data set a table's trial trains on in the paper's recipe (what its synthetic
    stand-in stands for in smoke): how the sweep names data sets (``market1501``)."""
    return spec.trial(trial).make(paper()).data.dataset.value


@dataclass(frozen=True)
class SweepPlan:
    """The tables' grids in paper order and the trainings they need (each once); with
    ``cross_domain`` every training is also tested on the other data sets of the sweep."""

    tables: tuple[Plan, ...]
    trainings: tuple[Training, ...]
    cross_domain: bool = False

    @classmethod
    def of(cls, tables: list[Plan], cross_domain: bool = False) -> SweepPlan:
        groups: dict[tuple[str, int], list[tuple[Reader, ExperimentConfig]]] = {}
        for plan in tables:
            for (row, seed), config in plan.configs.items():
                groups.setdefault((fingerprint(config), seed), []).append(
                    (Reader(plan.spec.key, row), config)
                )
        trainings = [
            Training(
                key,
                seed,
                with_evaluations(group[0][1], [c for _, c in group[1:]]),
                tuple(r for r, _ in group),
            )
            for (key, seed), group in groups.items()
        ]
        return cls(tuple(tables), tuple(trainings), cross_domain)

    @property
    def trials_asked(self) -> int:
        """Trials the tables ask for; ``len(trainings)`` of them are trained."""
        return sum(len(plan.configs) for plan in self.tables)

    def table(self, key: str) -> Plan:
        return next(plan for plan in self.tables if plan.spec.key == key)

    def training_of(self, table: str, row: str, seed: int) -> Training:
        return next(t for t in self.trainings if t.seed == seed and Reader(table, row) in t.readers)

    def shared_rows(self, table: str, parents: dict[str, str]) -> dict[str, dict[str, str]]:
        """``table``'s rows trained in another table: {row: {"parent": its parent run, "row": its row}}."""
        plan = self.table(table)
        shared = {}
        for row in plan.rows:
            home = self.training_of(table, row, plan.seeds[0]).home
            if home.table != table:
                shared[row] = {"parent": parents[home.table], "row": home.row}
        return shared

    def trained_on(self, training: Training) -> str:
        return trains_on(self.table(training.home.table).spec, training.home.row)

    def test_sets(self) -> dict[str, DataConfig]:
        """Each data set the sweep trains on, by name, as its first training reads it."""
        found: dict[str, DataConfig] = {}
        for training in self.trainings:
            found.setdefault(self.trained_on(training), training.config.data)
        return found

    def trial_specs(self, parents: dict[str, str], script: dict[str, str]) -> list[TrialSpec]:
        """Every training as a typed trial in its home table (named and tagged as that table's
        trial would be), the longest first."""
        tests = self.test_sets() if self.cross_domain else {}
        trials = []
        for training in self.trainings:
            home, plan, own = training.home, self.table(training.home.table), self.trained_on(training)
            tags = trial_tags(plan, home.row, training.seed) | {
                "fingerprint": training.fingerprint,
                "read_by": "; ".join(f"{r.table} {r.row}" for r in training.readers),
                "trained_on": own,
            }
            transfer = tuple((name, to_dict(data)) for name, data in tests.items() if name != own)
            trials.append(TrialSpec(
                home.row, training.seed, training.config, trial_run_name(plan, home.row, training.seed),
                tuple(sorted(tags.items())), TrialHome(home.table, parents[home.table], script[home.table]),
                transfer,
            ))  # fmt: skip
        return sorted(trials, key=lambda t: -cost(t.config))

    def record(self) -> dict[str, Any]:
        """Each table's grid, as its folder would record it, and the cross-domain choice (``--resume``)."""
        return {
            "tables": {plan.spec.key: record(plan) for plan in self.tables},
            "cross_domain": self.cross_domain,
        }
