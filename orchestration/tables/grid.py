"""A table's grid as a study of the driver: one trial per (row, seed), then ensembles and the table.

``GridStudy.run`` = train every trial (``Driver.run_trials``: resumable, longest first), report the
failed ones, replay spooled records, evaluate the ensembles, publish the table and its figures.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mgn.config import ExperimentConfig
from mgn.evaluation import keys
from orchestration.runtime.tracking import Tracker, check_reachable, redact
from orchestration.runtime.trial_files import TrialFiles
from orchestration.tables.ensembles import MemberFiles, evaluate_ensembles, feature_rows, showcase_rows
from orchestration.tables.planning import Plan, record, record_parent, trial_specs
from orchestration.tables.render import BuiltTable, publish

if TYPE_CHECKING:  # the driver imports Ray, which a command loads only after its pre-flight
    from orchestration.study.driver import Driver

TRIALS_STAGE = "tune"  # the grid's Tune experiment, in its folder
RUNS_VIEW_METRICS = [keys.R1, keys.MAP, keys.MINP, keys.reranked(keys.R1), keys.reranked(keys.MAP)]


@dataclass(frozen=True)
class GridStudy:
    """Every (row, seed) of a planned table."""

    grid: Plan
    title: str = "grid"
    publishes: str = "table"

    @property
    def key(self) -> str:
        return self.grid.spec.key

    @property
    def script(self) -> str:
        return self.grid.spec.script

    def configs(self) -> list[ExperimentConfig]:
        return list(self.grid.configs.values())

    def start_parent(self, tracker: Tracker, experiment_id: str, command: str, uri: str) -> str:
        return record_parent(tracker, self.grid, experiment_id, command, uri)

    def plan(self) -> dict[str, Any]:
        return record(self.grid)

    def feature_rows(self) -> tuple[str, ...]:
        return feature_rows(self.grid)

    def model_rows(self) -> tuple[str, ...]:
        return showcase_rows(self.grid)

    def run(self, driver: Driver) -> int:
        results = driver.run_trials(TRIALS_STAGE, trial_specs(self.grid))
        return publish_grid(self.grid, driver, failed=driver.report_failures(results))


def publish_grid(plan: Plan, driver: Driver, failed: bool) -> int:
    """Spooled records to the store, ensembles, the table and its figures; the parent run closed."""
    if not replayed(driver):
        return 1
    publish_table(
        plan, driver, driver.state.parent_run_id, lambda row, seed: TrialFiles.of(driver.folder, row, seed)
    )
    driver.finish(failed=failed)
    print(driver.runs_banner(RUNS_VIEW_METRICS))
    return 1 if failed else 0


def replayed(driver: Driver) -> bool:
    """Whether what trials spooled reached the store; if not, say how to finish (nothing is lost)."""
    tracker, state, folder = driver.tracker, driver.state, driver.folder
    try:
        check_reachable(tracker.uri)
        driver.replay()
        return True
    except Exception as error:  # the store went away: the training is done and kept, say how to finish
        print(
            f"error: the MLflow store {redact(tracker.uri)} is unreachable ({error}). Training is done and nothing "
            f"is lost: checkpoints, features and spooled records are in {folder}. When the store is back, run\n"
            f"  python -m orchestration.runtime.replay {folder} --tracking-uri <uri>\n"
            f"  {state.command} --resume {folder.name}",
            file=sys.stderr,
        )
        return False


def publish_table(plan: Plan, driver: Driver, parent_run_id: str, files: MemberFiles) -> BuiltTable:
    """The ensembles, then the table of ``parent_run_id``'s trials and its figures, written under the
    results folder and logged on the parent (its description is the table)."""
    tracker, state = driver.tracker, driver.state
    evaluate_ensembles(plan, files, tracker, parent_run_id)
    table, paths = publish(plan.spec, tracker, parent_run_id, state.command, driver.options.results_dir)
    tracker.log_text(parent_run_id, table.markdown, f"{plan.spec.key}.md")
    tracker.describe(parent_run_id, table.markdown)
    for figure in (p for p in paths if p.suffix == ".png"):
        tracker.log_artifact(parent_run_id, figure, "figures")
    print(table.markdown)
    if plan.spec.compare_to:
        print(f"differing from {plan.spec.compare_to} beyond chance (95%, paired bootstrap over the test queries): "
              + ("; ".join(table.significant) or "none"))  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return table
