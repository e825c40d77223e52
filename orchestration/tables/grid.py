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
from orchestration.tables.ensembles import evaluate_ensembles, feature_rows
from orchestration.tables.planning import Plan, record, record_parent, trial_specs
from orchestration.tables.render import publish

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

    def run(self, driver: Driver) -> int:
        results = driver.run_trials(TRIALS_STAGE, trial_specs(self.grid))
        return publish_grid(self.grid, driver, failed=driver.report_failures(results))


def publish_grid(plan: Plan, driver: Driver, failed: bool) -> int:
    """Spooled records to the store, ensembles, the table and its figures; the parent run closed."""
    tracker, state, folder = driver.tracker, driver.state, driver.folder
    try:
        check_reachable(tracker.uri)
        driver.replay()
    except Exception as error:  # the store went away: the training is done and kept, say how to finish
        print(
            f"error: the MLflow store {redact(tracker.uri)} is unreachable ({error}). Training is done and nothing "
            f"is lost: checkpoints, features and spooled records are in {folder}. When the store is back, run\n"
            f"  python -m orchestration.runtime.replay {folder} --tracking-uri <uri>\n"
            f"  {state.command} --resume {folder.name}",
            file=sys.stderr,
        )
        return 1
    evaluate_ensembles(plan, folder, tracker, state.parent_run_id)
    table, paths = publish(plan.spec, tracker, state.parent_run_id, state.command, driver.options.results_dir)
    tracker.log_text(state.parent_run_id, table.markdown, f"{plan.spec.key}.md")
    tracker.describe(state.parent_run_id, table.markdown)  # the parent's description is its table
    for figure in (p for p in paths if p.suffix == ".png"):
        tracker.log_artifact(state.parent_run_id, figure, "figures")
    driver.finish(failed=failed)
    print(table.markdown)
    if plan.spec.compare_to:
        print(f"differing from {plan.spec.compare_to} beyond chance (95%, paired bootstrap over the test queries): "
              + ("; ".join(table.significant) or "none"))  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths)}")
    print(driver.runs_banner(RUNS_VIEW_METRICS))
    return 1 if failed else 0
