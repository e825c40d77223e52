"""The committed tables in results/ have the format the renderer writes now: a change of format (a
column, the interval or significance notation, a provenance field, the heading) cannot land with
stale results. Regenerate them (docs/contributing.md: "Results that match the code") when this fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mgn.evaluation.bootstrap import Difference, Interval
from orchestration.runtime.tracking import ParentRun
from orchestration.tables.registry import TABLES
from orchestration.tables.render import CellValue, Source, TableData, TableRow, table_markdown
from orchestration.tables.spec import PaperTable
from orchestration.tables.statistics import CellStatistics

RESULTS = Path(__file__).resolve().parents[2] / "results"
INTERVAL = re.compile(r"\d+\.\d\*? \[\d+\.\d, \d+\.\d\]")


def _rendered(spec: PaperTable) -> str:
    """The table as the renderer writes it, from made-up numbers (no store needed)."""
    stats = CellStatistics(Interval(50.0, 40.0, 60.0), Difference(1.0, 0.5, 1.5, 0.01))
    rows = [
        TableRow(row.name, Source.OURS, {c: CellValue((50.0,), stats) for c in (*spec.columns, *spec.extra_columns)},
                 dict(row.paper), row.note)
        for row in spec.rows
    ] + [TableRow(name, Source.PUBLISHED, paper=dict(values)) for name, values in spec.references.items()]  # fmt: skip
    tags = {"profile": "smoke", "dataset": "synthetic", "git_commit": "0" * 12}
    parent = ParentRun("r" * 32, "1", "FINISHED", 0, {}, tags)
    return table_markdown(
        TableData(spec, parent, [], [0], rows, spec.experiment_name), "sqlite:///x.db", "cmd"
    )


def _shape(markdown: str) -> dict[str, object]:
    """What the format is, without the numbers: the heading, the provenance fields, the table's
    header, the footnote kinds, and whether our cells carry the interval notation."""
    lines = markdown.splitlines()
    ours = [line for line in lines if "| ours |" in line]
    return {
        "heading": lines[0],
        "provenance": [
            line.split("|")[1].strip() for line in lines if re.match(r"^\| [a-z ]+ \| .* \|$", line)
        ],
        "header": next(line for line in lines if line.startswith("| Method |")),
        "footnotes": sorted({line.split(":")[0] for line in lines if line.startswith("[")}),
        "intervals": any(INTERVAL.search(line) for line in ours),
    }


@pytest.mark.parametrize("key", sorted(TABLES))
def test_the_committed_table_has_the_renderers_format(key):
    committed = (RESULTS / f"{key}.md").read_text()
    assert _shape(committed) == _shape(_rendered(TABLES[key])), (
        f"results/{key}.md was written by an older renderer: regenerate results/ "
        "(python experiments/reproduce_paper.py --cross-domain)"
    )


def test_the_report_and_the_matrix_are_committed_with_every_table():
    report = (RESULTS / "paper.md").read_text()
    assert all(f"## {TABLES[key].title}" in report for key in TABLES)
    assert "| row | column | ours | 95% interval | paper | verdict |" in report
    assert (RESULTS / "cross_domain.md").exists() and (RESULTS / "cross_domain.csv").exists()
