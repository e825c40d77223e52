"""The paper sweep's plan, without Ray: which trials are one training, who owns it, who reads it;
the report's verdicts; bad input refused before compute."""

from __future__ import annotations

import pytest

from mgn.evaluation.bootstrap import Interval
from orchestration.sweep.command import main, make_plans, parser
from orchestration.sweep.plan import SweepPlan, fingerprint
from orchestration.sweep.report import Verdict, verdict
from orchestration.tables.render import CellValue
from orchestration.tables.statistics import CellStatistics
from tests.orchestration.conftest import grid_args


def _sweep(*flags: str) -> SweepPlan:
    return SweepPlan.of(make_plans(parser().parse_args(list(flags))))


def test_two_tables_asking_for_the_same_network_plan_one_training():
    sweep = _sweep("--tables", "table2", "table5", "--rows", "MGN", "--rows", "table5:MGN w/o TP")
    assert sweep.trials_asked == 3 and len(sweep.trainings) == 2
    shared = sweep.training_of("table5", "MGN", 0)
    assert shared is sweep.training_of("table2", "MGN", 0)
    assert [(r.table, r.row) for r in shared.readers] == [("table2", "MGN"), ("table5", "MGN")]
    # The training asks for every evaluation its readers ask for: Table 2's multiple query, which
    # Table 5's own config does not ask for.
    assert shared.config.eval.multi_query and not sweep.table("table5").configs[("MGN", 0)].eval.multi_query
    parents = {"table2": "p2", "table5": "p5"}
    assert sweep.shared_rows("table2", parents) == {}
    assert sweep.shared_rows("table5", parents) == {"MGN": {"parent": "p2", "row": "MGN"}}
    specs = sweep.trial_specs(
        parents, {"table2": "experiments/market_table2.py", "table5": "experiments/ablation_table5.py"}
    )
    homes = sorted((s.home.table, s.row, s.home.parent_run_id) for s in specs)
    assert homes == [("table2", "MGN", "p2"), ("table5", "MGN w/o TP", "p5")]
    tags = dict(next(s for s in specs if s.row == "MGN").tags)
    assert tags["read_by"] == "table2 MGN; table5 MGN" and tags["fingerprint"] == shared.fingerprint


@pytest.mark.parametrize("flags", [(), ("--profile", "paper", "--data-root", "/datasets")])
def test_the_whole_paper_trains_one_network_fewer_than_its_tables_ask(flags):
    """Tables 2-5 ask for 15 trials (Table 2: 1, Table 3: 1, Table 4: 2, Table 5: 11 trained rows);
    Table 2's MGN is Table 5's, so 14 trainings, per seed."""
    sweep = _sweep(*flags, "--seeds", "3")
    assert sweep.trials_asked == 45 and len(sweep.trainings) == 42
    assert {(r.table, r.row) for t in sweep.trainings if len(t.readers) > 1 for r in t.readers} == {
        ("table2", "MGN"),
        ("table5", "MGN"),
    }


def test_networks_trained_on_different_data_are_not_shared():
    """Table 3's stand-in for DukeMTMC-reID has 8 cameras: not Table 2's network."""
    sweep = _sweep("--tables", "table2", "table3")
    assert len(sweep.trainings) == 2
    assert fingerprint(sweep.table("table2").configs[("MGN", 0)]) != fingerprint(
        sweep.table("table3").configs[("MGN", 0)]
    )


def test_datasets_select_the_rows_trained_on_them():
    sweep = _sweep("--datasets", "cuhk03_detected", "dukemtmc")
    assert [(p.spec.key, p.rows) for p in sweep.tables] == [
        ("table3", ["MGN"]),
        ("table4", ["MGN (detected)"]),
    ]


def _cell(low: float, high: float) -> CellValue:
    return CellValue((15.0,), CellStatistics(Interval(15.0, low, high), None))


@pytest.mark.parametrize(
    ("paper", "expected"),
    [
        (15.0, Verdict.WITHIN),
        (10.0, Verdict.WITHIN),
        (20.5, Verdict.BELOW),
        (9.9, Verdict.ABOVE),
        (None, Verdict.UNKNOWN),
    ],
)
def test_verdict_places_the_papers_figure_against_our_interval(paper, expected):
    assert verdict(_cell(10.0, 20.0), paper) is expected
    assert verdict(CellValue((15.0,), None), 15.0) is Verdict.UNKNOWN  # no per-query values


def _fails(capsys, args: list[str], *expected: str) -> None:
    assert main(args) == 2
    message = capsys.readouterr().err
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"


def test_an_unknown_row_names_every_tables_rows(capsys, workspace):
    _fails(capsys, grid_args(workspace, "--tables", "table2", rows=("MGN w/o TP",)),
           "--rows ['MGN w/o TP']: no selected table has such a row", "table2: MGN (Ours)")  # fmt: skip


def test_data_sets_no_selected_table_trains_on_are_refused(capsys, workspace):
    _fails(capsys, grid_args(workspace, "--tables", "table5", "--datasets", "dukemtmc", rows=()),
           "select no trial of any table")  # fmt: skip


def test_an_unknown_table_or_data_set_is_an_argument_error(capsys, workspace):
    for flags in (("--tables", "table7"), ("--datasets", "msmt17")):
        with pytest.raises(SystemExit) as stopped:
            main(grid_args(workspace, *flags, rows=()))
        assert stopped.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_resume_refuses_a_table_scripts_folder(capsys, workspace):
    from orchestration.runtime.storage import Storage
    from orchestration.study.state import StudyState

    folder = Storage.parse(workspace["storage"]) / "paper-smoke-20261203-000000-abcdef"
    StudyState(
        "table5", "parent", "1", "MGN Table 5", "python experiments/ablation_table5.py", "2026-12-03", {}
    ).write(folder)
    _fails(
        capsys,
        grid_args(workspace, "--resume", folder.name, rows=()),
        "that folder is table5's, not the paper sweep's",
    )
