"""The command line of the paper sweep (``experiments/reproduce_paper.py``): the table scripts' own
options, plus which tables and data sets; every table's grid planned as its script would, the
trainings they share counted once, checked by the one pre-flight, run by the driver as a
``SweepStudy``. Bad input fails before Ray is imported (``orchestration.study.command``).
"""

from __future__ import annotations

import argparse

from mgn.config import DatasetName, ExperimentConfig
from mgn.errors import UsageError
from orchestration.study.command import Prepared, open_storage, run_command
from orchestration.study.options import add_run_options, run_options
from orchestration.study.preflight import Preflight, preflight
from orchestration.study.state import StudyState, study_folder
from orchestration.sweep.plan import SweepPlan, trains_on
from orchestration.sweep.study import SCRIPT, SweepStudy
from orchestration.tables.command import add_output_options, add_trial_options
from orchestration.tables.planning import Plan, describe, make_plan
from orchestration.tables.registry import TABLES
from orchestration.tables.rehearsal import rehearse_trials
from orchestration.tables.resuming import plan_flags_given, recorded_plan
from orchestration.tables.spec import PaperTable

SweepKey = tuple[str, str, int]  # a training, by its home: (table, row, seed)

EXPERIMENT_NAME = "MGN paper"
STUDY_KEY = "paper"
REAL_DATASETS = [d.value for d in DatasetName if d not in (DatasetName.SYNTHETIC, DatasetName.CUSTOM)]


def parser(script: str = SCRIPT) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=script,
        description="Train every trial of the paper's Tables 2-5 (Wang et al., 2018) as one study on one cluster, each "
        "network once however many tables read it, then write every table and results/paper.md. Without --data-root "
        "it runs the smoke profile on the embedded synthetic stand-ins.",
    )
    p.add_argument("--tables", nargs="+", choices=sorted(TABLES), metavar="TABLE",
                   help=f"only these tables (default: all of {', '.join(sorted(TABLES))})")  # fmt: skip
    p.add_argument("--datasets", nargs="+", choices=REAL_DATASETS, metavar="DATASET",
                   help=f"only the rows trained on these data sets ({', '.join(REAL_DATASETS)}); without "
                        "--data-root their synthetic stand-ins")  # fmt: skip
    p.add_argument("--cross-domain", action="store_true",
                   help="also test every trained network on the other data sets' test sets (direct transfer: train on "
                        "A, test on B, no adaptation) and write results/cross_domain.md and .csv")  # fmt: skip
    add_trial_options(
        p, "folder holding the data sets, each in its usual folder (Market-1501-v15.09.15/, DukeMTMC-reID/, "
        "cuhk03-np/); layouts in docs/datasets.md",
    )  # fmt: skip
    add_run_options(p, EXPERIMENT_NAME, "the tables and paper.md are written", "paper sweep")
    add_output_options(p)
    return p


def _names_for(spec: PaperTable, rows: list[str] | None) -> tuple[str, ...] | None:
    """The names of ``--rows`` this table knows: ``table5:MGN`` for one table, ``MGN`` for every table
    that has it. None: all rows."""
    if not rows:
        return None
    known = spec.names()
    return tuple(
        name.split(":", 1)[1] if ":" in name else name
        for name in rows
        if (name.split(":", 1)[0] == spec.key and name.split(":", 1)[1] in known) or name in known
    )


def selected_trials(spec: PaperTable, args: argparse.Namespace) -> list[str]:
    """The trials of ``spec`` that ``--rows`` and ``--datasets`` select (rows pull in what they read)."""
    names = _names_for(spec, args.rows)
    if names is not None and not names:
        return []
    trials = [t.name for t in spec.select(names)]
    return [t for t in trials if not args.datasets or trains_on(spec, t) in args.datasets]


def _check_rows(args: argparse.Namespace, tables: list[PaperTable]) -> None:
    unknown = [n for n in args.rows or [] if not any(_names_for(spec, [n]) for spec in tables)]
    if unknown:
        valid = "; ".join(f"{spec.key}: {', '.join(spec.names())}" for spec in tables)
        raise UsageError(
            f"--rows {unknown}: no selected table has such a row (TABLE:ROW or ROW). Valid: {valid}"
        )


def make_plans(args: argparse.Namespace) -> list[Plan]:
    """Each selected table's grid, planned as its own script would plan it."""
    tables = [TABLES[key] for key in sorted(TABLES) if not args.tables or key in args.tables]
    _check_rows(args, tables)
    plans = []
    for spec in tables:
        trials = selected_trials(spec, args)
        if trials:
            plans.append(make_plan(spec, argparse.Namespace(**{**vars(args), "rows": trials})))
        else:
            print(f"{spec.key}: no rows selected by --rows/--datasets; left out")
    if not plans:
        raise UsageError("--rows/--datasets select no trial of any table: widen them (see --help)")
    return plans


def resumed_sweep(args: argparse.Namespace, sweep: SweepPlan, state: StudyState, folder: str) -> SweepPlan:
    """The sweep a folder recorded; the command's own plan only when it is the same."""
    if state.study != STUDY_KEY:
        raise UsageError(f"--resume {folder}: that folder is {state.study}'s, not the paper sweep's")
    recorded = SweepPlan.of(
        [recorded_plan(TABLES[key], grid) for key, grid in state.plan["tables"].items()],
        bool(state.plan.get("cross_domain")),
    )
    given = plan_flags_given(args) or args.tables or args.datasets or args.cross_domain
    if given and sweep.record() != recorded.record():
        raise UsageError(
            f"--resume {folder}: this command's plan differs from the sweep's. Resume with the sweep's own plan "
            f"(leave out --tables, --datasets, --rows, --cross-domain, --set and the other plan flags; it was: "
            f"{state.command})"
        )
    return recorded


def _checked(sweep: SweepPlan) -> tuple[dict[SweepKey, ExperimentConfig], Preflight[SweepKey]]:
    configs: dict[SweepKey, ExperimentConfig] = {
        (t.home.table, t.home.row, t.seed): t.config for t in sweep.trainings
    }
    return configs, preflight(configs, "the paper sweep")


def _describe(sweep: SweepPlan, checked: Preflight[SweepKey]) -> None:
    trainings = len(sweep.trainings)
    print(
        f"plan: {sweep.trials_asked} table trials, {trainings} training{'s' if trainings != 1 else ''} (each network once):"
    )
    for plan in sweep.tables:
        homes = {(row, seed): sweep.training_of(plan.spec.key, row, seed).home for row, seed in plan.configs}
        shapes = {
            (row, seed): checked.shapes[(home.table, home.row, seed)] for (row, seed), home in homes.items()
        }
        print(f"{plan.spec.heading(plan.base.data.dataset.value)}:")
        print("\n".join(describe(plan, shapes)))


def prepare(args: argparse.Namespace, command: str) -> Prepared | int:
    if args.dry_run is not None and args.dry_run < 1:
        raise UsageError(f"--dry-run {args.dry_run}: give at least one step")
    options = run_options(args, log_checkpoint=args.log_checkpoint or args.register, register=args.register)
    sweep = SweepPlan.of(make_plans(args), args.cross_domain)
    profile = sweep.tables[0].base.profile.value
    folder, state = study_folder(open_storage(args), f"{STUDY_KEY}-{profile}", args.resume, "paper sweep")
    if state is not None:
        sweep = resumed_sweep(args, sweep, state, folder.name)
    configs, checked = _checked(sweep)
    _describe(sweep, checked)
    if args.dry_run is not None:
        trials = {f"{key[0]} {key[1]}": key for key in configs if key[2] == sweep.tables[0].seeds[0]}
        return rehearse_trials(trials, configs, len(sweep.tables[0].seeds), checked, args.dry_run)
    parents = dict(state.plan["parents"]) if state else {}
    return Prepared(SweepStudy(sweep, parents), folder, state, options)


def main(argv: list[str] | None = None, script: str = SCRIPT) -> int:
    return run_command(parser(script), script, argv, prepare)
