"""Tables 2-5 rebuilt from the MLflow store alone: ``python -m orchestration.tables table5``.

Each of our rows names, per column, the trial row and the metric it comes from (or a metric of
the parent run, for ensembles). Values over seeds are shown as mean ± std; the paper's numbers
stand beside ours, and Tables 2-4 carry the other methods' published rows, marked as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from mgn.model import branch_name
from mgn.table5 import ROWS, BranchRow, EnsembleRow, TrainedRow
from orchestration.paper_tables import TABLES, TableSpec
from orchestration.tracking import PROJECT_ROOT, TAG_PREFIX, redact, resolve_tracking_uri

PARENT = "<parent>"  # a cell read from the parent run (ensembles): metric key holds {seed}


@dataclass(frozen=True)
class OurRow:
    name: str
    cells: dict[str, tuple[str, str]]  # column -> (trial row or PARENT, metric key)
    note: str = ""
    paper: str | None = None  # key of the paper's numbers, if different from ``name``


def ensemble_key(row: str, seed: int, metric: str) -> str:
    """Parent-run metric holding an ensemble row's result for one seed."""
    from orchestration.trial import slug

    return f"ensemble/{slug(row)}/seed{seed}/{metric}"


def layout(spec: TableSpec) -> list[OurRow]:
    """Our rows of a table and where each cell comes from."""
    if spec.key == "table5":
        rows = []
        metrics = ("R1", "R5", "R10", "mAP", "mINP")
        for row in ROWS:
            if isinstance(row, TrainedRow):
                cells = {m: (row.name, m) for m in metrics} | {"untrained mAP": (row.name, "untrained/mAP")}
            elif isinstance(row, BranchRow):
                cells = {m: (row.of, f"branch/{branch_name(row.branch)}/{m}") for m in metrics}
            else:
                assert isinstance(row, EnsembleRow)
                cells = {
                    m: (PARENT, ensemble_key(row.name, 0, m).replace("seed0", "seed{seed}")) for m in metrics
                }
            rows.append(OurRow(row.name, cells, row.note))
        return rows
    if spec.key == "table2":
        plain = {"SQ R1": "R1", "SQ mAP": "mAP", "MQ R1": "mq/R1", "MQ mAP": "mq/mAP"}
        return [
            OurRow("MGN (Ours)", {c: ("MGN", m) for c, m in plain.items()}),
            OurRow(
                "MGN (Ours, RK)",
                {
                    c: ("MGN", m.replace("mq/", "mq/rerank/") if "mq/" in m else f"rerank/{m}")
                    for c, m in plain.items()
                },
            ),
        ]
    if spec.key == "table3":
        return [
            OurRow("MGN (Ours)", {"R1": ("MGN", "R1"), "mAP": ("MGN", "mAP")}),
            OurRow(
                "MGN (Ours, RK)",
                {"R1": ("MGN", "rerank/R1"), "mAP": ("MGN", "rerank/mAP")},
                "not in the paper's table",
            ),
        ]
    if spec.key == "table4":
        cells = {
            f"{kind.title()} {m}": (f"MGN ({kind})", m)
            for kind in ("labeled", "detected")
            for m in ("R1", "mAP")
        }
        return [OurRow("MGN (Ours)", cells)]
    raise ValueError(f"no layout for {spec.key}")


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        output_format="pandas",
    )


@dataclass(frozen=True)
class BuiltTable:
    frame: pd.DataFrame  # one row per table row: "<column>" mean, "<column> std", "<column> paper"
    markdown: str
    runs: pd.DataFrame  # the child runs it was built from


def build(spec: TableSpec, tracking_uri: str, parent_run_id: str, command: str) -> BuiltTable:
    """The table of ``parent_run_id``'s trials, from the store alone."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = child_runs(tracking_uri, parent.info.experiment_id, parent_run_id)
    seeds = sorted({int(s) for s in runs.get(f"tags.{TAG_PREFIX}seed", pd.Series(dtype=str)).dropna()}) or [0]
    columns = list(spec.columns)
    extra = ["mINP", "untrained mAP"] if spec.key == "table5" else []
    records, lines = [], []
    header = ["Method", "Source", *columns, *extra, *(f"paper {c}" for c in columns)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    ours = layout(spec)
    noted = [row.name for row in ours if row.note]
    for row in ours:
        record: dict[str, object] = {"Method": row.name, "Source": "ours"}
        shown = []
        for column in [*columns, *extra]:
            source, key = row.cells.get(column, (None, None))
            values = _cell_values(runs, parent.data.metrics, source, key, seeds) if source else []
            record[column] = float(np.mean(values)) if values else np.nan
            record[f"{column} std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
            record[f"{column} n"] = len(values)
            shown.append(_fmt(values))
        paper = spec.ours_paper.get(row.paper or row.name, {})
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
    markdown = "\n".join(
        [
            _preamble(spec, parent, runs, seeds, tracking_uri, command),
            "",
            *lines,
            "",
            *footnotes,
            "",
            _epilogue(spec, parent, runs),
        ]
    )
    return BuiltTable(pd.DataFrame.from_records(records), markdown.rstrip() + "\n", runs)


def _cell_values(
    runs: pd.DataFrame, parent_metrics: dict, source: str, key: str, seeds: list[int]
) -> list[float]:
    if source == PARENT:
        return [parent_metrics[k] for s in seeds if (k := key.format(seed=s)) in parent_metrics]
    column = f"metrics.{key}"
    if runs.empty or column not in runs:
        return []
    mine = runs[(runs[f"tags.{TAG_PREFIX}row"] == source) & (runs["status"] == "FINISHED")]
    return [float(v) for v in mine[column].dropna()]


def _preamble(
    spec: TableSpec, parent, runs: pd.DataFrame, seeds: list[int], tracking_uri: str, command: str
) -> str:
    tags = parent.data.tags
    profile = tags.get(f"{TAG_PREFIX}profile", "?")
    dataset = tags.get(f"{TAG_PREFIX}dataset", "?")
    finished = int((runs["status"] == "FINISHED").sum()) if not runs.empty else 0
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


def _epilogue(spec: TableSpec, parent, runs: pd.DataFrame) -> str:
    tags = parent.data.tags
    lines = ["Metrics are percentages. \"ours\" rows are this project's runs; \"paper\" columns and \"published\" rows "
             "are the numbers printed in Wang et al. (2018)."]  # fmt: skip
    if tags.get(f"{TAG_PREFIX}profile") == "smoke":
        synthetic = tags.get(f"{TAG_PREFIX}dataset") == "synthetic"
        lines.append(
            f"Smoke profile: {'the embedded synthetic data set' if synthetic else 'the real data set'}, ResNet-18 "
            "from random weights at 96x32 (rows named ResNet-50 use ResNet-18, ResNet-101 uses ResNet-34), a few "
            "epochs on CPU. It checks the whole pipeline and shows differences between rows"
            f"{' on synthetic data' if synthetic else ''}; it is not a reproduction of the paper's numbers."
        )
    networks = tags.get(f"{TAG_PREFIX}networks")
    if networks:
        lines.append(f"Networks: {networks}.")
    return "\n\n".join(lines)


def publish(
    spec: TableSpec, tracking_uri: str, parent_run_id: str, command: str, results_dir: Path
) -> tuple[BuiltTable, list[Path]]:
    """Build the table from the store, draw its figures, write ``<key>.md``, ``<key>.csv`` and
    ``figures/<key>_*.png`` under ``results_dir``."""
    from orchestration.figures import table_figures

    table = build(spec, tracking_uri, parent_run_id, command)
    results_dir.mkdir(parents=True, exist_ok=True)
    figures = table_figures(spec, table.frame, table.runs, tracking_uri, results_dir)
    links = [f"![{p.stem}](figures/{p.name})" for p in figures]
    markdown = table.markdown + ("\n## Figures\n\n" + "\n\n".join(links) + "\n" if links else "")
    table = BuiltTable(table.frame, markdown, table.runs)
    (results_dir / f"{spec.key}.md").write_text(table.markdown)
    table.frame.to_csv(results_dir / f"{spec.key}.csv", index=False, float_format="%.4f")
    return table, [results_dir / f"{spec.key}.md", results_dir / f"{spec.key}.csv", *figures]


def latest_parent(tracking_uri: str, spec: TableSpec) -> str:
    """The most recent finished parent run of ``spec`` in the store."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    if experiment is None:
        raise LookupError(
            f"the store {redact(tracking_uri)} has no experiment '{spec.experiment_name}': run the table first"
        )
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_PREFIX}kind` = 'table' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError(f"no finished run of {spec.key} in {redact(tracking_uri)}: run the table first")
    return runs[0].info.run_id


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
    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        parent = args.parent_run or latest_parent(uri, spec)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = (
        MlflowClient(uri)
        .get_run(parent)
        .data.tags.get(f"{TAG_PREFIX}command", f"python -m orchestration.tables {spec.key}")
    )
    table, paths = publish(spec, uri, parent, command, args.results_dir)
    print(table.markdown)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
