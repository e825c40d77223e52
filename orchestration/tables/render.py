"""Tables 2-5 rebuilt from the MLflow store alone: ``python -m orchestration.tables table5``.

Any ``PaperTable`` (``orchestration/tables/paper/``) renders the same way: each of our rows names, per
column, the trial and the metric its value comes from (or a metric of the parent run, for
ensembles). Values over seeds are shown as mean ± std; the paper's numbers stand beside ours, and
other methods' published rows follow, marked as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from mgn.config import Profile
from orchestration.runtime.naming import slug
from orchestration.runtime.storage import write_result
from orchestration.runtime.tracking import (
    PROJECT_ROOT,
    ChildRun,
    ParentRun,
    Tracker,
    redact,
    resolve_tracking_uri,
)
from orchestration.tables.registry import TABLES
from orchestration.tables.spec import Cell, PaperTable
from orchestration.tables.statistics import CellStatistics, PerQuery

# A table's parent tag naming rows it reads from another table's runs (``table_runs``).
SHARED_ROWS_TAG = "shared_rows"


class Source(Enum):
    """Where a row's numbers come from; the value is the CSV's ``Source`` column."""

    OURS = "ours"  # this project's runs
    PUBLISHED = "published"  # another method's row, as the paper prints it

    @property
    def label(self) -> str:
        return "published (paper)" if self is Source.PUBLISHED else self.value


@dataclass(frozen=True)
class CellValue:
    """One of our cells: its value per seed (finished trials) and, from the per-query values, its
    95% interval and its difference to the reference row."""

    values: tuple[float, ...]
    stats: CellStatistics | None

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else np.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else np.nan

    def text(self) -> str:
        """``71.4``, ``71.4 ± 0.3``, with ``* [70.1, 72.6]`` when the statistics are known."""
        if not self.values:
            shown = "–"
        elif len(self.values) == 1:
            shown = f"{self.values[0]:.1f}"
        else:
            shown = f"{self.mean:.1f} ± {self.std:.1f}"
        if self.stats is None:
            return shown
        marker = "*" if self.stats.versus is not None and self.stats.versus.significant else ""
        return f"{shown}{marker} [{self.stats.interval.low:.1f}, {self.stats.interval.high:.1f}]"


@dataclass(frozen=True)
class TableRow:
    """A printed row: ours (cells from the runs, by column) or a published one (``published``)."""

    name: str
    source: Source
    cells: Mapping[str, CellValue] = field(default_factory=dict)  # ours, every column and extra column
    paper: Mapping[str, float | None] = field(default_factory=dict)  # the paper's number per column
    note: str = ""


@dataclass(frozen=True)
class TableData:
    """A table's content, read from the store: what the markdown, the CSV and the figures show."""

    spec: PaperTable
    parent: ParentRun
    runs: list[ChildRun]  # the child runs it was built from
    seeds: list[int]
    rows: list[TableRow]
    experiment_name: str = ""  # where the parent run is (a sweep's tables share one experiment)

    @property
    def ours(self) -> list[TableRow]:
        return [row for row in self.rows if row.source is Source.OURS]

    def significant(self) -> list[str]:
        """``row (column +1.2)`` for each cell that differs from the reference row beyond chance."""
        return [
            f"{row.name} ({column} {cell.stats.versus.mean:+.1f})"
            for row in self.ours
            for column, cell in row.cells.items()
            if cell.stats is not None and cell.stats.versus is not None and cell.stats.versus.significant
        ]


@dataclass(frozen=True)
class BuiltTable:
    data: TableData
    markdown: str

    @property
    def runs(self) -> list[ChildRun]:
        return self.data.runs

    @property
    def significant(self) -> list[str]:
        return self.data.significant()

    @property
    def frame(self) -> pd.DataFrame:
        return table_frame(self.data)


def table_data(spec: PaperTable, tracker: Tracker, parent_run_id: str) -> TableData:
    """Every row of ``spec`` from ``parent_run_id``'s trials (and its own metrics, for ensembles)."""
    parent = tracker.parent(parent_run_id)
    runs = table_runs(tracker, parent)
    seeds = sorted({run.seed for run in runs}) or [0]
    per_query = PerQuery(tracker, runs)
    reference = next((row for row in spec.rows if row.name == spec.compare_to), None)
    rows = []
    for row in spec.rows:
        cells = {}
        for column in [*spec.columns, *spec.extra_columns]:
            cell = row.cells.get(column)
            values = _cell_values(runs, parent.metrics, cell, seeds) if cell else []
            stats = per_query.statistics(cell, reference.cells.get(column) if reference else None)
            cells[column] = CellValue(tuple(values), stats)
        rows.append(TableRow(row.name, Source.OURS, cells, dict(row.paper), row.note))
    rows += [TableRow(name, Source.PUBLISHED, paper=dict(values)) for name, values in spec.references.items()]
    return TableData(spec, parent, runs, seeds, rows, tracker.experiment_name(parent.experiment_id))


def table_runs(tracker: Tracker, parent: ParentRun) -> list[ChildRun]:
    """The runs a table reads: its parent's children, and the rows it shares with another table of
    its sweep (``mgn.shared_rows`` = {row: {"parent": the owner table's parent, "row": its row there}}):
    one network trained once, read by both tables under each one's row name."""
    runs = tracker.child_runs(parent.experiment_id, parent.run_id)
    shared = json.loads(parent.tags.get(SHARED_ROWS_TAG, "{}"))
    owners = {o["parent"]: tracker.child_runs(parent.experiment_id, o["parent"]) for o in shared.values()}
    for row, owner in shared.items():
        runs += [
            dataclasses.replace(run, row=row) for run in owners[owner["parent"]] if run.row == owner["row"]
        ]
    return runs


def build(spec: PaperTable, tracker: Tracker, parent_run_id: str, command: str) -> BuiltTable:
    """The table of ``parent_run_id``'s trials, from the store alone."""
    data = table_data(spec, tracker, parent_run_id)
    return BuiltTable(data, table_markdown(data, tracker.uri, command))


def table_frame(data: TableData) -> pd.DataFrame:
    """The CSV form: one record per row, "<column>" mean, "<column> std", "<column> n", "<column> low"/
    "high" (95% interval), "<column> vs <reference>" and "<column> p", "<column> paper"."""
    spec, records = data.spec, []
    for row in data.rows:
        record: dict[str, object] = {"Method": row.name, "Source": row.source.value}
        if row.source is Source.PUBLISHED:
            records.append(record | {c: row.paper.get(c) for c in spec.columns})
            continue
        for column, cell in row.cells.items():
            record |= {column: cell.mean, f"{column} std": cell.std, f"{column} n": len(cell.values)}
            if cell.stats is not None:
                record |= {
                    f"{column} low": cell.stats.interval.low,
                    f"{column} high": cell.stats.interval.high,
                }
                if cell.stats.versus is not None:
                    record |= {f"{column} vs {spec.compare_to}": cell.stats.versus.mean,
                               f"{column} p": cell.stats.versus.p_value}  # fmt: skip
        records.append(record | {f"{c} paper": row.paper.get(c, np.nan) for c in spec.columns})
    return pd.DataFrame.from_records(records)


def _number(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "–"


def _table_lines(data: TableData) -> list[str]:
    """The markdown table: our rows (footnote marks on noted ones), then the published rows."""
    columns, extra = list(data.spec.columns), list(data.spec.extra_columns)
    header = ["Method", "Source", *columns, *extra, *(f"paper {c}" for c in columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    noted = [row.name for row in data.ours if row.note]
    for row in data.rows:
        paper = [_number(row.paper.get(c)) for c in columns]
        if row.source is Source.PUBLISHED:
            cells = [row.name, row.source.label, *paper, *["" for _ in extra], *paper]
        else:
            name = f"{row.name} [^{noted.index(row.name) + 1}]" if row.note else row.name
            cells = [name, row.source.label, *(cell.text() for cell in row.cells.values()), *paper]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _footnotes(data: TableData) -> list[str]:
    spec = data.spec
    footnotes = [f"[^{i + 1}]: {row.note}" for i, row in enumerate(r for r in data.ours if r.note)]
    if any(row.cells[c].stats is not None for row in data.ours for c in spec.columns):
        reference = any(row.name == spec.compare_to for row in spec.rows)
        footnotes.append(
            "[a, b]: 95% bootstrap interval over the test queries (and over seeds when a row has several)"
            + (
                f"; * differs from {spec.compare_to} (paired bootstrap over the same queries: the 95% interval "
                "of the difference excludes 0)"
                if reference
                else ""
            )  # fmt: skip
        )
    return footnotes


def table_markdown(data: TableData, tracking_uri: str, command: str) -> str:
    parts = [
        _preamble(data, tracking_uri, command),
        "",
        *_table_lines(data),
        "",
        *_footnotes(data),
        "",
        _epilogue(data.parent),
    ]
    return "\n".join(parts).rstrip() + "\n"


def _cell_values(
    runs: Sequence[ChildRun], parent_metrics: Mapping[str, float], cell: Cell, seeds: list[int]
) -> list[float]:
    if cell.trial is None:  # a parent-run metric per seed (ensembles)
        return [parent_metrics[k] for s in seeds if (k := cell.key.format(seed=s)) in parent_metrics]
    return [
        run.metrics[cell.key]
        for run in runs
        if run.row == cell.trial and run.finished and cell.key in run.metrics
    ]


def _preamble(data: TableData, tracking_uri: str, command: str) -> str:
    spec, parent, seeds, tags = data.spec, data.parent, data.seeds, data.parent.tags
    profile = tags.get("profile", "?")
    dataset = tags.get("dataset", "?")
    finished = sum(run.finished for run in data.runs)
    experiment = data.experiment_name or spec.experiment_name
    own = "" if experiment == spec.experiment_name else f" --experiment-name '{experiment}'"
    return "\n".join(
        [
            f"# {spec.heading(dataset if dataset != '?' else None)}",
            "",
            f"Generated by `{command}` from the MLflow store; do not edit by hand. Regenerate it from the store with "
            f"`python -m orchestration.tables {spec.key}{own}`.",
            "",
            "| | |",
            "|---|---|",
            f"| profile | {profile} |",
            f"| data set | {dataset} |",
            f"| seeds | {len(seeds)} ({', '.join(map(str, seeds))}); cells are mean ± std over seeds |",
            f"| trials | {finished} finished of {len(data.runs)} |",
            f"| git commit | {tags.get('git_commit', '?')} |",
            f"| date | {dt.datetime.fromtimestamp(parent.start_time_ms / 1000, dt.UTC):%Y-%m-%d %H:%M} UTC |",
            f"| MLflow | experiment `{experiment}`, parent run `{parent.run_id}`, store `{redact(tracking_uri)}` |",
        ]
    )


def _epilogue(parent: ParentRun) -> str:
    tags = parent.tags
    lines = ["Metrics are percentages. \"ours\" rows are this project's runs; \"paper\" columns and \"published\" rows "
             "are the numbers printed in Wang et al. (2018)."]  # fmt: skip
    if tags.get("profile") == Profile.SMOKE.value:
        synthetic = tags.get("dataset") == "synthetic"
        lines.append(
            f"Smoke profile: {'the embedded synthetic data set' if synthetic else 'the real data set'}, ResNet-18 "
            "from random weights at 96x32 (rows named ResNet-50 use ResNet-18, ResNet-101 uses ResNet-34), a few "
            "epochs on CPU. It checks the whole pipeline and shows differences between rows"
            f"{' on synthetic data' if synthetic else ''}; it is not a reproduction of the paper's numbers."
        )
    found = tags.get("deviations", "none")
    if tags.get("profile") != Profile.SMOKE.value and found != "none":
        lines.append(
            f"Deviations from the paper's recipe (each run's `mgn.deviations` tag says which are its own): {found}."
        )
    networks = tags.get("networks")
    if networks:
        lines.append(f"Networks: {networks}.")
    return "\n\n".join(lines)


def table_stem(spec: PaperTable, rows: list[str] | None) -> str:
    """The file name of a table: ``<key>`` when its grid trained every row, else a name of its own,
    so that a run of a few rows never overwrites the full table beside it."""
    if rows is None or spec.covers(rows):
        return spec.key
    # Readable, then unique: a digest of the rows (two subsets sharing a long prefix differ in it).
    ordered = [t.name for t in spec.trials if t.name in rows] + sorted(
        set(rows) - {t.name for t in spec.trials}
    )
    digest = hashlib.sha256(json.dumps(ordered).encode()).hexdigest()[:8]
    return f"{spec.key}-subset-{slug('-'.join(ordered))[:48]}-{digest}"


def publish(
    spec: PaperTable, tracker: Tracker, parent_run_id: str, command: str, results_dir: Path
) -> tuple[BuiltTable, list[Path]]:
    """Build the table from the store, draw its figures, write ``<stem>.md``, ``<stem>.csv`` and
    ``figures/<stem>_*.png`` under ``results_dir`` (``table_stem``: the key, or a subset's name)."""
    from orchestration.tables.figures import table_figures

    table = build(spec, tracker, parent_run_id, command)
    rows = table.data.parent.tags.get("rows")
    stem = table_stem(spec, json.loads(rows) if rows else None)
    results_dir.mkdir(parents=True, exist_ok=True)
    used = table.data.parent.tags.get("dataset")
    figures = table_figures(table.data, tracker, results_dir, stem, spec.heading(used))
    links = [f"![{p.stem}](figures/{p.name})" for p in figures]
    markdown = table.markdown + ("\n## Figures\n\n" + "\n\n".join(links) + "\n" if links else "")
    table = BuiltTable(table.data, markdown)
    write_result(results_dir / f"{stem}.md", table.markdown)
    write_result(results_dir / f"{stem}.csv", table.frame.to_csv(index=False, float_format="%.4f"))
    return table, [results_dir / f"{stem}.md", results_dir / f"{stem}.csv", *figures]


def parser() -> argparse.ArgumentParser:
    """``python -m orchestration.tables``: its options."""
    parser = argparse.ArgumentParser(
        description="Rebuild a table of the paper from the MLflow store (no training)."
    )
    parser.add_argument("table", choices=sorted(TABLES), help="which table")
    parser.add_argument(
        "--parent-run", help="the table invocation's parent run id (default: the latest finished one)"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--experiment-name",
                        help="the MLflow experiment the table was trained in (default: the table's own, e.g. "
                             "'MGN Table 5'; a paper sweep's is 'MGN paper')")  # fmt: skip
    parser.add_argument(
        "--results-dir", type=Path, default=PROJECT_ROOT / "results", help="where to write the table"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spec = TABLES[args.table]
    tracker = Tracker(resolve_tracking_uri(args.tracking_uri))
    try:
        parent = args.parent_run or tracker.latest_parent(
            args.experiment_name or spec.experiment_name, spec.key
        )
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = tracker.parent(parent).tags.get("command", f"python -m orchestration.tables {spec.key}")
    table, paths = publish(spec, tracker, parent, command, args.results_dir)
    print(table.markdown)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
