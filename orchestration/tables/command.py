"""The command line of the table scripts (``experiments/*_table*.py``): the table's own flags, then its
plan (``orchestration.tables.planning``) checked by the one pre-flight, run by the study driver as a
``GridStudy``. Bad input fails before Ray is imported (``orchestration.study.command``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgn.config import Profile
from mgn.errors import UsageError
from orchestration.study.command import Prepared, open_storage, run_command
from orchestration.study.options import add_run_options, run_options
from orchestration.study.preflight import preflight
from orchestration.tables.grid import GridStudy
from orchestration.tables.planning import describe, grid_folder, make_plan
from orchestration.tables.registry import TABLES
from orchestration.tables.rehearsal import rehearse
from orchestration.tables.resuming import resumed_plan
from orchestration.tables.spec import PaperTable


def parser(spec: PaperTable, script: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=script,
        description=f"Train and regenerate {spec.title} (Wang et al., 2018). Without --data-root it runs the smoke "
        "profile on the embedded synthetic data set.",
    )
    add_trial_options(p, f"folder holding the data set ({spec.dataset.value}); layouts in docs/datasets.md")
    add_run_options(p, spec.experiment_name, "the table is written", f"grid of {spec.key}")
    add_output_options(p)
    return p


def add_trial_options(p: argparse.ArgumentParser, data_root: str) -> None:
    """What every trial trains: recipe, data, rows, seeds, workers (a table script's and the sweep's)."""
    p.add_argument(
        "--profile",
        choices=[p.value for p in Profile],
        help="recipe (default: smoke without --data-root, else paper)",
    )
    p.add_argument(
        "--config", type=Path, help="a YAML file of the full config (the file form of ExperimentConfig)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set train.epochs=5 (repeatable)")  # fmt: skip
    p.add_argument("--data-root", help=data_root)
    p.add_argument("--rows", action="append", metavar="NAME", help="train only these rows (repeatable)")
    p.add_argument("--seeds", type=int, default=1, help="run every row with seeds 0..N-1 (default 1)")
    p.add_argument("--workers", type=int, help="Ray Train workers per trial (scaling.num_workers)")
    p.add_argument("--cpus-per-worker", type=int, help="CPUs per worker (scaling.cpus_per_worker)")
    p.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on GPUs (default: if the cluster has them)",
    )


def add_output_options(p: argparse.ArgumentParser) -> None:
    """What trials log beyond their runs, and the dry run."""
    p.add_argument("--log-checkpoint", action="store_true",
                   help="log each trial's trained embedding network to MLflow: an MLflow Model (ONNX, with "
                        "signature and input example) and the weights file the mgn commands read")  # fmt: skip
    p.add_argument("--register", action="store_true",
                   help="with --log-checkpoint: register each model in MLflow's registry, one name per table row "
                        "(e.g. mgn-table5-mgn), so that `mgn extract models:/mgn-table5-mgn/1` finds it")  # fmt: skip
    p.add_argument("--dry-run", type=int, nargs="?", const=1, metavar="STEPS",
                   help="train every row for STEPS steps (default 1) at full shape and embed one test batch, "
                        "print time and peak memory per row and forecast the grid; no Ray, no MLflow")  # fmt: skip


def prepare(spec: PaperTable, args: argparse.Namespace, command: str) -> Prepared | int:
    """The table's plan checked before compute (or resumed from its folder), or a dry run's exit code."""
    if args.dry_run is not None and args.dry_run < 1:
        raise UsageError(f"--dry-run {args.dry_run}: give at least one step")
    options = run_options(args, log_checkpoint=args.log_checkpoint or args.register, register=args.register)
    plan = make_plan(spec, args)
    print(
        f"{spec.heading(plan.base.data.dataset.value)}: profile {plan.base.profile.value}, {len(plan.rows)} rows x "
        f"{len(plan.seeds)} seeds = {len(plan.configs)} trials"
    )
    folder, state = grid_folder(open_storage(args), spec, plan.base, args.resume)
    if state is not None:
        plan = resumed_plan(spec, args, plan, folder, state)
    checked = preflight(plan.configs, plan.spec.title)
    print("plan (the grid's time left is printed from the measured rate once epochs finish):")
    print("\n".join(describe(plan, checked.shapes)))
    if args.dry_run is not None:
        return rehearse(plan, checked, args.dry_run)
    return Prepared(GridStudy(plan), folder, state, options)


def main(table: str, argv: list[str] | None = None, script: str | None = None) -> int:
    spec = TABLES[table]
    script = script or spec.script
    return run_command(parser(spec, script), script, argv, lambda args, command: prepare(spec, args, command))
