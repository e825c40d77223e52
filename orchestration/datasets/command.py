"""``python -m orchestration.datasets upload /data s3://bucket/datasets``: copy a data root (one data
set, or several in their usual folders) to object storage and write its manifest beside it, so that
``--data-root s3://bucket/datasets`` trains on any node without a shared disk.

The manifest is written last: a bucket whose upload was cut short has the previous manifest (or
none), and the nodes' check then names the files that differ.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs

from mgn.data.records import DatasetError
from orchestration.datasets.manifest import MANIFEST_NAME, Manifest
from orchestration.runtime.storage import Storage, StorageError


def upload(folder: Path, destination: Storage, log=print) -> Manifest:
    """Every file of ``folder`` to ``destination``, then its manifest; returns the manifest."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder to upload")
    destination.check("upload destination")  # a missing bucket, bad credentials: named before hashing
    started = time.monotonic()
    manifest = Manifest.of_folder(folder)
    log(f"{folder}: {len(manifest.files)} files, {manifest.size / 1e6:.1f} MB, digest {manifest.digest[:16]}")
    (destination / MANIFEST_NAME).delete()  # a stale manifest must not vouch for a half-copied upload
    destination.filesystem.create_dir(destination.path, recursive=True)
    pafs.copy_files(str(folder.absolute()), destination.path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=destination.filesystem, use_threads=True)  # fmt: skip
    (destination / MANIFEST_NAME).write_text(manifest.to_json())
    log(f"uploaded to {destination} with {MANIFEST_NAME} in {time.monotonic() - started:.0f} s; train on it with "
        f"--data-root {destination}")  # fmt: skip
    return manifest


def parser() -> argparse.ArgumentParser:
    """``python -m orchestration.datasets``: its subcommands and options."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.datasets", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="copy a local data root to object storage, with its manifest")
    up.add_argument(
        "folder", type=Path, help="a data set's folder, or a folder of data sets in their usual folders"
    )
    up.add_argument("uri", help="where: s3://bucket/prefix (endpoint and credentials from the environment)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        upload(args.folder, Storage.parse(args.uri, flag="destination"))
    except (DatasetError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
