"""The recipe search as a study of the driver: what it places on the cluster, what its parent run and
folder record, and its stages (``orchestration.recipe_search.run``, imported when it runs: Ray's Tune
search algorithms load Ray, which a command imports only after its pre-flight)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mgn.config import ExperimentConfig
from mgn.config_io import to_dict
from mgn.recipe_search import SearchConfig
from orchestration.recipe_search.plan import SCRIPT, TABLE, start_parent
from orchestration.runtime.tracking import Tracker

if TYPE_CHECKING:
    from orchestration.study.driver import Driver


@dataclass(frozen=True)
class SearchStudy:
    search: SearchConfig
    key: str = TABLE
    script: str = SCRIPT
    title: str = "search"
    publishes: str = "report"

    def configs(self) -> list[ExperimentConfig]:
        # A search trial and a final trial share the base recipe's scaling: the base places both.
        return [self.search.validating(self.search.base)]

    def start_parent(self, tracker: Tracker, experiment_id: str, command: str, uri: str) -> str:
        return start_parent(tracker, self.search, experiment_id, command, uri)

    def plan(self) -> dict[str, Any]:
        return {"search": to_dict(self.search)}

    def feature_rows(self) -> tuple[str, ...]:
        return ()

    def model_rows(self) -> tuple[str, ...]:
        return ()  # its networks are recipes under test; --log-checkpoint logs them

    def run(self, driver: Driver) -> int:
        from orchestration.recipe_search.run import run_search

        return run_search(self.search, driver)
