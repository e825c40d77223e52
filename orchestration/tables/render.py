"""Tables 2-5 rebuilt from the MLflow store alone: ``python -m orchestration.tables table5``.

Any ``PaperTable`` (``orchestration/tables/paper/``) renders the same way: each of our rows names, per
column, the trial and the metric its value comes from (or a metric of the parent run, for
ensembles). Values over seeds are shown as mean ± std; the paper's numbers stand beside ours, and
other methods' published rows follow, marked as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mgn.config import Profile
from orchestration.runtime.naming import slug
from orchestration.runtime.tracking import (
    PROJECT_ROOT,
    TAG_PREFIX,
    ChildRun,
    Tracker,
    redact,
    resolve_tracking_uri,
)
from orchestration.tables.registry import TABLES
from orchestration.tables.spec import Cell, PaperTable
from orchestration.tables.statistics import CellStatistics, PerQuery


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


@dataclass(frozen=True)
class BuiltTable:
    # One row per table row: "<column>" mean, "<column> std", "<column> low"/"high" (95% interval),
    # "<column> vs <reference>" and "<column> p" (the difference to the reference row), "<column> paper".
    frame: pd.DataFrame
    markdown: str
    runs: list[ChildRun]  # the child runs it was built from
    significant: list[str] = field(default_factory=list)  # "row (column +1.2)" differing from the reference


def _with_statistics(text: str, stats: CellStatistics | None) -> str:
    if stats is None:
        return text
    marker = "*" if stats.versus is not None and stats.versus.significant else ""
    return f"{text}{marker} [{stats.interval.low:.1f}, {stats.interval.high:.1f}]"


def build(spec: PaperTable, tracker: Tracker, parent_run_id: str, command: str) -> BuiltTable:
    """The table of ``parent_run_id``'s trials, from the store alone."""
    parent = tracker.run(parent_run_id)
    runs = tracker.child_runs(parent.info.experiment_id, parent_run_id)
    seeds = sorted({run.seed for run in runs}) or [0]
    columns = list(spec.columns)
    extra = list(spec.extra_columns)
    records, lines = [], []
    header = ["Method", "Source", *columns, *extra, *(f"paper {c}" for c in columns)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    ours = spec.rows
    noted = [row.name for row in ours if row.note]
    per_query = PerQuery(tracker, runs)
    reference = next((row for row in ours if row.name == spec.compare_to), None)
    significant = []
    for row in ours:
        record: dict[str, object] = {"Method": row.name, "Source": "ours"}
        shown = []
        for column in [*columns, *extra]:
            cell = row.cells.get(column)
            values = _cell_values(runs, parent.data.metrics, cell, seeds) if cell else []
            record[column] = float(np.mean(values)) if values else np.nan
            record[f"{column} std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
            record[f"{column} n"] = len(values)
            stats = per_query.statistics(cell, reference.cells.get(column) if reference else None)
            if stats is not None:
                record[f"{column} low"], record[f"{column} high"] = stats.interval.low, stats.interval.high
                if stats.versus is not None:
                    record[f"{column} vs {spec.compare_to}"] = stats.versus.mean
                    record[f"{column} p"] = stats.versus.p_value
                    if stats.versus.significant:
                        significant.append(f"{row.name} ({column} {stats.versus.mean:+.1f})")
            shown.append(_with_statistics(_fmt(values), stats))
        paper = row.paper
        for column in columns:
            record[f"{column} paper"] = paper.get(column, np.nan)
        records.append(record)
        paper_cells = [f"{paper[c]:.1f}" if paper.get(c) is not None else "–" for c in columns]
        name = f"{row.name} [^{noted.index(row.name) + 1}]" if row.note else row.name
        lines.append("| " + " | ".join([name, "ours", *shown, *paper_cells]) + " |")
    for name, values in spec.references.items():
        record = {"Method": name, "Source": "published"} | {c: values.get(c) for c in columns}
        records.append(record)
        cells = [f"{values[c]:.1f}" if values.get(c) is not None else "–" for c in columns]
        lines.append(
            "| " + " | ".join([name, "published (paper)", *cells, *["" for _ in extra], *cells]) + " |"
        )
    footnotes = [f"[^{i + 1}]: {row.note}" for i, row in enumerate(r for r in ours if r.note)]
    if any(f"{c} low" in r for r in records for c in columns):
        footnotes.append(
            "[a, b]: 95% bootstrap interval over the test queries (and over seeds when a row has several)"
            + (
                f"; * differs from {spec.compare_to} (paired bootstrap over the same queries: the 95% interval "
                "of the difference excludes 0)"
                if reference
                else ""
            )  # fmt: skip
        )
    markdown = "\n".join(
        [
            _preamble(spec, parent, runs, seeds, tracker.uri, command),
            "",
            *lines,
            "",
            *footnotes,
            "",
            _epilogue(parent),
        ]
    )
    return BuiltTable(pd.DataFrame.from_records(records), markdown.rstrip() + "\n", runs, significant)


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


def _preamble(
    spec: PaperTable, parent, runs: Sequence[ChildRun], seeds: list[int], tracking_uri: str, command: str
) -> str:
    tags = parent.data.tags
    profile = tags.get(f"{TAG_PREFIX}profile", "?")
    dataset = tags.get(f"{TAG_PREFIX}dataset", "?")
    finished = sum(run.finished for run in runs)
    return "\n".join(
        [
            f"# {spec.title}",
            "",
            f"Generated by `{command}` from the MLflow store; do not edit by hand. Regenerate it from the store with "
            f"`python -m orchestration.tables {spec.key}`.",
            "",
            "| | |",
            "|---|---|",
            f"| profile | {profile} |",
            f"| data set | {dataset} |",
            f"| seeds | {len(seeds)} ({', '.join(map(str, seeds))}); cells are mean ± std over seeds |",
            f"| trials | {finished} finished of {len(runs)} |",
            f"| git commit | {tags.get(f'{TAG_PREFIX}git_commit', '?')} |",
            f"| date | {dt.datetime.fromtimestamp(parent.info.start_time / 1000, dt.UTC):%Y-%m-%d %H:%M} UTC |",
            f"| MLflow | experiment `{spec.experiment_name}`, parent run `{parent.info.run_id}`, store `{redact(tracking_uri)}` |",
        ]
    )


def _epilogue(parent) -> str:
    tags = parent.data.tags
    lines = ["Metrics are percentages. \"ours\" rows are this project's runs; \"paper\" columns and \"published\" rows "
             "are the numbers printed in Wang et al. (2018)."]  # fmt: skip
    if tags.get(f"{TAG_PREFIX}profile") == Profile.SMOKE.value:
        synthetic = tags.get(f"{TAG_PREFIX}dataset") == "synthetic"
        lines.append(
            f"Smoke profile: {'the embedded synthetic data set' if synthetic else 'the real data set'}, ResNet-18 "
            "from random weights at 96x32 (rows named ResNet-50 use ResNet-18, ResNet-101 uses ResNet-34), a few "
            "epochs on CPU. It checks the whole pipeline and shows differences between rows"
            f"{' on synthetic data' if synthetic else ''}; it is not a reproduction of the paper's numbers."
        )
    found = tags.get(f"{TAG_PREFIX}deviations", "none")
    if tags.get(f"{TAG_PREFIX}profile") != Profile.SMOKE.value and found != "none":
        lines.append(
            f"Deviations from the paper's recipe (each run's `mgn.deviations` tag says which are its own): {found}."
        )
    networks = tags.get(f"{TAG_PREFIX}networks")
    if networks:
        lines.append(f"Networks: {networks}.")
    return "\n\n".join(lines)


def table_stem(spec: PaperTable, rows: list[str] | None) -> str:
    """The file name of a table: ``<key>`` when its grid trained every row, else a name of its own,
    so that a run of a few rows never overwrites the full table beside it."""
    if rows is None or spec.covers(rows):
        return spec.key
    return f"{spec.key}-subset-{slug('-'.join(rows))}"[:80]


def publish(
    spec: PaperTable, tracker: Tracker, parent_run_id: str, command: str, results_dir: Path
) -> tuple[BuiltTable, list[Path]]:
    """Build the table from the store, draw its figures, write ``<stem>.md``, ``<stem>.csv`` and
    ``figures/<stem>_*.png`` under ``results_dir`` (``table_stem``: the key, or a subset's name)."""
    from orchestration.tables.figures import figure_title, table_figures

    rows = tracker.run(parent_run_id).data.tags.get(f"{TAG_PREFIX}rows")
    stem = table_stem(spec, json.loads(rows) if rows else None)
    table = build(spec, tracker, parent_run_id, command)
    results_dir.mkdir(parents=True, exist_ok=True)
    used = tracker.run(parent_run_id).data.tags.get(f"{TAG_PREFIX}dataset")
    figures = table_figures(
        spec, table.frame, table.runs, tracker, results_dir, stem, figure_title(spec, used)
    )
    links = [f"![{p.stem}](figures/{p.name})" for p in figures]
    markdown = table.markdown + ("\n## Figures\n\n" + "\n\n".join(links) + "\n" if links else "")
    table = BuiltTable(table.frame, markdown, table.runs)
    (results_dir / f"{stem}.md").write_text(table.markdown)
    table.frame.to_csv(results_dir / f"{stem}.csv", index=False, float_format="%.4f")
    return table, [results_dir / f"{stem}.md", results_dir / f"{stem}.csv", *figures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rebuild a table of the paper from the MLflow store (no training)."
    )
    parser.add_argument("table", choices=sorted(TABLES), help="which table")
    parser.add_argument(
        "--parent-run", help="the table invocation's parent run id (default: the latest finished one)"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument(
        "--results-dir", type=Path, default=PROJECT_ROOT / "results", help="where to write the table"
    )
    args = parser.parse_args(argv)
    spec = TABLES[args.table]
    tracker = Tracker(resolve_tracking_uri(args.tracking_uri))
    try:
        parent = args.parent_run or tracker.latest_parent(spec.experiment_name, spec.key)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = tracker.run(parent).data.tags.get(
        f"{TAG_PREFIX}command", f"python -m orchestration.tables {spec.key}"
    )
    table, paths = publish(spec, tracker, parent, command, args.results_dir)
    print(table.markdown)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
