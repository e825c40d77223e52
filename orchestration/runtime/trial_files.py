"""One home for a trial's files: its folder in study storage and the artifacts its MLflow run holds.

A trial's folder (``TrialFiles``) outlives every process of the trial: the driver, a resumed driver,
the ensembles and the search's choice read it. Its artifacts are what the tables and figures
download from the run. Writers and readers both name them from here, so a new file is added once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestration.runtime.naming import slug
from orchestration.runtime.storage import Storage

KEEP_CHECKPOINTS = 2  # Ray keeps this many per trial: the newest, and one to fall back on
# Reported after every epoch but the last: the time early stopping (ASHA) judges by. Were the last
# epoch judged too, a trial could be stopped after its training, before its final records and marker.
ONGOING_EPOCH = "ongoing_epoch"

# In the trial's folder (study storage).
DONE_FILE = "done.json"  # written last: the trial is finished, whatever the Tune state says
DIVERGED_FILE = "diverged.txt"  # the weights went non-finite: the trial ended, without a result
FEATURES_FILE = "features.pt"  # test features of an ensemble member
SPOOL_DIR = "mlflow-spool"  # MLflow records written while the store was away

# In the trial's MLflow run.
CMC_ARTIFACT = "cmc.csv"  # the CMC curve, ranks 1..50
PER_QUERY_ARTIFACT = "per_query.npz"  # each figure per test query: the tables' intervals
MODEL_FOLDER = "checkpoint"  # --log-checkpoint: the weights file the mgn commands read
MODEL_ARTIFACT = f"{MODEL_FOLDER}/model.pt"
RANK_LIST_ARTIFACT = "rank_list.png"
ATTENTION_ARTIFACT = "attention.png"
ATTENTION_MAPS_ARTIFACT = "attention_maps.npz"


@dataclass(frozen=True)
class TrialFiles:
    """The folder of one (row, seed) of a study: ``<study>/trials/<row slug>/seed<n>``, the same
    folder when the study is resumed."""

    folder: Storage

    @classmethod
    def of(cls, study: Storage, row: str, seed: int) -> TrialFiles:
        return cls(study / "trials" / slug(row) / f"seed{seed}")

    @property
    def done(self) -> Storage:
        return self.folder / DONE_FILE

    @property
    def diverged(self) -> Storage:
        return self.folder / DIVERGED_FILE

    @property
    def features(self) -> Storage:
        return self.folder / FEATURES_FILE

    @property
    def spool(self) -> Storage:
        return self.folder / SPOOL_DIR

    def finished(self) -> bool:
        return self.done.exists()

    def ended(self) -> bool:
        """Finished or diverged: nothing more will come of it, whatever Tune says."""
        return self.done.exists() or self.diverged.exists()

    def result(self) -> dict[str, Any]:
        """The last report of a finished trial (its final metrics)."""
        return json.loads(self.done.read_text())
