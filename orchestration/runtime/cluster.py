"""Starting or joining a Ray cluster, and fitting trials to its resources.

Tune trial *drivers* (which only launch a worker group and wait) take a custom ``TRAIN_DRIVER``
resource instead of a CPU: on a small machine a driver holding a CPU starves its own workers (a
2-CPU laptop could never place a 2-worker group). Clusters started by ``ray start`` should declare
it too (``--resources='{"TRAIN_DRIVER": 8}'``); without it drivers fall back to one CPU each.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import ray

from mgn.config import ExperimentConfig
from orchestration.runtime.faults import ENV as FAULTS_ENV
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import is_single_machine_store, redact, split_credentials
from orchestration.runtime.trial import STUDY_FOLDER_ENV, is_local

DRIVER_RESOURCE = "TRAIN_DRIVER"
LOCAL_DRIVER_SLOTS = 64


class ClusterError(RuntimeError):
    """The Ray cluster cannot run what was asked; the message says why and what to do."""


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a cluster address does not answer."""
    if not address or address == "auto":
        return
    target = address
    for prefix in ("ray://", "http://", "https://"):
        target = target.removeprefix(prefix)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(
            f"Ray address {address!r} is not host:port (e.g. 127.0.0.1:6379 or ray://host:10001)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({error}). Start one with `ray start --head "
            f"--node-ip-address 127.0.0.1`, pass the right --address, or leave --address out to start Ray here."
        ) from None


def connect(
    address: str | None, tracking_uri: str, num_cpus: int | None = None, study_folder: str | None = None
) -> None:
    """Join the cluster at ``address``, or start a private one on this machine (dashboard on 127.0.0.1).

    Every Ray process gets the tracking URI through the job's runtime environment, which Ray writes
    to its logs (``runtime_env_agent.log``): so never with credentials in it. A private instance
    inherits them from this process's environment instead (MLflow's ``MLFLOW_TRACKING_USERNAME``/
    ``_PASSWORD``/``_TOKEN``); a shared cluster's nodes must have them in theirs. A Ray already
    initialised in this process is refused: its job environment belongs to someone else.
    """
    if ray.is_initialized():
        raise ClusterError(
            "Ray is already initialised in this process; call ray.shutdown() before running a grid"
        )
    if not address and os.environ.get("RAY_ADDRESS"):  # inside a Ray job: join its cluster
        address = os.environ["RAY_ADDRESS"]
        # The job's runtime env already sets some of the same variables; let ours be merged in.
        os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    check_address(address)
    bare_uri, credentials = split_credentials(tracking_uri)
    if credentials and address:
        raise ClusterError(
            f"the tracking URI {redact(tracking_uri)} carries credentials, which would be written to Ray's logs on "
            f"every node. Set {' and '.join(credentials)} in the environment of every node (where `ray start` runs) "
            f"and pass --tracking-uri {bare_uri}"
        )
    os.environ.update(credentials)  # inherited by the private instance started below, never logged
    options: dict[str, Any] = dict(
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env={"env_vars": worker_env(bare_uri, joined=bool(address), study_folder=study_folder)},
        include_dashboard=True,  # its State API keeps Train-inside-Tune from hanging (ray#54305)
    )
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(
            # "local": always a private instance, even when a `ray start` cluster (or a stale
            # /tmp/ray/ray_current_cluster file) is on this machine; --address joins one.
            address="local",
            num_cpus=num_cpus,
            resources={DRIVER_RESOURCE: LOCAL_DRIVER_SLOTS},
            dashboard_host="127.0.0.1",
            **options,
        )


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_stores_reach_every_node(tracking_uri: str, storage: Storage, shared_storage: bool) -> None:
    """On a cluster of several nodes, refuse stores that only this machine can write: workers on
    other nodes would fail (or, worse, write to a disk nobody reads) after compute was spent."""
    nodes = alive_nodes()
    if nodes < 2:
        return
    if is_single_machine_store(tracking_uri):
        raise ClusterError(
            f"the MLflow store {redact(tracking_uri)} is a file on this machine, and the Ray cluster has {nodes} "
            "nodes: trials on other nodes cannot write it. Run a tracking server that every node reaches, e.g.\n"
            "  mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri postgresql://USER@DBHOST/mlflow "
            "--artifacts-destination s3://BUCKET/mlflow\n"
            "and pass --tracking-uri http://SERVER:5000 (credentials in the environment: MLFLOW_TRACKING_USERNAME, "
            "MLFLOW_TRACKING_PASSWORD)."
        )
    if storage.is_local and not shared_storage:
        raise ClusterError(
            f"--storage-path {storage} is a folder on this machine, and the Ray cluster has {nodes} nodes: "
            "checkpoints written on other nodes would never reach it. Pass an object store every node reaches "
            "(--storage-path s3://BUCKET/grids, credentials and endpoint in each node's environment), or "
            "--shared-storage if that folder is a shared filesystem mounted at the same path on every node."
        )


def resolve_gpu(use_gpu: bool | None) -> bool:
    """``None`` means: use GPUs when the cluster has them. Asking for GPUs on a GPU-less cluster fails."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if use_gpu and not gpus:
        raise ClusterError(
            "GPUs were asked for (--gpu or scaling.use_gpu=true) but the Ray cluster has none. "
            "Run on a cluster with GPUs, or leave --gpu out to train on CPU."
        )
    return bool(gpus) if use_gpu is None else use_gpu


@dataclass(frozen=True)
class TrialResources:
    driver: dict[str, float]  # what each Tune trial asks for
    concurrency: int  # trials that can run at once


def trial_resources(
    config: ExperimentConfig, use_gpu: bool, local: bool, max_concurrent: int | None = None
) -> TrialResources:
    """How much each trial takes, and how many fit on the cluster together."""
    total = ray.cluster_resources()
    workers, cpus = config.scaling.num_workers, config.scaling.cpus_per_worker
    if local:  # the trial process trains itself
        driver = {"CPU": float(cpus)}
        fit = int(total.get("CPU", 0) // cpus)
        if fit < 1:  # Tune would wait forever for a placement that cannot come
            raise ClusterError(
                f"a trial needs {cpus} CPUs (--cpus-per-worker), the Ray cluster has {total.get('CPU', 0):g}: "
                f"use --cpus-per-worker {int(total.get('CPU', 0)) or 1} or fewer, or a bigger cluster"
            )
    else:
        driver = {DRIVER_RESOURCE: 1.0} if total.get(DRIVER_RESOURCE) else {"CPU": 1.0}
        spare = total.get("CPU", 0) - driver.get("CPU", 0)
        fit = int(spare // (workers * cpus))
        if use_gpu:
            fit = min(fit, int(total.get("GPU", 0) // workers))
        if fit < 1:
            need = workers * cpus + driver.get("CPU", 0)
            raise ClusterError(
                f"a trial needs {workers} workers x {cpus} CPUs{' and 1 GPU each' if use_gpu else ''}"
                f"{' plus 1 CPU for its driver' if 'CPU' in driver else ''} = {need:g} CPUs, the cluster has "
                f"{total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs: use fewer --workers or a bigger cluster"
                + (
                    ""
                    if DRIVER_RESOURCE in driver
                    else f" (or give the head node a {DRIVER_RESOURCE} resource)"
                )
            )
    concurrency = max(1, fit)
    if max_concurrent:
        concurrency = min(concurrency, max_concurrent)
    return TrialResources(driver, concurrency)


def _fits(bundle: dict[str, float], node: dict) -> bool:
    return node["Alive"] and all(node["Resources"].get(k, 0) >= v for k, v in bundle.items())


def wait_until_placeable(bundles: dict[str, dict[str, float]], timeout_s: float, poll_s: float = 2.0) -> None:
    """Wait, at most ``timeout_s``, until every bundle fits on one live node of the cluster.

    The cluster's total can suffice while no single node can hold a worker (two 1-CPU nodes, a 2-CPU
    worker), and Tune then waits forever. A remote cluster may be growing (an autoscaler adding nodes),
    so it gets a bounded wait before the refusal, not an immediate one.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = ray.nodes()
        missing = {name: b for name, b in bundles.items() if not any(_fits(b, n) for n in nodes)}
        if not missing:
            return
        if time.monotonic() >= deadline:
            largest = sorted(
                ({k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU", DRIVER_RESOURCE)}
                 for n in nodes if n["Alive"]),
                key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), reverse=True,
            )  # fmt: skip
            wanted = "; ".join(f"a {name} needs {_resources(b)}" for name, b in missing.items())
            raise ClusterError(
                f"no node of the Ray cluster can hold a trial after waiting {timeout_s:g} s ({wanted}; the "
                f"largest live node has {_resources(largest[0]) if largest else 'nothing'}): add a node that "
                "big, or lower --cpus-per-worker (more --workers spread a trial over nodes); "
                "--placement-timeout sets how long to wait for an autoscaler"
            )
        time.sleep(poll_s)


def _resources(bundle: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(bundle.items())) or "nothing"


def bundles(config: ExperimentConfig, use_gpu: bool, resources: TrialResources, local: bool) -> dict:
    """What must fit on one node: a trial's driver and, for worker groups, one training worker."""
    if local:  # the trial process trains itself
        return {"trial": resources.driver}
    worker = {"CPU": float(config.scaling.cpus_per_worker)}
    if use_gpu:
        worker["GPU"] = 1.0
    return {"trial driver": resources.driver, "training worker": worker}


def worker_env(tracking_uri: str, joined: bool = False, study_folder: str | None = None) -> dict[str, str]:
    """Environment every Ray process of a grid gets, the tracking store's URI included. ``$MGN_CACHE``
    is each node's own (data sets from object storage are cached per node): the driver's reaches a
    Ray it started on this machine, never the nodes of a cluster it ``joined``. ``study_folder``: where
    the study is now (``STUDY_FOLDER_ENV``), which a moved folder's stored trial configs do not say."""
    env = {
        **({STUDY_FOLDER_ENV: study_folder} if study_folder else {}),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "PYTHONUNBUFFERED": "1",
        # A tracking server that went away costs seconds, not minutes of retries: records are spooled.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # the URL may carry credentials
    }
    for name in (
        *(() if joined else ("MGN_CACHE",)),
        "MGN_DATA",
        "TORCH_HOME",
        FAULTS_ENV,
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
    ):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@dataclass(frozen=True)
class Placement:
    """How the trials of a grid or search run on the cluster it joined."""

    use_gpu: bool
    local: bool  # every trial trains in its own process (one CPU worker): Train's local mode
    resources: TrialResources


def open_cluster(
    address: str | None,
    tracking_uri: str,
    num_cpus: int | None,
    storage: Storage,
    shared_storage: bool,
    configs: list[ExperimentConfig],
    max_concurrent: int | None,
    placement_timeout_s: float,
) -> Placement:
    """Join (or start) the cluster and fit the largest of ``configs`` to it: the stores reach every
    node, and a trial fits on one node (waiting up to ``placement_timeout_s`` for a cluster given by
    ``address``, which may be growing). ``ClusterError`` with Ray shut down when it cannot run."""
    try:
        connect(address, tracking_uri, num_cpus, study_folder=storage.uri)
        check_stores_reach_every_node(tracking_uri, storage, shared_storage)
        use_gpu = resolve_gpu(configs[0].scaling.use_gpu)
        biggest = max(configs, key=lambda c: c.scaling.num_workers * c.scaling.cpus_per_worker)
        local = all(is_local(c, use_gpu) for c in configs)
        resources = trial_resources(biggest, use_gpu, local, max_concurrent)
        wait_until_placeable(
            bundles(biggest, use_gpu, resources, local), placement_timeout_s if address else 0.0
        )
    except ClusterError:
        ray.shutdown()
        raise
    return Placement(use_gpu, local, resources)
