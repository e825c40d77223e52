"""Data sets from object storage: each node materialises the data sets its trials need, once, into
a node-local cache under ``$MGN_CACHE`` (default ``~/.cache/mgn``), checked against the manifest.

- One download per node: trials (and ranks) on a node take a file lock; the first downloads, the
  others wait and then find the finished copy.
- Never a half cache: files go to a ``.partial-*`` folder, each is checked (size and SHA-256)
  against the manifest, and only a complete, checked folder is renamed into place. A download that
  was killed leaves a partial folder, which the next holder of the lock deletes.
- A changed data set is noticed: the cache folder is named by the digest of its manifest part, so a
  new upload is a new folder; files changed in the bucket behind the manifest fail the check.
- ``downloads.jsonl`` in the cache records every download (when, which data set, bytes, host).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.fs as pafs

from mgn.config import DataConfig
from mgn.data.records import DatasetError
from orchestration.datasets.manifest import MANIFEST_NAME, Manifest, file_digest
from orchestration.runtime.file_lock import exclusive
from orchestration.runtime.naming import slug
from orchestration.runtime.storage import Storage, StorageError

DOWNLOADS_LOG = "downloads.jsonl"


def is_remote(root: str | None) -> bool:
    """Whether a data root is an object-store URI (``s3://bucket/datasets``) rather than a folder."""
    return root is not None and "://" in root and not root.startswith("file://")


def cache_root() -> Path:
    return Path(os.environ.get("MGN_CACHE", Path.home() / ".cache" / "mgn")).expanduser() / "datasets"


def local_data(data: DataConfig, log: Callable[[str], None] = print) -> DataConfig:
    """``data`` read from this node: a data root in object storage becomes its local copy."""
    if not is_remote(data.root):
        return data
    return replace(data, root=str(materialize(str(data.root), data.dataset.value, log).root))


@dataclass(frozen=True)
class Materialized:
    """A data set's node-local copy: the folder to read it from, the digest of its manifest part."""

    root: Path  # what ``data.root`` becomes on this node
    digest: str
    size: int  # bytes in the cache
    downloaded: bool  # by this call (False: it was cached)


def read_manifest(root: Storage) -> Manifest:
    where = root / MANIFEST_NAME
    try:
        text = where.read_text()
    except (FileNotFoundError, OSError) as error:
        if root.exists() or root.children():
            raise DatasetError(
                f"--data-root {root}: no manifest {MANIFEST_NAME} beside the data ({type(error).__name__}); upload "
                f"the data set with `python -m orchestration.datasets upload <local folder> {root}`, which writes it"
            ) from None
        raise DatasetError(f"--data-root {root}: nothing is stored there; upload the data set first with "
                           f"`python -m orchestration.datasets upload <local folder> {root}`") from None  # fmt: skip
    return Manifest.from_json(text, where.uri)


def materialize(root_uri: str, dataset: str, log: Callable[[str], None] = print) -> Materialized:
    """The node-local copy of ``dataset`` (a ``DatasetName`` value) from the bucket ``root_uri``."""
    try:
        root = Storage.parse(root_uri, flag="--data-root")
    except StorageError as error:
        raise DatasetError(str(error)) from None
    folder, part = read_manifest(root).part(dataset)
    target = cache_root() / f"{slug(root.uri)[:60]}-{part.digest[:16]}"
    with exclusive(target.with_name(target.name + ".lock")):  # one download per node
        if (target / MANIFEST_NAME).is_file():
            return Materialized(target, part.digest, part.size, downloaded=False)
        _remove_partials(target)
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
        try:
            _download(root, folder, staging)
            _check(part, staging, root)
            (staging / MANIFEST_NAME).write_text(part.to_json())  # last: it marks the copy complete
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        _record(target.parent, {"dataset": dataset, "source": root.uri, "digest": part.digest, "bytes": part.size,
                                "files": len(part.files), "seconds": round(seconds, 1)})  # fmt: skip
        log(f"data: {dataset} from {root.uri}: {len(part.files)} files, {part.size / 1e6:.1f} MB downloaded into "
            f"{target} in {seconds:.0f} s (cache {cache_size(target.parent) / 1e6:.1f} MB)")  # fmt: skip
        return Materialized(target, part.digest, part.size, downloaded=True)


def _remove_partials(target: Path) -> None:
    """What a killed download left (this process holds the lock: no one else is writing them)."""
    for partial in target.parent.glob(f".partial-{target.name}-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _download(root: Storage, folder: str, staging: Path) -> None:
    """The data set's folder (or the whole root) from the bucket, in parallel (pyarrow's copy)."""
    source = root / folder if folder else root
    destination = staging / folder if folder else staging
    destination.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(source.path, str(destination), source_filesystem=source.filesystem,
                    destination_filesystem=pafs.LocalFileSystem(), use_threads=True)  # fmt: skip
    (destination / MANIFEST_NAME).unlink(
        missing_ok=True
    )  # the root's manifest, when the root is the data set


def _check(part: Manifest, staging: Path, root: Storage) -> None:
    """Every file the manifest lists, with its size and content; nothing else."""
    found = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    missing, extra = sorted(set(part.files) - found), sorted(found - set(part.files))
    wrong = [
        path
        for path in sorted(set(part.files) & found)
        if (staging / path).stat().st_size != part.files[path].size
        or file_digest(staging / path) != part.files[path].sha256
    ]
    if missing or extra or wrong:
        kinds = (("missing", missing), ("not in the manifest", extra), ("changed", wrong))
        problems = [f"{len(paths)} {what} (e.g. {', '.join(paths[:3])})" for what, paths in kinds if paths]
        raise DatasetError(
            f"--data-root {root}: the files do not match the manifest: {'; '.join(problems)}. The data set changed after "
            f"its manifest was written: upload it again with `python -m orchestration.datasets upload <folder> {root}`"
        )


def _record(cache: Path, download: dict) -> None:
    line = {"time": dt.datetime.now().isoformat(timespec="seconds"), "host": socket.gethostname(), **download}
    with (cache / DOWNLOADS_LOG).open("a") as log:
        log.write(json.dumps(line) + "\n")


def cache_size(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
