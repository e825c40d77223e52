"""A paper table as one declarative object: what it trains, where each cell comes from, what it draws.

``orchestration/tables/paper/table<N>.py`` each define one ``PaperTable``; ``orchestration.tables``
renders any of them from the MLflow store, ``orchestration.tables.figures`` draws their figures and
``orchestration.tables.ensembles`` evaluates their ensemble rows. Nothing elsewhere knows a table by
name: adding a row or a table touches only its module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mgn.config import DatasetName, ExperimentConfig

Metrics = Mapping[str, float | None]


@dataclass(frozen=True)
class Trial:
    """A network the table trains: its name (the ``mgn.row`` tag of its runs) and its config."""

    name: str
    make: Callable[[ExperimentConfig], ExperimentConfig]  # from the base recipe


@dataclass(frozen=True)
class Cell:
    """Where one cell's value comes from: metric ``key`` of the finished runs of ``trial`` (mean
    over seeds), or with ``trial=None`` the parent run's metrics ``key.format(seed=s)``."""

    trial: str | None
    key: str


@dataclass(frozen=True)
class Row:
    """One of our printed rows: its cells by column, the paper's numbers by column, a footnote."""

    name: str
    cells: Mapping[str, Cell]
    paper: Metrics = field(default_factory=dict)
    note: str = ""

    def trials(self) -> set[str]:
        return {cell.trial for cell in self.cells.values() if cell.trial is not None}


@dataclass(frozen=True)
class Ensemble:
    """A row computed from the concatenated test features of several trained ``members``."""

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Figures:
    """The table's figures besides its CMC curves: the run whose rank list and attention maps stand
    for it (``showcase``, with ``baseline``'s maps beside them), and a bar chart of ``bars``."""

    showcase: str
    baseline: str | None = None
    bars: tuple[str, ...] = ()  # metric columns drawn as bars with error bars over seeds


@dataclass(frozen=True)
class PaperTable:
    key: str  # file names and the ``mgn.table`` tag: "table5"
    title: str
    script: str  # the experiment script that regenerates it
    dataset: DatasetName  # what the paper profile trains on
    columns: tuple[str, ...]  # metric columns, as the paper prints them (ours beside the paper's)
    trials: tuple[Trial, ...]
    rows: tuple[Row, ...]
    figures: Figures
    extra_columns: tuple[str, ...] = ()  # ours only: the paper has no number for them
    ensembles: tuple[Ensemble, ...] = ()
    references: Mapping[str, Metrics] = field(default_factory=dict)  # other methods' published rows
    compare_to: str | None = None  # the row every other row's difference is tested against

    def heading(self, dataset_used: str | None) -> str:
        """The table's title, saying so when its runs used other data than the paper's table (the
        synthetic stand-in): the markdown's heading, its figures', the console's first line."""
        if dataset_used is None or dataset_used == self.dataset.value:
            return self.title
        return f"{self.title} [data: {dataset_used}, not {self.dataset.value}]"

    @property
    def experiment_name(self) -> str:
        return f"MGN {self.title.split(':')[0]}"

    def trial(self, name: str) -> Trial:
        return next(t for t in self.trials if t.name == name)

    def select(self, names: tuple[str, ...] | None) -> list[Trial]:
        """The trials that ``names`` (trial or printed-row names; all when None) need, in table
        order: a row computed from other networks (a branch, an ensemble) pulls them in."""
        if names is None:
            return list(self.trials)
        known = self.names()
        unknown = [n for n in names if n not in known]
        if unknown:
            valid = "; ".join(known)
            raise ValueError(
                f"unknown {self.title.split(':')[0]} row{'s' if len(unknown) > 1 else ''} {unknown}: "
                f"valid rows are {valid}"
            )
        needed = set().union(*(known[n] for n in names))
        return [t for t in self.trials if t.name in needed]

    def names(self) -> dict[str, set[str]]:
        """Every name ``select`` takes (printed rows, ensembles, trials) -> the trials it needs."""
        rows = {row.name: row.trials() for row in self.rows}
        rows |= {e.name: set(e.members) for e in self.ensembles}
        return rows | {t.name: {t.name} for t in self.trials}

    def covers(self, trials: Sequence[str]) -> bool:
        """Whether ``trials`` include every trial of the table (a full table, not a subset)."""
        return {t.name for t in self.trials} <= set(trials)


def by_column(columns: tuple[str, ...], values: tuple[float | None, ...]) -> dict[str, float | None]:
    """Numbers written in ``columns`` order -> {column: value}."""
    return dict(zip(columns, values, strict=True))
