"""Beyond one machine: a Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``, a
real raylet per node), grid storage in an S3-compatible object store (moto) and an MLflow server on
PostgreSQL with its artifacts in that store. Nothing here shares a folder through the grid: every
checkpoint, done marker and Tune state goes through S3, every record through the server."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration.tables.command import main
from tests.orchestration.conftest import grid_args
from tests.orchestration.driver import Process, children, faults_env
from tests.servers import ObjectStore, free_port

pytestmark = pytest.mark.integration
CHECKPOINTING = ["--set", "train.epochs=3", "--set", "train.checkpoint_every=1"]
METRICS = ("R1", "R5", "mAP", "mINP", "loss")


class NodeCaches:
    """Each worker node's own ``$MGN_CACHE`` (nodes share no disk, not even a cache), by node."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory, self.by_node = factory, {}

    def add_worker(self, cluster) -> None:
        folder = self.factory.mktemp("node-cache")
        node = cluster.add_node(num_cpus=1, env_vars={"MGN_CACHE": str(folder)})
        self.by_node[node] = folder

    def of(self, cluster) -> list[Path]:
        """The caches of the worker nodes alive now (a lost node's went with it)."""
        return [self.by_node[node] for node in cluster.worker_nodes]


@pytest.fixture(scope="module")
def node_caches(tmp_path_factory: pytest.TempPathFactory) -> NodeCaches:
    return NodeCaches(tmp_path_factory)


@pytest.fixture(scope="module")
def cluster(object_store: ObjectStore, node_caches: NodeCaches) -> Iterator:
    """A head node that only runs trial drivers (0 CPUs) and two 1-CPU worker nodes, on this machine's
    address (a GCS bound to 127.0.0.1 is unreachable: Ray rewrites a loopback --address to the node's
    IP). The nodes inherit this process's environment: the object store's endpoint and credentials."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 0,
            "resources": {"TRAIN_DRIVER": 4},
            "include_dashboard": True,  # its State API keeps Train-inside-Tune from hanging (ray#54305)
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),
            # A killed node's raylet refuses the GCS's health checks at once: declare it dead after 3 of
            # them a second apart (Ray's default, 5 every 3 s, adds 12 s to the lost-node test). Each
            # check still waits Ray's 10 s before a live but busy node counts as failing one.
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    try:
        for _ in range(2):
            node_caches.add_worker(cluster)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def _workspace(storage: str, uri: str, tmp_path: Path, name: str) -> dict[str, str]:
    return {"storage": storage, "uri": uri, "results": str(tmp_path / name / "results")}


def test_stores_that_one_machine_alone_can_write_are_refused_before_compute(
    cluster, object_store, tracking_server, tmp_path, capsys
):
    bucket = object_store.bucket("refusals")
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    on_sqlite = _workspace(f"s3://{bucket}/grids", sqlite, tmp_path, "sqlite")
    assert main("table5", grid_args(on_sqlite, "--address", cluster.address)) == 2
    error = capsys.readouterr().err
    assert "is a file on this machine, and the Ray cluster has 3 nodes" in error
    assert "mlflow server" in error and "postgresql://" in error and "--tracking-uri" in error
    experiment = MlflowClient(sqlite).get_experiment_by_name("MGN Table 5")
    assert MlflowClient(sqlite).search_runs([experiment.experiment_id]) == []  # no parent, no trial

    on_disk = _workspace(str(tmp_path / "ray_results"), tracking_server, tmp_path, "disk")
    assert (
        main("table5", grid_args(on_disk, "--address", cluster.address, "--experiment-name", "refused")) == 2
    )
    error = capsys.readouterr().err
    assert "is a folder on this machine" in error and "s3://" in error and "--shared-storage" in error
    assert children(tracking_server, "refused") == []
    assert [k for k in object_store.keys(bucket) if not k.endswith("/")] == []  # nothing but the folder


def test_a_lost_node_is_replaced_and_the_trial_resumes_from_its_checkpoint_in_s3(
    cluster, node_caches, object_store, tracking_server, tmp_path
):
    bucket = object_store.bucket("lost-node")
    row = ("ResNet-50+TP",)
    common = ["--address", cluster.address, "--workers", "2", *CHECKPOINTING]
    reference = Process(
        grid_args(_workspace(f"s3://{bucket}/reference", tracking_server, tmp_path, "reference"), *common,
                  "--experiment-name", "lost node, reference", rows=row)
    )  # fmt: skip
    assert reference.finish() == 0, "".join(reference.lines)

    (tmp_path / "pause-resnet-50-tp").touch()  # both workers wait after epoch 1
    driver = Process(
        grid_args(_workspace(f"s3://{bucket}/faulty", tracking_server, tmp_path, "faulty"), *common,
                  "--experiment-name", "lost node", rows=row),
        env=faults_env(pause_file=str(tmp_path / "pause")),
    )  # fmt: skip
    driver.wait_for(r"ResNet-50\+TP seed0: epoch 1/3")
    (run,) = children(tracking_server, "lost node")
    ranks = json.loads(run.data.tags["mgn.worker_nodes"])
    assert len(set(ranks)) == 2  # the two DDP workers run on different nodes
    # The node of rank 1 is lost (every process of it killed); a fresh one joins, as an autoscaler's would.
    cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == ranks[1]), allow_graceful=False)
    node_caches.add_worker(cluster)
    (tmp_path / "pause-resnet-50-tp").unlink()
    assert driver.finish() == 0, "".join(driver.lines)
    # The console names the restart, its epoch and its nodes (Ray's own lines are not for people).
    assert re.search(
        r"warning from ResNet-50\+TP seed0: its worker group started again \(attempt 2: .*\) from epoch 1, "
        r"on node\(s\) \w{8}, \w{8}$",
        "".join(driver.lines),
        re.M,
    ), "".join(driver.lines)

    (faulty,), (clean,) = (
        children(tracking_server, "lost node"),
        children(tracking_server, "lost node, reference"),
    )
    assert faulty.info.status == "FINISHED"
    assert faulty.data.tags["mgn.attempts"] == "2" and faulty.data.tags["mgn.resumed_from_epoch"] == "1"
    assert ranks[1] not in json.loads(faulty.data.tags["mgn.worker_nodes"])  # restarted on the new node
    client = MlflowClient(tracking_server)
    assert [m.step for m in client.get_metric_history(faulty.info.run_id, "loss")] == [1, 2, 3]
    for key in METRICS:
        assert faulty.data.metrics[key] == clean.data.metrics[key], key
    # Checkpoints went to the bucket through Ray Train (newest two kept); artifacts to the server's store.
    keys = object_store.keys(bucket, "faulty/")
    checkpoints = {
        k.rsplit("/", 2)[-2] for k in keys if "/train/train-" in k and k.endswith("/checkpoint.pt")
    }
    assert len(checkpoints) == 2, keys
    assert any(k.endswith("/study.json") for k in keys) and any("/tune/" in k for k in keys)
    assert any(k.endswith("/done.json") for k in keys)
    artifacts = object_store.keys("mlflow", "artifacts/")
    assert any(faulty.info.run_id in k and k.endswith("cmc.csv") for k in artifacts)


def test_a_killed_driver_resumes_from_object_storage_without_retraining_finished_trials(
    cluster, object_store, tracking_server, tmp_path
):
    bucket = object_store.bucket("killed-driver")
    workspace = _workspace(f"s3://{bucket}/grids", tracking_server, tmp_path, "grid")
    rows = ("ResNet-50+TP", "MGN")
    common = ["--address", cluster.address, "--experiment-name", "killed driver", *CHECKPOINTING]
    (tmp_path / "pause-mgn").touch()  # MGN waits after its second epoch, ResNet-50+TP runs through
    driver = Process(
        grid_args(workspace, *common, rows=rows),
        env={**faults_env(pause_file=str(tmp_path / "pause"), pause_from_epoch=2), "TUNE_GLOBAL_CHECKPOINT_S": "1"},
    )  # fmt: skip
    driver.wait_for(r"finished ResNet-50\+TP seed0")
    driver.wait_for(r"MGN seed0: epoch 2/3")
    time.sleep(3)  # Tune's experiment state (saved every second here) records MGN's epoch-2 checkpoint
    driver.kill()
    (tmp_path / "pause-mgn").unlink()

    # MGN's newest checkpoint in the bucket is truncated: the resumed trial falls back to epoch 1's.
    keys = object_store.keys(bucket, "grids/")
    newest = sorted(k for k in keys if "-mgn-seed0/checkpoint_" in k and k.endswith("checkpoint.pt"))[-1]
    _truncate(object_store, bucket, newest)

    resumed = Process(grid_args(workspace, *common, "--resume", rows=rows))
    assert resumed.finish() == 0, "".join(resumed.lines)
    log = "".join(resumed.lines)
    assert f"checkpoint {bucket}/{newest.rsplit('/', 1)[0]} is corrupt; falling back" in log
    assert "ResNet-50+TP seed0: epoch" not in log  # the finished trial was not trained again
    runs = children(tracking_server, "killed driver")
    assert sorted(r.data.tags["mgn.row"] for r in runs) == ["MGN", "ResNet-50+TP"]  # one run per trial
    mgn = next(r for r in runs if r.data.tags["mgn.row"] == "MGN")
    assert mgn.info.status == "FINISHED" and mgn.data.tags["mgn.resumed_from_epoch"] == "1"
    client = MlflowClient(tracking_server)
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]


def _truncate(store: ObjectStore, bucket: str, key: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=store.endpoint)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:1000])


def test_a_worker_no_node_can_hold_is_refused_after_a_bounded_wait(
    cluster, tracking_server, tmp_path, capsys
):
    """Two 1-CPU nodes hold 2 CPUs, but never a 2-CPU trial: Tune used to wait for it forever."""
    workspace = _workspace(str(tmp_path / "ray_results"), tracking_server, tmp_path, "unplaceable")
    args = grid_args(workspace, "--address", cluster.address, "--shared-storage", "--workers", "1",
                     "--cpus-per-worker", "2", "--placement-timeout", "3", "--experiment-name", "unplaceable")  # fmt: skip
    started = time.monotonic()
    assert main("table5", args) == 2
    assert 3 <= time.monotonic() - started < 60
    error = capsys.readouterr().err
    assert "no node of the Ray cluster can hold a trial after waiting 3 s" in error
    assert "a trial needs 2 CPU" in error and "the largest live node has 1 CPU" in error
    assert children(tracking_server, "unplaceable") == []


def test_a_sweep_reads_its_data_sets_from_the_bucket_once_per_node(
    cluster, node_caches, object_store, tracking_server, tmp_path
):
    """The data set exists only in the bucket; two tables' MGN (one network, trained once) runs as a
    2-worker group over both nodes; each node, and the driver's machine, downloads it once."""
    from orchestration.datasets.cache import DOWNLOADS_LOG
    from orchestration.datasets.command import upload
    from orchestration.runtime.storage import Storage
    from tests.orchestration.test_datasets import data_root

    bucket = object_store.bucket("sweep-data")
    manifest = upload(
        data_root(tmp_path / "local"), Storage.parse(f"s3://{bucket}/datasets"), log=lambda line: None
    )
    shutil.rmtree(tmp_path / "local")
    workspace = _workspace(f"s3://{bucket}/grids", tracking_server, tmp_path, "sweep")
    args = grid_args(workspace, "--address", cluster.address, "--workers", "2", "--profile", "smoke",
                     "--data-root", f"s3://{bucket}/datasets", "--tables", "table2", "table5",
                     "--experiment-name", "sweep on S3 data", rows=("MGN",))  # fmt: skip
    driver_cache = tmp_path / "driver-cache"
    sweep = Process(args, env={"MGN_CACHE": str(driver_cache)}, script="experiments/reproduce_paper.py")
    assert sweep.finish() == 0, "".join(sweep.lines)
    log = "".join(sweep.lines)
    assert "2 table trials, 1 training (each network once)" in log
    for cache in [driver_cache, *node_caches.of(cluster)]:
        downloads = (cache / "datasets" / DOWNLOADS_LOG).read_text().splitlines()
        assert len(downloads) == 1, (cache, downloads)
        assert json.loads(downloads[0])["dataset"] == "market1501"
    runs = children(tracking_server, "sweep on S3 data")
    trials = [r for r in runs if "mgn.fingerprint" in r.data.tags]
    assert len(trials) == 1 and len(set(json.loads(trials[0].data.tags["mgn.worker_nodes"]))) == 2
    client = MlflowClient(tracking_server)
    for run in trials:
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert {i.dataset.digest for i in inputs} == {manifest.part("market1501")[1].digest[:12]}
    assert (Path(workspace["results"]) / "paper.md").exists()
