"""The paper sweep as a study of the driver: every training of every selected table in one Tune
experiment on one cluster (longest first), then each table published from its own parent run,
then the reproduction report.

MLflow: one experiment ("MGN paper"), the sweep's run, under it one parent run per table (so the
table files, the UI and ``python -m orchestration.tables <key> --experiment-name 'MGN paper'``
work as for a table script), under each its trials. A training read by several tables is a child
of the first; the others name it in their ``mgn.shared_rows`` tag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mgn.config import ExperimentConfig
from orchestration.runtime.tracking import Tracker, git_commit, redact, source_tags
from orchestration.runtime.trial import result_title, trial_name, trial_results
from orchestration.runtime.trial_files import TrialFiles
from orchestration.sweep.cross_domain import publish_matrix
from orchestration.sweep.plan import SweepPlan
from orchestration.sweep.report import publish_report
from orchestration.tables.ensembles import feature_rows, showcase_rows
from orchestration.tables.grid import RUNS_VIEW_METRICS, publish_table, replayed
from orchestration.tables.planning import record_parent
from orchestration.tables.render import SHARED_ROWS_TAG, BuiltTable

if TYPE_CHECKING:
    from orchestration.study.driver import Driver

SCRIPT = "experiments/reproduce_paper.py"
TRIALS_STAGE = "tune"


@dataclass
class SweepStudy:
    """The selected tables' trainings, each once; ``parents`` (table -> parent run) once recorded."""

    sweep: SweepPlan
    parents: dict[str, str] = field(default_factory=dict)
    key: str = "paper"
    script: str = SCRIPT
    title: str = "sweep"
    publishes: str = "table or report"

    def configs(self) -> list[ExperimentConfig]:
        return [t.config for t in self.sweep.trainings]

    def start_parent(self, tracker: Tracker, experiment_id: str, command: str, uri: str) -> str:
        tables = [plan.spec.key for plan in self.sweep.tables]
        description = (
            f"The paper's {', '.join(tables)}: {len(self.sweep.trainings)} trainings for "
            f"{self.sweep.trials_asked} table trials. The reproduction report replaces this description."
            f"\n\n`{command}`"
        )
        tags = {"kind": "sweep", "table": self.key, "tables": json.dumps(tables), "git_commit": git_commit(),
                "command": command, "tracking_uri": redact(uri),
                "cross_domain": str(self.sweep.cross_domain).lower()}  # fmt: skip
        sweep = tracker.start_parent(
            experiment_id, f"paper: {' '.join(tables)}", tags, source_tags(command, description)
        )
        for plan in self.sweep.tables:  # in paper order: a shared training's home exists before its readers
            shared = {SHARED_ROWS_TAG: json.dumps(self.sweep.shared_rows(plan.spec.key, self.parents))}
            self.parents[plan.spec.key] = record_parent(
                tracker, plan, experiment_id, command, uri, under=sweep, tags=shared
            )
        return sweep

    def plan(self) -> dict[str, Any]:
        return {**self.sweep.record(), "parents": self.parents}

    def feature_rows(self) -> tuple[str, ...]:
        return tuple(sorted({row for plan in self.sweep.tables for row in feature_rows(plan)}))

    def model_rows(self) -> tuple[str, ...]:
        return tuple(sorted({row for plan in self.sweep.tables for row in showcase_rows(plan)}))

    def run(self, driver: Driver) -> int:
        scripts = {plan.spec.key: plan.spec.script for plan in self.sweep.tables}
        results = driver.run_trials(TRIALS_STAGE, self.sweep.trial_specs(self.parents, scripts))
        failed = driver.report_failures(results)
        errored = {result_title(r) for r in trial_results(results) if r.error is not None}
        if not replayed(driver):
            return 1
        tables = [self._publish(plan.spec.key, driver, errored) for plan in self.sweep.tables]
        tracker, state, results_dir = driver.tracker, driver.state, driver.options.results_dir
        written = [publish_report(tables, tracker, state.parent_run_id, state.command, results_dir)]
        if self.sweep.cross_domain:
            parents = [tracker.parent(run_id) for run_id in self.parents.values()]
            written += publish_matrix(tracker, parents, state.command, results_dir)
        tracker.describe(state.parent_run_id, written[0].read_text())
        for path in written:
            tracker.log_artifact(state.parent_run_id, path)
        driver.finish(failed=failed)
        print(f"wrote {', '.join(map(str, written))}")
        print(driver.runs_banner(RUNS_VIEW_METRICS))
        return 1 if failed else 0

    def _publish(self, table: str, driver: Driver, errored: set[str]) -> BuiltTable:
        """One table from its parent's runs (and the rows it shares), its parent run closed."""
        plan = self.sweep.table(table)

        def files(row: str, seed: int) -> TrialFiles:
            home = self.sweep.training_of(table, row, seed).home
            return TrialFiles.of(driver.folder / home.table, home.row, seed)

        built = publish_table(plan, driver, self.parents[table], files)
        homes = {(row, seed): self.sweep.training_of(table, row, seed).home for row, seed in plan.configs}
        failed = any(trial_name(home.row, seed, home.table) in errored for (_, seed), home in homes.items())
        driver.tracker.finish(self.parents[table], failed=failed)
        return built
