"""CUHK03-NP (Zhong et al., CVPR 2017: 767 training / 700 test identities), labeled or detected.

Two layouts are read:

* Market style, as released with the new protocol: ``cuhk03-np/{labeled,detected}/{bounding_box_train,
  bounding_box_test,query}/0001_c1_1.png`` (see ``mgn.data.folders``).
* The original release's images (as extracted from ``cuhk-03.mat`` by torchreid and others, named
  ``<campair>_<pid>_<view>_<index>.png``, e.g. ``1_001_1_01.png``) in ``images_labeled/`` or
  ``images_detected/``, with the protocol file ``cuhk03_new_protocol_config_{labeled,detected}.mat``.
  Its ``train_idx`` / ``query_idx`` / ``gallery_idx`` are 1-based indices into ``filelist``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from mgn.data.folders import OFFICIAL, check_official_counts
from mgn.data.records import DatasetError, ImageRecord, ReidDataset, relabel

SPLIT_FIELDS = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")

RELEASE_LAYOUT = """\
  <root>/
    images_labeled/    1_001_1_01.png ...   (or images_detected/)
    cuhk03_new_protocol_config_labeled.mat   (or ..._detected.mat; from
        https://github.com/zhunzhong07/person-re-ranking/tree/master/evaluation/data/CUHK03)"""


def split_file_name(labeled: bool) -> str:
    return f"cuhk03_new_protocol_config_{'labeled' if labeled else 'detected'}.mat"


def read_protocol(path: Path) -> dict[str, np.ndarray]:
    """The split file's fields as flat arrays; ``*_idx`` converted to 0-based."""
    if not path.is_file():
        raise DatasetError(f"CUHK03-NP split file {path} is missing. Expected layout:\n{RELEASE_LAYOUT}")
    try:
        mat = scipy.io.loadmat(str(path))
    except (
        ValueError,
        OSError,
        NotImplementedError,
        IndexError,
        TypeError,
    ) as error:  # corrupt, v7.3, not MATLAB
        raise DatasetError(f"CUHK03-NP split file {path} cannot be read as a MATLAB file: {error}") from None
    absent = [f for f in SPLIT_FIELDS if f not in mat]
    if absent:
        raise DatasetError(f"CUHK03-NP split file {path} is malformed: it has no {', '.join(absent)}")
    fields = {
        "filelist": np.array([str(np.ravel(item)[0]) for item in mat["filelist"].ravel()]),
        "labels": mat["labels"].ravel().astype(np.int64),
        "camId": mat["camId"].ravel().astype(np.int64),
    }
    n = len(fields["filelist"])
    if len(fields["labels"]) != n or len(fields["camId"]) != n:
        raise DatasetError(f"{path} is malformed: filelist, labels and camId have different lengths")
    for name in ("train_idx", "query_idx", "gallery_idx"):
        index = mat[name].ravel().astype(np.int64) - 1  # MATLAB is 1-based
        if index.size == 0 or index.min() < 0 or index.max() >= n:
            raise DatasetError(f"{path} is malformed: {name} must hold 1-based indices in 1..{n}")
        fields[name] = index
    train_ids = set(fields["labels"][fields["train_idx"]])
    test_ids = set(fields["labels"][fields["query_idx"]]) | set(fields["labels"][fields["gallery_idx"]])
    if train_ids & test_ids:
        raise DatasetError(
            f"{path} is malformed: {len(train_ids & test_ids)} identities are in train and test"
        )
    return fields


def load_cuhk03_release(root: str | Path, labeled: bool, split_file: str | Path | None = None) -> ReidDataset:
    """Original-release images + the new-protocol split file."""
    base = Path(root)
    kind = "labeled" if labeled else "detected"
    images = base / f"images_{kind}"
    if not images.is_dir():
        raise DatasetError(f"{images} does not exist. Expected layout:\n{RELEASE_LAYOUT}")
    fields = read_protocol(Path(split_file) if split_file else base / split_file_name(labeled))
    paths = [images / name for name in fields["filelist"]]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise DatasetError(
            f"{len(absent)} images named in the split file are missing from {images}, e.g. {', '.join(absent[:5])}"
        )

    def records(index: np.ndarray) -> list[ImageRecord]:
        return [
            ImageRecord(str(paths[i]), int(fields["labels"][i]), int(fields["camId"][i]) - 1) for i in index
        ]

    dataset = ReidDataset(
        f"cuhk03_{kind}",
        relabel(records(fields["train_idx"])),
        records(fields["query_idx"]),
        records(fields["gallery_idx"]),
    )
    check_official_counts(dataset, OFFICIAL[dataset.name], base)
    return dataset
