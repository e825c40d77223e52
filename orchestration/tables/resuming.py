"""``--resume`` continues the grid's own plan: its table, its config, its rows and seeds.

A resumed grid whose trials silently trained another config (or another table's rows) would put
two experiments under one parent run. So the grid's folder records its plan, and resuming either
takes it as it is (no config flags given) or refuses, showing each difference.
"""

from __future__ import annotations

import argparse

from mgn.config import ExperimentConfig
from mgn.config_io import flatten, from_dict
from mgn.errors import UsageError
from orchestration.runtime.storage import Storage
from orchestration.study.state import StudyState
from orchestration.tables.planning import Plan, trial_config
from orchestration.tables.spec import PaperTable

# Flags that shape the plan; with none of them, --resume uses the grid's recorded plan.
_PLAN_FLAGS = ("profile", "config", "data_root", "workers", "cpus_per_worker", "gpu", "rows")


def plan_flags_given(args: argparse.Namespace) -> bool:
    return bool(args.overrides) or args.seeds != 1 or any(getattr(args, f) is not None for f in _PLAN_FLAGS)


def recorded_plan(spec: PaperTable, recorded: dict) -> Plan:
    """The grid a folder recorded (``planning.record``), planned again."""
    stored = from_dict(ExperimentConfig, recorded["config"])
    rows, seeds = list(recorded["rows"]), list(recorded["seeds"])
    configs = {(r, s): trial_config(spec.key, stored, r, s) for r in rows for s in seeds}
    return Plan(spec, stored, rows, seeds, configs)


def resumed_plan(
    spec: PaperTable, args: argparse.Namespace, plan: Plan, folder: Storage, state: StudyState
) -> Plan:
    """The plan to continue in ``folder``: the grid's own, or ``plan`` when it is the same."""
    if state.study != spec.key:
        raise UsageError(
            f"--resume {folder.name}: that folder is {state.study}'s, not {spec.key}'s; resume it with its own "
            f"script ({state.command.split(' --', 1)[0]} --resume {folder.name})"
        )
    recorded = recorded_plan(spec, state.plan)
    stored, rows, seeds = recorded.base, recorded.rows, recorded.seeds
    if not plan_flags_given(args):
        return recorded
    theirs, mine = flatten(stored), flatten(plan.base)
    differences = [
        f"{key}: the grid has {theirs.get(key, '(unset)')}, this command {mine.get(key, '(unset)')}"
        for key in sorted(set(theirs) | set(mine))
        if theirs.get(key) != mine.get(key)
    ]
    if rows != plan.rows:
        differences.append(f"rows: the grid has {rows}, this command {plan.rows}")
    if seeds != plan.seeds:
        differences.append(f"seeds: the grid has {seeds}, this command {plan.seeds}")
    if differences:
        raise UsageError(
            f"--resume {folder.name}: this command's plan differs from the grid's:\n  "
            + "\n  ".join(differences)
            + f"\nResume with the grid's own plan (leave out --set, --config, --rows, --seeds and the other plan "
            f"flags; it was: {state.command}), or leave out --resume to start a new grid."
        )
    return plan
