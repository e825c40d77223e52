"""Shared set-up for the orchestration tests: tiny grids on a private Ray instance and MLflow store."""

from __future__ import annotations

import contextlib
import fcntl
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ObjectStore, mlflow_server, postgres
from tests.servers import object_store as object_store_server

# The tiny synthetic set of tests/conftest.py, 64x32 input, 4x2 batches (BN over the whole batch:
# the recipe's groups of 32 do not fit in 8 images), one epoch, no re-ranking.
TINY_SETS = [
    "data.height=64",
    "data.width=32",
    "data.p=4",
    "data.k=2",
    "model.bn_group=null",
    "data.synthetic.num_train_ids=8",
    "data.synthetic.num_test_ids=6",
    "data.synthetic.images_per_id=6",
    "data.synthetic.num_distractors=4",
    "data.synthetic.num_junk=3",
    "train.epochs=1",
    "optimizer.warmup_epochs=0",
    "optimizer.milestones=[1]",
    "eval.rerank=false",
]


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, str]:
    return {
        "storage": str(tmp_path / "ray_results"),
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "results": str(tmp_path / "results"),
    }


def grid_args(workspace: dict[str, str], *extra: str, rows: tuple[str, ...] = ("MGN",)) -> list[str]:
    args = [
        "--storage-path",
        workspace["storage"],
        "--tracking-uri",
        workspace["uri"],
        "--results-dir",
        workspace["results"],
    ]
    args += ["--num-cpus", "2"]
    for row in rows:
        args += ["--rows", row]
    for item in TINY_SETS:
        args += ["--set", item]
    return [*args, *extra]


@pytest.fixture(scope="module")
def memory_heavy_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Held for the whole module by a module that runs four-worker Ray Train groups in float64
    (test_data_parallel.py, test_worker_count.py: gigabytes per worker). On two pytest-xdist workers
    one such group beside the pytest processes and another test's trial once reached Ray's memory
    threshold (95% of a 24 GiB machine), where Ray kills workers: two at once must not run. An flock
    on a file in the folder every xdist worker of this session shares (the kernel drops it if the
    holder dies)."""
    shared = tmp_path_factory.getbasetemp().parent
    with open(shared / "memory-heavy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """moto's S3 server on 127.0.0.1 for the whole session; its endpoint and dummy credentials are in
    this process's environment meanwhile, so that Ray nodes and grid drivers started here inherit
    them (as cluster nodes get theirs: from their environment, never from a config)."""
    with object_store_server(tmp_path_factory.mktemp("s3")) as store, pytest.MonkeyPatch.context() as patch:
        for name, value in store.env.items():
            patch.setenv(name, value)
        yield store


@pytest.fixture(scope="session")
def tracking_server(object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow server backed by PostgreSQL, its artifacts in the S3 bucket ``mlflow``: the cluster set-up
    docs/cluster.md describes, on loopback. Yields its http URI."""
    object_store.bucket("mlflow")
    with (
        postgres() as database,
        mlflow_server(
            database, "s3://mlflow/artifacts", object_store.env, tmp_path_factory.mktemp("mlflow")
        ) as uri,
    ):
        yield uri


GRID_ROWS = ("ResNet-50+TP", "MGN")


@pytest.fixture(scope="session")
def finished_grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A two-row grid that registered its models, run once for the session (the grid, browser and
    sweep tests read it; ``tests/scheduling.py`` keeps their files on one worker); ``out`` is its
    console."""
    from orchestration.tables.command import main

    folder = tmp_path_factory.mktemp("grid")
    workspace = {"storage": str(folder / "ray_results"), "uri": f"sqlite:///{folder / 'mlflow.db'}",
                 "results": str(folder / "results")}  # fmt: skip
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert main("table5", grid_args(workspace, "--register", rows=GRID_ROWS)) == 0
    return {**workspace, "out": console.getvalue(), "folder": str(folder)}
