"""The tracker's own pieces on a local store: system metrics, the runs URL, the shared view."""

from __future__ import annotations

import json
import time

import pytest

from orchestration.runtime.tracking import Tracker, list_order, significant


def test_system_metrics_are_logged_to_the_run_while_inside(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.client.create_run(tracker.experiment("system")).info.run_id
    with tracker.system_metrics(run_id, every_s=0.25):
        time.sleep(1.2)
    metrics = tracker.client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= metrics.keys()
    assert tracker.client.get_run(run_id).info.status == "RUNNING"  # the run is the worker's to end
    first = [m.step for m in tracker.client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    with tracker.system_metrics(run_id, every_s=0.25):  # a restarted attempt of the same trial
        time.sleep(0.8)
    steps = [m.step for m in tracker.client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert len(steps) > len(first) and len(set(steps)) == len(steps), steps  # went on, nothing written twice


def test_the_runs_url_and_its_shared_view(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("view")
    parent = tracker.client.create_run(experiment).info.run_id
    key = tracker.share_runs_view(experiment, parent, ["R1", "mAP"])
    state = json.loads(tracker.client.get_experiment(experiment).tags[f"mlflow.sharedViewState.{key}"])
    assert state["runsExpanded"] == {parent: True} and state["orderByKey"] == "tags.`mgn.row_order`"
    assert state["selectedColumns"][:2] == ["attributes.`Dataset`", "attributes.`Models`"]
    # Every run in the charts (MLflow's default draws 10), Run Name first and wide enough for the names.
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert state["columnOrder"] == ["attributes.`Run Name`", *state["selectedColumns"]]
    assert state["columnWidths"] == {"attributes.`Run Name`": 420}
    # The chart view opens on the headline curves, in their section, kept first.
    assert [c["metricKey"] for c in state["compareRunCharts"]] == ["mAP", "R1", "mINP", "loss"]
    (section,) = state["compareRunSections"]
    assert section["name"] == "Model metrics" and state["isAccordionReordered"]
    assert {c["metricSectionId"] for c in state["compareRunCharts"]} == {section["uuid"]}
    assert "metrics.`mAP`" in state["selectedColumns"]
    assert tracker.runs_url(experiment, key) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?viewStateShareKey={key}&workflowType=machine_learning"
    )
    remote = Tracker("https://user:s3cret@mlflow.example.org/")
    assert (
        remote.runs_url("7")
        == "https://mlflow.example.org/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_a_study_parent_heads_its_rows_in_the_run_list(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("order")
    sweep = tracker.start_parent(experiment, "paper", {"table": "paper"})
    parents = {t: tracker.start_parent(experiment, t, {"table": t}, under=sweep) for t in ("table5", "table2")}
    rows = [(t, i, "") for t in ("table5", "table2") for i in (1, 0, 10)] + [("table5", 1, "e")]
    for table, row, suffix in rows:
        tracker.child(experiment, parents[table], f"{table}-{row}{suffix}", f"{table} row {row}{suffix}",
                      {"row_order": list_order(table, row, suffix)})  # fmt: skip
    listed = tracker.client.search_runs([experiment], order_by=["tags.`mgn.row_order` ASC"])
    assert [r.info.run_name for r in listed] == [
        "paper", "table2", "table2 row 0", "table2 row 1", "table2 row 10",
        "table5", "table5 row 0", "table5 row 1", "table5 row 1e", "table5 row 10",
    ]  # fmt: skip


def test_a_model_uri_is_fetched_once_and_a_run_without_a_model_is_named(tmp_path, monkeypatch):
    """The landed resolver passed on MLflow's "Failed to download artifacts" for a run that logged no
    model, and downloaded the weights again (three progress bars) on every call."""
    import pytest

    from mgn.errors import UsageError
    from orchestration.runtime.model_uris import resolve

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MGN_CACHE", str(tmp_path / "cache"))
    tracker = Tracker(uri)
    experiment = tracker.experiment("model uris")
    bare = tracker.client.create_run(experiment).info.run_id
    with pytest.raises(
        UsageError, match="logged no checkpoint/model.pt: its grid ran without --log-checkpoint"
    ):
        resolve(f"runs:/{bare}")

    logged = tracker.client.create_run(experiment).info.run_id
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    tracker.log_artifact(logged, weights, "checkpoint")
    first = resolve(f"runs:/{logged}")
    assert first.read_bytes() == b"weights"
    monkeypatch.setattr(
        tracker.client.__class__, "download_artifacts", lambda *a, **k: pytest.fail("downloaded twice")
    )
    assert resolve(f"runs:/{logged}") == first


def test_a_database_that_does_not_answer_is_refused_in_seconds_in_one_line():
    """MLflow would retry a silent PostgreSQL for ~100 s, with noise; the check says it at once."""
    import time

    from orchestration.runtime.tracking import TrackingUnavailable, check_reachable
    from tests.servers import free_port

    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable) as refused:
        check_reachable(f"postgresql+psycopg://mlflow:s3cret@127.0.0.1:{port}/mlflow", timeout=2)
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert (
        f"the postgresql server of the tracking store postgresql+psycopg://mlflow:***@127.0.0.1:{port}/mlflow does not answer"
        in message
    )
    assert "s3cret" not in message and "\n" not in message


def test_logged_metrics_carry_the_digits_they_mean(tmp_path):
    """The UI showed an R1 of 26 in 153 queries as 18.30065359477124-like strings of digits."""
    assert significant(100 * 26 / 153) == 16.9935 and significant(2.6e-3) == 2.6e-3
    assert significant(123456.0) == 123456.0 and significant(float("nan")) != significant(float("nan"))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tracker.client.create_run(tracker.experiment("digits")).info.run_id
    tracker.log_metrics(run, {"R1": 100 * 26 / 153, "lr": 1e-4, "loss": 26.686544963291713}, step=3)
    assert tracker.client.get_run(run).data.metrics == {"R1": 16.9935, "lr": 1e-4, "loss": 26.6865}


def test_a_deleted_experiment_and_a_read_only_store_are_named_before_compute(tmp_path, monkeypatch, capsys):
    """A deleted experiment was a traceback from MLflow after the study had started; a read-only
    mlflow.db passed the check and failed once Ray had started."""
    import os

    import pytest

    from orchestration.runtime.tracking import TrackingUnavailable, check_reachable
    from orchestration.tables.command import main
    from tests.orchestration.conftest import grid_args

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    tracker.client.delete_experiment(tracker.experiment("gone"))
    with pytest.raises(TrackingUnavailable, match=r"experiment .gone. was deleted .*\(mlflow experiments restore --experiment-id"):
        tracker.experiment("gone")
    workspace = {"storage": str(tmp_path / "grids"), "uri": uri, "results": str(tmp_path / "results")}
    assert main("table5", grid_args(workspace, "--experiment-name", "gone")) == 2
    assert "was deleted" in capsys.readouterr().err
    # As a user without write permission (the suite runs as root, for whom every file is writable).
    database = str(tmp_path / "mlflow.db")
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != database)
    with pytest.raises(TrackingUnavailable, match=r"the file .*mlflow.db is read-only for this user"):
        check_reachable(uri)


def _open_experiment(uri: str) -> str:
    return Tracker(uri).experiment("race")


@__import__("pytest").mark.integration  # starts processes
def test_studies_opening_one_fresh_store_at_once_all_get_it(tmp_path):
    """Two grids creating a fresh sqlite store at once: the second failed with "duplicate column name"
    (MLflow's table creation raced); every starter now gets the one experiment."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_open_experiment, [uri] * 4)
    assert len(set(ids)) == 1 and [e.name for e in Tracker(uri).client.search_experiments()] == ["race", "Default"]
