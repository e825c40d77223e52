"""Data sets from object storage (moto's S3 server on loopback): upload with a manifest, one
download per node however many trials ask at once, never a half cache, a changed bucket noticed,
and bad buckets refused with the fix."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import boto3
import pytest

from mgn.data.records import DatasetError
from mgn.data.synthetic import ensure_synthetic
from orchestration.datasets import cache
from orchestration.datasets.cache import DOWNLOADS_LOG, materialize
from orchestration.datasets.command import main as datasets_main
from orchestration.datasets.command import upload
from orchestration.datasets.manifest import MANIFEST_NAME, Manifest
from orchestration.runtime.storage import Storage
from tests.conftest import TINY_SYNTHETIC

pytestmark = pytest.mark.integration
MARKET = "Market-1501-v15.09.15"


def data_root(folder: Path) -> Path:
    """A data root holding a (tiny synthetic) set in Market-1501's usual folder."""
    shutil.copytree(ensure_synthetic(TINY_SYNTHETIC), folder / MARKET)
    return folder


@pytest.fixture
def bucket(object_store, tmp_path, monkeypatch, request) -> Storage:
    monkeypatch.setenv("MGN_CACHE", str(tmp_path / "node-cache"))
    name = object_store.bucket(f"data-{request.node.name.replace('_', '-')[:40].lower().strip('-')}")
    root = Storage.parse(f"s3://{name}/datasets")
    upload(data_root(tmp_path / "local"), root, log=lambda line: None)
    shutil.rmtree(tmp_path / "local")  # the data now exist only in the bucket
    return root


def _downloads() -> list[dict]:
    log = cache.cache_root() / DOWNLOADS_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_concurrent_trials_on_a_node_download_once_and_read_a_checked_copy(bucket):
    results, errors = [], []

    def trial() -> None:
        try:
            results.append(materialize(bucket.uri, "market1501", log=lambda line: None))
        except Exception as error:  # pragma: no cover - shown by the assertion
            errors.append(error)

    threads = [threading.Thread(target=trial) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({r.root for r in results}) == 1 and sum(r.downloaded for r in results) == 1
    assert len(_downloads()) == 1
    copy = results[0].root
    manifest = Manifest.from_json((copy / MANIFEST_NAME).read_text(), "cache")
    assert all(path.startswith(f"{MARKET}/") for path in manifest.files)
    assert sorted(
        p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
    ) == sorted(manifest.files)
    stored = Manifest.from_json((bucket / MANIFEST_NAME).read_text(), "bucket")
    assert results[0].digest == stored.part("market1501")[1].digest and results[0].size == manifest.size


def test_an_interrupted_download_leaves_no_cache_and_the_next_one_completes(bucket, monkeypatch):
    real_check = cache._check

    def killed(*args):  # the process dies between copying and checking
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "_check", killed)
    with pytest.raises(KeyboardInterrupt):
        materialize(bucket.uri, "market1501", log=lambda line: None)
    assert [p.name for p in cache.cache_root().iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(cache, "_check", real_check)
    copy = materialize(bucket.uri, "market1501", log=lambda line: None)
    assert copy.downloaded
    # A SIGKILLed download leaves its partial folder (and no copy): the next holder of the lock removes it.
    shutil.rmtree(copy.root)
    (cache.cache_root() / f".partial-{copy.root.name}-killed").mkdir()
    again = materialize(bucket.uri, "market1501", log=lambda line: None)
    assert again.downloaded and again.root == copy.root and not list(cache.cache_root().glob(".partial-*"))


def test_a_file_changed_behind_the_manifest_is_named_and_a_new_upload_is_a_new_copy(
    bucket, object_store, tmp_path
):
    first = materialize(bucket.uri, "market1501", log=lambda line: None)
    name, key = bucket.path.split("/", 1)
    client = boto3.client("s3", endpoint_url=object_store.endpoint)
    victim = next(k for k in object_store.keys(name, f"{key}/{MARKET}/query/") if k.endswith(".jpg"))
    client.put_object(Bucket=name, Key=victim, Body=b"not the image the manifest lists")
    shutil.rmtree(first.root)  # a node without the copy
    with pytest.raises(DatasetError, match=r"do not match the manifest: 1 changed .*upload it again"):
        materialize(bucket.uri, "market1501", log=lambda line: None)
    # Uploaded again (a changed data set): a new digest, a new cache folder beside any old one.
    upload_dir = data_root(tmp_path / "changed")
    (upload_dir / victim.removeprefix(f"{key}/")).write_bytes(b"a changed image, uploaded with its manifest")
    upload(upload_dir, bucket, log=lambda line: None)
    second = materialize(bucket.uri, "market1501", log=lambda line: None)
    assert second.downloaded and second.digest != first.digest and second.root != first.root


def test_buckets_without_a_manifest_or_data_are_refused_with_the_fix(
    object_store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MGN_CACHE", str(tmp_path / "cache"))
    name = object_store.bucket("no-manifest")
    boto3.client("s3", endpoint_url=object_store.endpoint).put_object(
        Bucket=name, Key="datasets/x.jpg", Body=b"x"
    )
    with pytest.raises(
        DatasetError, match="no manifest mgn-manifest.json beside the data.*orchestration.datasets upload"
    ):
        materialize(f"s3://{name}/datasets", "market1501")
    with pytest.raises(DatasetError, match="nothing is stored there; upload the data set first"):
        materialize(f"s3://{name}/elsewhere", "market1501")
    with pytest.raises(DatasetError, match="--data-root s3://: no bucket"):
        materialize("s3://", "market1501")
    assert datasets_main(["upload", str(tmp_path / "absent"), f"s3://{name}/x"]) == 2
    assert "no such folder to upload" in capsys.readouterr().err
    # A bucket nobody made (docs/cluster.md once forgot it): one line with the command that makes it.
    assert datasets_main(["upload", str(data_root(tmp_path / "data")), "s3://never-made/datasets"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: upload destination s3://never-made/datasets: bucket 'never-made' does not")
    assert "`aws s3 mb s3://never-made`" in error and "Traceback" not in error


def test_a_sweep_on_a_bucket_without_a_manifest_fails_before_compute(
    object_store, tmp_path, monkeypatch, capsys
):
    from orchestration.sweep.command import main as sweep
    from tests.orchestration.conftest import grid_args

    monkeypatch.setenv("MGN_CACHE", str(tmp_path / "cache"))
    name = object_store.bucket("sweep-no-manifest")
    boto3.client("s3", endpoint_url=object_store.endpoint).put_object(
        Bucket=name, Key="datasets/x.jpg", Body=b"x"
    )
    workspace = {
        "storage": str(tmp_path / "runs"),
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "results": str(tmp_path / "r"),
    }
    args = grid_args(
        workspace, "--profile", "smoke", "--data-root", f"s3://{name}/datasets", "--tables", "table3", rows=()
    )
    assert sweep(args) == 2
    assert "no manifest mgn-manifest.json beside the data" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was opened
