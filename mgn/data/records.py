"""What a loaded re-ID data set is: lists of (image path, identity, camera) per split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A data set is missing, in the wrong layout, empty or unreadable; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image: ``pid`` is -1 for junk, 0 for a Market "0000" distractor; ``camid`` is 0-based."""

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReidDataset:
    """A train split (pids relabelled 0..C-1) and a query / gallery test protocol.

    ``multi_query`` holds Market-1501's ``gt_bbox`` images (original pids) for the multiple-query
    protocol; empty when the data set has none.
    """

    name: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    multi_query: list[ImageRecord] = field(default_factory=list)

    @property
    def num_train_ids(self) -> int:
        return len({r.pid for r in self.train})

    def splits(self) -> dict[str, list[ImageRecord]]:
        """The named splits (``multi_query`` only when present)."""
        named = {"train": self.train, "query": self.query, "gallery": self.gallery}
        return named | ({"multi_query": self.multi_query} if self.multi_query else {})

    def digest(self, split: str) -> str:
        """A fingerprint of one split: its file names, identities and cameras in order (not the
        folder it lies in, so that copies of a data set on two machines agree)."""
        lines = (f"{os.path.basename(r.path)} {r.pid} {r.camid}\n" for r in self.splits()[split])
        return hashlib.sha256("".join(lines).encode()).hexdigest()

    def summary(self) -> str:
        def ids(records: Sequence[ImageRecord]) -> int:  # real identities: not junk (-1), not distractors (0)
            return len({r.pid for r in records if r.pid > 0})

        return (
            f"{self.name}: train {len(self.train)} images / {self.num_train_ids} ids, "
            f"query {len(self.query)} / {ids(self.query)}, gallery {len(self.gallery)} / {ids(self.gallery)}"
            + (f", multi-query {len(self.multi_query)}" if self.multi_query else "")
        )


def pids_and_camids(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) int64 identities and (N,) int64 cameras, in record order."""
    pids = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    camids = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    return pids, camids


def relabel(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Map training identities to 0..C-1 in sorted order of the original ids."""
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [ImageRecord(r.path, mapping[r.pid], r.camid) for r in records]
