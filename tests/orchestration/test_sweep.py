"""The paper sweep end to end on the tiny synthetic set: three tables, one network trained once and
read by two, Table 5 equal to its own script's, the report, the cross-domain matrix, and a resume
that trains nothing."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestration.sweep.command import main
from orchestration.tables.registry import TABLES
from orchestration.tables.render import table_stem
from tests.orchestration.conftest import GRID_ROWS, grid_args

pytestmark = pytest.mark.integration


def _rows(markdown: str) -> list[str]:
    """The table's rows of ours (the numbers), without the provenance lines."""
    return [line for line in markdown.splitlines() if line.startswith("| ") and "| ours |" in line]


def _sweep(workspace: dict[str, str], *extra: str) -> str:
    console = io.StringIO()
    rows = ("MGN", *(f"table5:{row}" for row in GRID_ROWS if row != "MGN"))
    with contextlib.redirect_stdout(console):
        assert main(grid_args(workspace, "--tables", "table2", "table3", "table5", *extra, rows=rows)) == 0
    return console.getvalue()


def test_two_tables_train_their_shared_network_once_and_equal_their_scripts(finished_grid, workspace):
    out = _sweep(workspace, "--cross-domain")
    client = MlflowClient(workspace["uri"])
    experiment = client.get_experiment_by_name("MGN paper")
    runs = client.search_runs([experiment.experiment_id])
    (sweep,) = [r for r in runs if r.data.tags.get("mgn.kind") == "sweep"]
    tables = {r.data.tags["mgn.table"]: r for r in runs if r.data.tags.get("mgn.kind") == "table"}
    trials = sorted(
        (r for r in runs if "mgn.fingerprint" in r.data.tags), key=lambda r: r.data.tags["mgn.table"]
    )
    # Four table trials, three trainings: Market's MGN once, in Table 2 (the first that asks), read by Table 5.
    assert sorted((t.data.tags["mgn.table"], t.data.tags["mgn.row"]) for t in trials) == [
        ("table2", "MGN"),
        ("table3", "MGN"),
        ("table5", "ResNet-50+TP"),
    ]
    assert all(
        t.data.tags["mlflow.parentRunId"] == tables[t.data.tags["mgn.table"]].info.run_id for t in trials
    )
    assert all(t.data.tags["mlflow.parentRunId"] == sweep.info.run_id for t in tables.values())
    assert {r.info.status for r in [sweep, *tables.values(), *trials]} == {"FINISHED"}
    assert "3 trainings (each network once)" in out and "4 table trials" in out
    results = Path(workspace["results"])
    table5 = (results / f"{table_stem(TABLES['table5'], list(GRID_ROWS))}.md").read_text()
    table2 = (results / "table2.md").read_text()
    # Table 5 from the sweep is Table 5 from its own script (the session's grid: same rows, seed, recipe).
    alone = (
        Path(finished_grid["results"]) / f"{table_stem(TABLES['table5'], list(GRID_ROWS))}.md"
    ).read_text()
    assert _rows(table5) == _rows(alone)
    assert (
        "Regenerate it from the store with `python -m orchestration.tables table5 --experiment-name 'MGN paper'`"
        in table5
    )
    # Both tables read the one MGN run: Table 2's single-query R1 is Table 5's MGN R1.
    (mgn,) = [line for line in _rows(table5) if line.startswith("| MGN |")]
    (ours,) = [line for line in _rows(table2) if line.startswith("| MGN (Ours) |")]
    assert mgn.split("|")[3] == ours.split("|")[3]
    report = (results / "paper.md").read_text()
    assert "## Table 2: Market-1501" in report and "## Table 5: ablations" in report
    assert re.search(
        r"\| MGN \| R1 \| [\d.]+ \| \[[\d.]+, [\d.]+\] \| 95\.7 \| (we are below the paper|paper inside our interval|we are above the paper) \|",
        report,
    )
    assert "rows shared with table2" in report and "1 training(s)" in report

    # Cross-domain: every network on both test sets; its own on the diagonal, the other as logged.
    matrix = pd.read_csv(results / "cross_domain.csv")
    assert len(matrix) == 3 * 2 * 2 and matrix["mean"].notna().all()
    market = trials[0]  # table2 MGN
    cells = matrix[matrix["network"] == "table2 MGN"].set_index(["tested on", "metric"])["mean"]
    assert cells[("market1501", "mAP")] == pytest.approx(market.data.metrics["mAP"], abs=1e-3)
    assert cells[("dukemtmc", "mAP")] == pytest.approx(market.data.metrics["transfer/dukemtmc/mAP"], abs=1e-3)
    assert "| table3 MGN | dukemtmc |" in (results / "cross_domain.md").read_text()

    # A resumed sweep (a driver that died after training) trains nothing again and publishes again.
    folder = re.search(r"^sweep (\S+)$", out, re.M).group(1)
    _sweep(workspace, "--cross-domain", "--resume", Path(folder).name)
    again = [r for r in client.search_runs([experiment.experiment_id]) if "mgn.fingerprint" in r.data.tags]
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in trials)
    assert _rows((results / f"{table_stem(TABLES['table5'], list(GRID_ROWS))}.md").read_text()) == _rows(
        table5
    )
