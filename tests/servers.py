"""Real servers on 127.0.0.1 for integration tests: PostgreSQL, an S3-compatible object store (moto),
an MLflow tracking server on them, a Ray cluster of several nodes, a private Ray instance. Each is a
context manager that stops what it started on every path (a failed start included)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """The process and its children (each server runs in its own session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # what every client (and every Ray node) needs in its environment

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_aws(self.env)).create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_aws(self.env))
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _aws(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


@contextlib.contextmanager
def object_store(folder: Path) -> Iterator[ObjectStore]:
    """moto's standalone S3 server (PyPI ``moto[server]``) on loopback, with dummy credentials."""
    port = free_port()
    log = (folder / "moto.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, process, "moto_server")
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,  # pyarrow, boto3 and Ray storage read it
            "MLFLOW_S3_ENDPOINT_URL": endpoint,  # MLflow's S3 artifact repository reads this one
        }
        yield ObjectStore(endpoint, env)
    finally:
        stop(process)
        log.close()


def _as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, laptops as a normal user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not versions:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return str(versions[-1])


@contextlib.contextmanager
def postgres(superuser: str = "postgres", database: str | None = "mlflow") -> Iterator[str]:
    """A PostgreSQL server (Debian's package) on 127.0.0.1, trusting local connections, with
    ``database`` created (None: none, for a walk that creates it itself); yields its URI.

    Its folder is its own (the server's user must reach it, and pytest's folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="mgn-postgres-"))
    try:
        with _postgres_in(folder, superuser, database) as uri:
            yield uri
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _postgres_in(folder: Path, superuser: str, database: str | None) -> Iterator[str]:
    data = folder / "pgdata"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres_user([_postgres_bin("initdb"), "-D", str(data), "-U", superuser, "--auth=trust", "-E", "UTF8"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
    pg_ctl = _postgres_bin("pg_ctl")
    try:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "postgres.log"), "-w", "start"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        if database is not None:
            subprocess.run(
                _as_postgres_user([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", superuser, database]),
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        yield f"postgresql://{superuser}@127.0.0.1:{port}/{database or ''}"
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: str, env: dict[str, str], folder: Path) -> Iterator[str]:
    """``mlflow server`` on a backend store with proxied artifacts; yields its http URI."""
    port = free_port()
    log = (folder / "mlflow-server.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--app-name", "mgn", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", artifacts],
        env={**os.environ, **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, process, "mlflow server", timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT, where jobs are submitted
    gcs: str  # 127.0.0.1:PORT, what `ray start --address` and `--address` join
    process: subprocess.Popen  # `ray start --head --block`: Ray's processes live and die with it


@contextlib.contextmanager
def ray_head(folder: Path, env: dict[str, str], num_cpus: int = 2) -> Iterator[RayHead]:
    """A `ray start --head` on loopback with its own temp dir and ports, stopped by stopping the
    ``--block`` process that started it: SIGTERM makes it stop the processes of its own node (and
    Ray's reaper does if it is killed). Never `ray stop`: that stops every Ray on the machine.

    Its temp dir is short and its own: Ray's socket paths must fit in 107 bytes, which a pytest temp
    folder (deeper under pytest-xdist) need not."""
    temp = Path(tempfile.mkdtemp(prefix="mgn-ray-"))
    try:
        with _ray_head_in(folder, temp, env, num_cpus) as head:
            yield head
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def _ray_head_in(folder: Path, temp: Path, env: dict[str, str], num_cpus: int) -> Iterator[RayHead]:
    gcs, dashboard, agent, client = (free_port() for _ in range(4))
    log = (folder / "ray-start.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", str(num_cpus),
         # Ray's fixed defaults (52365, 10001) would collide with another Ray on this machine (a parallel
         # test's, a user's): the job agent that takes submissions listens on the first.
         "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
         "--resources", '{"TRAIN_DRIVER": 4}', "--disable-usage-stats", "--temp-dir", str(temp)],
        env={**os.environ, "MGN_CACHE": str(folder / "cache"), **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(dashboard, process, "ray start --head", timeout=120)
        yield RayHead(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", process)
    finally:
        if process.poll() is None:
            process.terminate()  # its SIGTERM handler stops its node's processes
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                stop(process)
        log.close()


@contextlib.contextmanager
def private_ray(num_cpus: int, env_vars: dict[str, str] | None = None) -> Iterator[None]:
    """This process's own Ray instance, started as ``orchestration.runtime.cluster.connect`` starts one:
    with its dashboard on loopback. Ray Train's placement-group cleaner asks the State API (served by
    the dashboard) whether the train controller lives; without a dashboard, on two busy cores, it once
    read a live controller as dead and removed the workers' placement group mid-training (ray#54305's
    relative). Shut down on every path."""
    import ray

    ray.init(address="local", num_cpus=num_cpus, log_to_driver=False, include_dashboard=True,
             dashboard_host="127.0.0.1", dashboard_port=free_port(), runtime_env={"env_vars": env_vars or {}})  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
