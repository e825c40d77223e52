"""An ensemble row evaluated from its members' stored features: on the parent (what the table reads)
and as a run of its own in the runs list, once however often the grid is published."""

from __future__ import annotations

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from mgn.evaluation import FeatureSet
from mgn.evaluation.protocol import Evaluation
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker
from orchestration.runtime.trial_files import TrialFiles
from orchestration.runtime.worker import save_features
from orchestration.tables.ensembles import evaluate_ensembles
from tests.orchestration.test_paper_tables import _plan

ROW = "G+P2+P3 (Single)"


def _features(rng: np.random.Generator, pids: np.ndarray, cams: np.ndarray) -> FeatureSet:
    centres = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    return FeatureSet(
        torch.from_numpy(centres[pids] + rng.standard_normal((len(pids), 8), dtype=np.float32)), pids, cams
    )


def test_an_ensemble_is_recorded_on_the_parent_and_as_its_own_run(tmp_path):
    plan = _plan("table5", "--rows", ROW)
    members = next(e for e in plan.spec.ensembles if e.name == ROW).members
    grid = Storage.parse(tmp_path / "grid")
    rng = np.random.default_rng(1)
    q_pids, g_pids = np.arange(10).repeat(2), np.arange(10).repeat(4)
    q_cams, g_cams = np.zeros(20, np.int64), np.ones(40, np.int64)
    for member in members:
        query, gallery = _features(rng, q_pids, q_cams), _features(rng, g_pids, g_cams)
        save_features(
            Evaluation({}, np.zeros(1), query, gallery), TrialFiles.of(grid, member, 0).features
        )
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("ensembles")
    parent = tracker.start_parent(experiment, "grid", {"kind": "table"})
    for _ in range(2):  # published twice (a resumed grid): still one run
        evaluate_ensembles(plan, lambda row, seed: TrialFiles.of(grid, row, seed), tracker, parent, log=lambda line: None)

    metrics = tracker.parent(parent).metrics
    (run,) = MlflowClient(tracker.uri).search_runs([experiment], "tags.`mgn.kind` = 'ensemble'")
    assert (
        run.info.run_name == f"{ROW} seed0 (ensemble: {' + '.join(members)})"
        and run.info.status == "FINISHED"
    )
    assert run.data.tags["mgn.row"] == ROW and run.data.tags["mgn.row_order"].endswith("e")
    key = next(k for k in metrics if k.startswith("ensemble/") and k.endswith("/mAP"))
    assert run.data.metrics["mAP"] == metrics[key] > 0
    # MLflow's own columns filled as for a trial; its point at the members' last epoch.
    assert run.data.tags["mlflow.source.name"] == plan.spec.script and run.data.tags["mlflow.user"]
    epochs = plan.configs[(members[0], 0)].train.epochs
    assert [m.step for m in MlflowClient(tracker.uri).get_metric_history(run.info.run_id, "mAP")] == [epochs]
    assert tracker.child_runs(experiment, parent) == []  # not a trial: tables and resume ignore it
