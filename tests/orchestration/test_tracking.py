"""The tracker's own pieces on a local store: system metrics, the runs URL, the shared view."""

from __future__ import annotations

import json
import time

from orchestration.runtime.tracking import Tracker


def test_system_metrics_are_logged_to_the_run_while_inside(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.client.create_run(tracker.experiment("system")).info.run_id
    with tracker.system_metrics(run_id, every_s=0.5):
        time.sleep(2.5)
    metrics = tracker.client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= metrics.keys()
    assert tracker.client.get_run(run_id).info.status == "RUNNING"  # the run is the worker's to end


def test_the_runs_url_and_its_shared_view(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("view")
    parent = tracker.client.create_run(experiment).info.run_id
    key = tracker.share_runs_view(experiment, parent, ["R1", "mAP"])
    state = json.loads(tracker.client.get_experiment(experiment).tags[f"mlflow.sharedViewState.{key}"])
    assert state["runsExpanded"] == {parent: True} and state["orderByKey"] == "tags.`mgn.row_order`"
    assert state["selectedColumns"][:2] == ["attributes.`Dataset`", "attributes.`Models`"]
    assert "metrics.`mAP`" in state["selectedColumns"]
    assert tracker.runs_url(experiment, key) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?viewStateShareKey={key}&workflowType=machine_learning"
    )
    remote = Tracker("https://user:s3cret@mlflow.example.org/")
    assert (
        remote.runs_url("7")
        == "https://mlflow.example.org/#/experiments/7/runs?workflowType=machine_learning"
    )
