"""A data set's manifest: every file's path, size and SHA-256, written beside the files in a bucket.

``python -m orchestration.datasets upload`` writes it; a node that materialises a data set from the
bucket (``orchestration.datasets.cache``) checks every file it downloaded against it, and a run
records the digest of the part it trained on (MLflow's dataset input digest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mgn.data.folders import FOLDER_NAMES
from mgn.data.records import DatasetError

MANIFEST_NAME = "mgn-manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Files by their path relative to the data root (``Market-1501-v15.09.15/query/0001_c1s1_....jpg``)."""

    files: dict[str, Entry]

    @property
    def digest(self) -> str:
        """The manifest's hash: two manifests with the same files (names, sizes, contents) share it."""
        listed = {path: [e.size, e.sha256] for path, e in sorted(self.files.items())}
        return hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files.values())

    @classmethod
    def of_folder(cls, root: Path) -> Manifest:
        """Every file below ``root`` (the manifest itself left out)."""
        files = {
            path.relative_to(root).as_posix(): Entry(path.stat().st_size, file_digest(path))
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != MANIFEST_NAME
        }
        if not files:
            raise DatasetError(f"{root}: no files to upload")
        return cls(files)

    def to_json(self) -> str:
        files = {path: {"size": e.size, "sha256": e.sha256} for path, e in sorted(self.files.items())}
        return json.dumps({"format": FORMAT, "digest": self.digest, "files": files}, indent=0)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            stored = json.loads(text)
            files = {path: Entry(int(e["size"]), str(e["sha256"])) for path, e in stored["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DatasetError(
                f"{where}: not a readable data-set manifest ({error}); write it again with "
                "`python -m orchestration.datasets upload <folder> <uri>`"
            ) from None
        return cls(files)

    def part(self, dataset: str) -> tuple[str, Manifest]:
        """The folder holding ``dataset`` (a ``DatasetName`` value) and its files: its usual folder
        when the root holds several data sets (``Market-1501-v15.09.15``), else the whole root ("")."""
        for folder in FOLDER_NAMES.get(dataset, ()):
            inside = {p: e for p, e in self.files.items() if p.startswith(f"{folder}/")}
            if inside:
                return folder, Manifest(inside)
        return "", self
