"""Grid storage (orchestration/runtime/storage.py) on a local disk and on an S3-compatible server, the
checkpoint fallback over Ray's kept checkpoints, and bad ``--storage-path`` values refused before
any compute."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mgn.checkpoint import CHECKPOINT_FILE, TrainingState, save_checkpoint
from orchestration.runtime.storage import Storage, StorageError
from orchestration.tables.command import main
from tests.orchestration.conftest import grid_args
from tests.servers import free_port


def test_parse_makes_local_paths_absolute_and_keeps_object_store_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage.parse("ray_results").uri == str(tmp_path / "ray_results")
    assert Storage.parse(f"file://{tmp_path}/grids").uri == str(tmp_path / "grids")
    s3 = Storage.parse("s3://bucket/some/prefix/")
    assert (s3.uri, s3.path, s3.is_local, s3.name) == (
        "s3://bucket/some/prefix",
        "bucket/some/prefix",
        False,
        "prefix",
    )
    assert (s3 / "grid" / "trials").uri == "s3://bucket/some/prefix/grid/trials"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("foo://bucket/grids", "unknown scheme 'foo'"),
        ("s3:///grids", "no bucket"),
        ("s3://bucket/grids?endpoint_override=x", "set the endpoint in the environment"),
    ],
)
def test_malformed_uris_are_named(given, message):
    with pytest.raises(StorageError, match=re.escape(message)):
        Storage.parse(given)


def _round_trip(root: Storage) -> None:
    grid = root / "table5-smoke"
    (grid / "trials" / "mgn" / "seed0" / "done.json").write_text('{"epoch": 3}')
    (grid / "trials" / "mgn" / "seed1" / "done.json").write_bytes(b"{}")
    (grid / "study.json").write_text("state")
    assert (grid / "study.json").exists() and not (grid / "absent").exists()
    assert (grid / "trials" / "mgn" / "seed0" / "done.json").read_text() == '{"epoch": 3}'
    assert [s.name for s in (grid / "trials" / "mgn").children()] == ["seed0", "seed1"]
    assert [s.uri for s in grid.files()] == [
        (grid / "study.json").uri,
        (grid / "trials/mgn/seed0/done.json").uri,
        (grid / "trials/mgn/seed1/done.json").uri,
    ]
    (grid / "trials").delete()
    assert [s.name for s in grid.files()] == ["study.json"]
    assert (root / "never-written").children() == []


def test_files_round_trip_on_a_local_disk(tmp_path):
    _round_trip(Storage.parse(tmp_path / "ray_results"))


@pytest.mark.integration
def test_files_round_trip_in_an_s3_bucket(object_store):
    bucket = object_store.bucket("round-trip")
    _round_trip(Storage.parse(f"s3://{bucket}/grids"))
    keys = object_store.keys(bucket)
    assert "grids/table5-smoke/study.json" in keys and not [k for k in keys if "/trials" in k]


def _kept(folder: Path, epochs: int, truncate: bool = False):
    """A checkpoint folder as Ray keeps it (``checkpoint_00000N``), holding our file. (Ray is
    imported in the tests, not at collection: that would fix its auth mode for the session.)"""
    from ray.train import Checkpoint

    state = TrainingState({"w": torch.full((2,), float(epochs))}, {}, {}, epochs, {})
    file = save_checkpoint(state, folder / f"checkpoint_{epochs:06d}" / CHECKPOINT_FILE)
    if truncate:
        file.write_bytes(file.read_bytes()[:50])
    return Checkpoint.from_directory(str(file.parent))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_kept_before_it(tmp_path):
    from orchestration.runtime.checkpoint_fallback import latest_good_state

    _kept(tmp_path, 1)
    _kept(tmp_path, 2)
    newest = _kept(tmp_path, 3, truncate=True)
    warnings: list[str] = []
    assert latest_good_state(newest, warn=warnings.append).epochs_done == 2
    assert warnings == [
        f"checkpoint {tmp_path}/checkpoint_000003 is corrupt; falling back to the previous checkpoint"
    ]
    assert latest_good_state(None) is None


def test_no_readable_checkpoint_at_all_restarts_from_scratch_and_says_so(tmp_path):
    from orchestration.runtime.checkpoint_fallback import latest_good_state

    newest = _kept(tmp_path, 1, truncate=True)
    warnings: list[str] = []
    assert latest_good_state(newest, warn=warnings.append) is None
    assert "training starts again from epoch 0" in warnings[-1]


@pytest.mark.integration
def test_bad_storage_paths_are_refused_before_compute(object_store, tmp_path, monkeypatch, capsys):
    workspace = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "results": str(tmp_path / "results")}
    cases = {
        "foo://bucket/grids": "unknown scheme 'foo'",
        "s3://no-such-bucket/grids": "bucket 'no-such-bucket' does not exist",
        "s3://AKIAKEY:VERYSECRET@bucket/grids": "s3://AKIAKEY:***@bucket/grids: credentials in the URI are not used",
        "foo://AKIAKEY:VERYSECRET@bucket/grids": "foo://AKIAKEY:***@bucket/grids: unknown scheme",
    }
    for storage, message in cases.items():
        assert main("table5", grid_args({**workspace, "storage": storage})) == 2
        error = capsys.readouterr().err
        assert message in error and "VERYSECRET" not in error
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    assert main("table5", grid_args({**workspace, "storage": "s3://any-bucket/grids"})) == 2
    error = capsys.readouterr().err
    assert f"(endpoint {closed} from AWS_ENDPOINT_URL) cannot be written" in error and "reachable" in error
    assert not Path(tmp_path / "mlflow.db").exists()  # refused before the store was touched
