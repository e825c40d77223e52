"""Where a grid's durable state lives: a local folder or an object store, behind one small type.

``--storage-path`` takes a local folder (the default, ``./ray_results``) or a URI that pyarrow
understands (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://…``, ``abfs://…``). The same
value is Ray's ``RunConfig(storage_path=...)``, so Tune's experiment state, Ray Train's checkpoints
and our own small files (grid state, done markers, ensemble features, spooled MLflow records) all
live in one place that every node reaches, and nothing lives only on the driver's disk.

A ``Storage`` is a location (like a ``Path``) holding only its URI: it crosses process and node
boundaries as a string, and each process opens the filesystem itself. Credentials and endpoints
come from that process's environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``…), never from the URI, a config or a tag.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

from orchestration.runtime.redaction import redact

# Schemes pyarrow opens (``FileSystem.from_uri``); anything else is refused before compute.
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


class StorageError(ValueError):
    """``--storage-path`` cannot be used; the message names the problem and the fix."""


@lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    """One filesystem per store and process (``from_uri`` reads this process's environment)."""
    if not scheme:
        return pafs.LocalFileSystem()
    filesystem, _ = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")
    return filesystem


@dataclass(frozen=True)
class Storage:
    """A location in grid storage: an absolute local path or ``scheme://bucket/key``."""

    uri: str

    @classmethod
    def parse(cls, given: str | Path, flag: str = "--storage-path") -> Storage:
        """``--storage-path`` (or ``flag``) as typed: a folder (made absolute), ``file://``, or an
        object-store URI."""
        text = str(given)
        parts = urllib.parse.urlsplit(text)
        shown = redact(text)  # an error never prints a secret given in the URI
        if parts.scheme == "file":
            return cls(str(Path(parts.path).absolute()))
        if "://" not in text:
            return cls(str(Path(text).expanduser().absolute()))
        if parts.scheme not in OBJECT_STORE_SCHEMES:
            raise StorageError(
                f"{flag} {shown}: unknown scheme {parts.scheme!r}. Use a local folder, or a URI of an "
                f"object store every node reaches: {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)}"
            )
        if "@" in parts.netloc:
            raise StorageError(
                f"{flag} {shown}: credentials in the URI are not used, and would be written to logs and runs; set "
                "them in each node's environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3) and give the "
                "URI without them"
            )
        if not parts.netloc:
            raise StorageError(f"{flag} {shown}: no bucket (expected {parts.scheme}://bucket/prefix)")
        if parts.query or parts.fragment:
            raise StorageError(
                f"{flag} {shown}: options in the URI are not used; set the endpoint in the environment "
                f"(e.g. AWS_ENDPOINT_URL=http://host:port for an S3-compatible store)"
            )
        return cls(f"{parts.scheme}://{parts.netloc}/{parts.path.strip('/')}".rstrip("/"))

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def filesystem(self) -> pafs.FileSystem:
        parts = urllib.parse.urlsplit(self.uri)
        return _filesystem(parts.scheme, parts.netloc)

    @property
    def path(self) -> str:
        """The location inside ``filesystem`` (for an object store: ``bucket/key``)."""
        if self.is_local:
            return self.uri
        parts = urllib.parse.urlsplit(self.uri)
        return f"{parts.netloc}{parts.path}".rstrip("/")

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def __truediv__(self, part: str) -> Storage:
        return Storage(f"{self.uri.rstrip('/')}/{part.strip('/')}")

    def __str__(self) -> str:
        return self.uri

    # Checking, before any compute.

    def check(self, flag: str = "--storage-path") -> None:
        """Fail now, naming the fix (and ``flag``, the option that gave this location), when this
        location cannot be written: an unreachable endpoint, a missing bucket, missing credentials, a
        read-only folder."""
        try:
            filesystem = self.filesystem
            if not self.is_local:
                bucket = self.path.split("/", 1)[0]
                if filesystem.get_file_info(bucket).type is pafs.FileType.NotFound:
                    raise StorageError(
                        f"{flag} {self.uri}: bucket {bucket!r} does not exist. Create it (e.g. "
                        f"`aws s3 mb {urllib.parse.urlsplit(self.uri).scheme}://{bucket}`) or name another one."
                    )
            probe = self / f".mgn-write-probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.delete()
        except StorageError:
            raise
        except (OSError, ValueError) as error:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
            where = f" (endpoint {endpoint} from AWS_ENDPOINT_URL)" if endpoint else ""
            raise StorageError(
                f"{flag} {self.uri}{where} cannot be written: {str(error).strip().splitlines()[0]}. "
                "Check that the store is reachable from this machine, that its credentials are in the "
                "environment, and that the location is writable."
            ) from None

    def free_bytes(self) -> int | None:
        """Space left on the disk holding this local location (its nearest existing folder); None
        for an object store, which reports none."""
        if not self.is_local:
            return None
        folder = Path(self.path)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    # Files. Small ones only: checkpoints and Tune's state go through Ray's own storage code.

    def exists(self) -> bool:
        return self.filesystem.get_file_info(self.path).type is not pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Whole-object write; on a local disk through a temporary file renamed into place."""
        if self.is_local:
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            os.close(handle)
            tmp = Path(name)
            try:
                tmp.write_bytes(data)
                os.replace(tmp, target)
            except BaseException as error:  # a full disk, Ctrl-C: no half-written file is left behind
                tmp.unlink(missing_ok=True)
                if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                    raise OSError(
                        errno.ENOSPC, f"no space left on {target.parent} to write {target.name}"
                    ) from None
                raise
            return
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def upload(self, local: str | Path) -> None:
        self.write_bytes(Path(local).read_bytes())

    def download(self, local: str | Path) -> Path:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.read_bytes())
        return local

    def children(self) -> list[Storage]:
        """Entries directly below this location, sorted by name (none when it does not exist)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        infos = self.filesystem.get_file_info(selector)
        return sorted((self / info.base_name for info in infos), key=lambda s: s.uri)

    def files(self) -> list[Storage]:
        """Every file below this location, sorted by URI."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        infos = self.filesystem.get_file_info(selector)
        base = self.path.rstrip("/")
        found = [self / info.path[len(base) + 1 :] for info in infos if info.type is pafs.FileType.File]
        return sorted(found, key=lambda s: s.uri)

    def delete(self) -> None:
        """This file or folder, if present."""
        info = self.filesystem.get_file_info(self.path)
        if info.type is pafs.FileType.Directory:
            self.filesystem.delete_dir(self.path)
        elif info.type is pafs.FileType.File:
            self.filesystem.delete_file(self.path)


def write_result(path: Path, text: str) -> Path:
    """A result file (a table, a report) written whole or not at all: a driver killed while writing
    leaves the previous file, never a cut one (``Storage.write_bytes``: a temporary file renamed)."""
    Storage(str(Path(path).absolute())).write_text(text)
    return path
