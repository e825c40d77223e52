"""The product's main job end to end on a tiny grid: Tune + Train + MLflow + the table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from orchestration.tables import render as tables
from orchestration.tables.command import main
from orchestration.tables.registry import TABLES
from orchestration.tables.render import table_stem
from tests.orchestration.conftest import GRID_ROWS, grid_args

pytestmark = pytest.mark.integration


def _runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("MGN Table 5")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mgn.kind") == "table"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_two_row_grid_records_every_trial_and_rebuilds_the_table(finished_grid, tmp_path, monkeypatch):
    workspace, rows = finished_grid, GRID_ROWS
    client, parents, children = _runs(workspace["uri"])
    # The grid ends on where its runs open in MLflow's UI, in model-training mode; the experiment's
    # kind makes the UI open on the runs by itself.
    experiment = client.get_experiment_by_name("MGN Table 5")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    last = workspace["out"].strip().splitlines()[-1]
    assert last.startswith(
        "runs: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --app-name mgn --backend-store-uri sqlite:///"
    ) and last.endswith(
        f"then http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey="
        f"mgn-{parents[0].info.run_id[:12]}&workflowType=machine_learning"
    )
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["mgn.row_order"] == "table5"  # heads its rows
    for key in ("table", "profile", "dataset", "git_commit", "command", "networks"):
        assert parent.data.tags[f"mgn.{key}"], key
    assert parent.data.tags["mgn.profile"] == "smoke" and parent.data.tags["mgn.dataset"] == "synthetic"
    assert {c.data.tags["mgn.row"] for c in children} == set(rows)
    for child in children:
        tags, metrics, params = child.data.tags, child.data.metrics, child.data.params
        assert child.info.status == "FINISHED" and tags["mlflow.parentRunId"] == parent.info.run_id
        assert (
            tags["mgn.seed"] == "0" and tags["mgn.device"] == "cpu x1" and tags["mgn.pretrained"] == "false"
        )
        assert tags["mgn.git_commit"] == parent.data.tags["mgn.git_commit"]
        assert (
            params["data.height"] == "64"
            and params["model.backbone"] == "resnet18"
            and params["train.epochs"] == "1"
        )
        for key in ("R1", "R5", "R10", "mAP", "mINP", "untrained/mAP", "loss", "lr", "images_per_second"):
            assert key in metrics, key
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1]
        # The untrained network is the curve's first point; the trained one's its last (what tables read).
        curve = client.get_metric_history(child.info.run_id, "mAP")
        assert [m.step for m in curve] == [0, 1] and curve[0].value == metrics["untrained/mAP"]
        assert metrics["mAP"] == curve[-1].value
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "cmc.csv", "per_query.npz"} <= artifacts
        # How the trial departs from the paper's recipe, its arithmetic, its place in the table.
        assert tags["mgn.amp"] == "false" and tags["mgn.eval_precision"] == "fp32"
        assert "model.backbone=resnet18 (paper: resnet50)" in tags["mgn.deviations"]
        assert tags["mgn.row_order"] == f"table5 {rows.index(tags['mgn.row']):02d}"
        # MLflow's own columns (Source, User, Version, description) and a name that says it is a stand-in.
        assert tags["mlflow.source.name"] == "experiments/ablation_table5.py" and tags["mlflow.user"]
        assert child.info.run_name == f"{tags['mgn.row']} seed0 (resnet18)"
        assert "resnet18" in tags["mlflow.note.content"]
        # The Dataset column: what it trained and was tested on (name, fingerprint, counts).
        inputs = {d.dataset.name: d for d in child.inputs.dataset_inputs}
        assert sorted(inputs) == ["synthetic test", "synthetic train"]
        assert [t.value for t in inputs["synthetic train"].tags] == ["training"]
        counts = json.loads(inputs["synthetic test"].dataset.profile)
        assert set(counts) == {"query", "gallery", "multi_query"} and counts["query"]["images"] > 0
        assert len(inputs["synthetic train"].dataset.digest) == 12
    mgn = next(c for c in children if c.data.tags["mgn.row"] == "MGN")
    assert "branch/Part-3/mAP" in mgn.data.metrics and mgn.data.params["model.branches"] == "[1, 2, 3]"
    # The worker count and what it makes of the batch: 8 images on one worker, BN over all 8.
    assert {k: mgn.data.params[k] for k in ("scaling.num_workers", "scaling.images_per_worker", "model.bn_group",
            "scaling.bn_groups_per_worker", "scaling.workers_per_bn_group")} == {
        "scaling.num_workers": "1", "scaling.images_per_worker": "8", "model.bn_group": "None",
        "scaling.bn_groups_per_worker": "1", "scaling.workers_per_bn_group": "1"}  # fmt: skip

    stem = table_stem(TABLES["table5"], list(rows))  # two rows of fifteen: never over the full table
    assert (
        stem.startswith("table5-subset-resnet-50-tp-mgn-")
        and not (Path(workspace["results"]) / "table5.md").exists()
    )
    written = (Path(workspace["results"]) / f"{stem}.md").read_text()
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["mlflow.note.content"] == written  # the parent's description is its table
    assert parent.info.run_name.startswith("smoke synthetic 2 rows x1 ")
    assert parent.data.tags["mlflow.source.name"] == "experiments/ablation_table5.py"
    assert "profile | smoke" in written and parent.info.run_id in written
    line = next(line for line in written.splitlines() if line.startswith("| MGN | ours"))
    assert f"{mgn.data.metrics['mAP']:.1f}" in line and "86.9" in line  # ours beside the paper's
    assert "G+P2+P3 (Single)" in written  # every row listed, untrained ones empty
    csv = (Path(workspace["results"]) / f"{stem}.csv").read_text()
    assert "MGN" in csv and "mAP paper" in csv
    # Every measured cell has its 95% interval; the other row is tested against MGN, and the console says which differ.
    assert re.search(r"\| MGN \| ours \| [\d.]+ \[[\d.]+, [\d.]+\]", written), written
    assert "95% bootstrap interval over the test queries" in written and "* differs from MGN" in written
    assert {"mAP low", "mAP high", "mAP vs MGN", "mAP p"} <= set(csv.splitlines()[0].split(","))
    assert (
        "differing from MGN beyond chance (95%, paired bootstrap over the test queries): " in workspace["out"]
    )

    _logged_models_load_through_pyfunc_and_the_mgn_commands(workspace, tmp_path, monkeypatch)

    # The table comes back from the store alone, without training.
    again = tmp_path / "again"
    assert tables.main(["table5", "--tracking-uri", workspace["uri"], "--results-dir", str(again)]) == 0
    assert (again / f"{stem}.md").read_text() == written

    # --resume on a finished grid trains nothing and adds no run.
    assert main("table5", grid_args(workspace, "--resume", rows=rows)) == 0
    client, parents, children = _runs(workspace["uri"])
    assert len(parents) == 1 and len(children) == 2
    assert all(len(client.get_metric_history(c.info.run_id, "loss")) == 1 for c in children)


def _logged_models_load_through_pyfunc_and_the_mgn_commands(workspace, tmp_path, monkeypatch) -> None:
    """--register: each trial's network is an MLflow Model (ONNX), version 1 of its row's name; it
    embeds images as the weights file does, through mlflow.pyfunc and through `mgn extract`."""
    import mlflow.pyfunc
    import numpy as np
    import torch

    from mgn.checkpoint import load_model
    from mgn.export import EmbeddingNetwork
    from orchestration.runtime.model_uris import main as mgn  # the installed `mgn` command

    mlflow.set_tracking_uri(workspace["uri"])
    version = MlflowClient(workspace["uri"]).get_model_version("mgn-table5-mgn", "1")
    # The Models tab names each network by its row, logged from the table's script at the run's commit
    # (not "model", "Logged from default_worker.py").
    run = MlflowClient(workspace["uri"]).get_run(version.run_id)
    logged = MlflowClient(workspace["uri"]).search_logged_models([run.info.experiment_id])
    assert {m.name for m in logged} == {"mgn-table5-mgn", "mgn-table5-resnet-50-tp"}
    for model in logged:
        assert model.tags["mlflow.source.name"] == "experiments/ablation_table5.py"
        assert model.tags.get("mlflow.source.git.commit") == run.data.tags.get("mlflow.source.git.commit")
    # What serving it installs: onnx, onnxruntime and numpy, each pinned to the version that logged it.
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/mgn-table5-mgn/1")).read_text().split()
    pins = dict(r.split("==") for r in requirements)
    assert {"onnx", "onnxruntime", "numpy"} <= set(pins) and pins["numpy"] == np.__version__, requirements
    pyfunc = mlflow.pyfunc.load_model("models:/mgn-table5-mgn/1")
    inputs = pyfunc.metadata.get_input_schema().inputs[0]
    assert inputs.name == "images" and tuple(inputs.shape) == (-1, 3, 64, 32)
    weights = MlflowClient(workspace["uri"]).download_artifacts(
        version.run_id, "checkpoint/model.pt", str(tmp_path)
    )
    model, config = load_model(weights)
    images = torch.rand(3, 3, 64, 32)
    with torch.no_grad():
        expected = EmbeddingNetwork(model, flip=config.eval.flip).eval()(images).numpy()
    ours = pyfunc.predict(images.numpy())
    ours = next(iter(ours.values())) if isinstance(ours, dict) else np.asarray(ours)
    np.testing.assert_allclose(ours, expected, atol=1e-4)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace["uri"])
    monkeypatch.setenv("MGN_CACHE", str(tmp_path / "cache"))  # where the downloaded model is kept
    query = next(Path(config.data.root or "").glob("**/query"), None) if config.data.root else None
    folder = query or _synthetic_query_folder(config)
    out = tmp_path / "query.npz"
    assert mgn(["extract", "models:/mgn-table5-mgn/1", str(folder), "--out", str(out)]) == 0
    assert mgn(["extract", f"runs:/{version.run_id}", str(folder), "--out", str(tmp_path / "again.npz")]) == 0
    np.testing.assert_array_equal(np.load(out)["features"], np.load(tmp_path / "again.npz")["features"])
    assert mgn(["extract", "models:/mgn-table5-mgn/7", str(folder), "--out", str(out)]) == 2


def _synthetic_query_folder(config) -> Path:
    from mgn.data.loading import read_dataset

    return Path(read_dataset(config.data).query[0].path).parent


def test_two_worker_trial_runs_a_real_ddp_worker_group(workspace):
    assert main("table5", grid_args(workspace, "--workers", "2", rows=("ResNet-50+TP",))) == 0
    _, _, children = _runs(workspace["uri"])
    (child,) = children
    assert child.data.tags["mgn.device"] == "cpu x2" and child.info.status == "FINISHED"
    assert child.data.params["scaling.num_workers"] == "2" and "mAP" in child.data.metrics
    # Each worker computes 4 of the 8 images; the whole-batch BN group spans both workers.
    assert child.data.params["scaling.images_per_worker"] == "4"
    assert child.data.params["scaling.workers_per_bn_group"] == "2"
    mlflow.set_tracking_uri(None)
