"""CUHK03-NP new protocol: the real split files, and an original-release tree."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mgn.config import DataConfig, DatasetName
from mgn.data import DatasetError, read_dataset
from mgn.data.cuhk03 import read_protocol
from tests.conftest import SHARED_DATA

PROTOCOL = SHARED_DATA / "cuhk03_np_protocol"


@pytest.mark.skipif(not PROTOCOL.is_dir(), reason="../shared/data/cuhk03_np_protocol is absent")
@pytest.mark.parametrize(
    ("kind", "sizes"), [("labeled", (7368, 1400, 5328)), ("detected", (7365, 1400, 5332))]
)
def test_real_split_files(kind, sizes):
    fields = read_protocol(PROTOCOL / f"cuhk03_new_protocol_config_{kind}.mat")
    assert tuple(len(fields[k]) for k in ("train_idx", "query_idx", "gallery_idx")) == sizes
    labels = fields["labels"]
    train, test = (
        set(labels[fields["train_idx"]]),
        set(labels[fields["query_idx"]]) | set(labels[fields["gallery_idx"]]),
    )
    assert (len(train), len(test)) == (767, 700) and not train & test
    assert fields["train_idx"].min() == 0  # converted from MATLAB's 1-based indices
    assert fields["filelist"][0] == "1_001_1_01.png"


def _release_tree(root, kind="labeled"):
    names = [
        "1_001_1_01.png",
        "1_001_2_01.png",
        "1_002_1_01.png",
        "1_002_2_01.png",
        "2_003_1_01.png",
        "2_003_2_01.png",
    ]
    (root / f"images_{kind}").mkdir(parents=True)
    for name in names:
        Image.new("RGB", (16, 32)).save(root / f"images_{kind}" / name)
    scipy.io.savemat(
        root / f"cuhk03_new_protocol_config_{kind}.mat",
        {
            "filelist": np.array([[n] for n in names], dtype=object),
            "labels": np.array([[1], [1], [2], [2], [3], [3]], dtype=np.uint16),
            "camId": np.array([[1], [2], [1], [2], [1], [2]], dtype=np.uint8),
            "train_idx": np.array([[1], [2], [3], [4]], dtype=np.uint16),
            "query_idx": np.array([[5]], dtype=np.uint16),
            "gallery_idx": np.array([[6]], dtype=np.uint16),
        },
    )
    return root


def test_original_release_with_split_file(tmp_path):
    _release_tree(tmp_path)
    with pytest.warns(UserWarning, match="cuhk03_labeled"):
        dataset = read_dataset(DataConfig(dataset=DatasetName.CUHK03_LABELED, root=str(tmp_path)))
    assert [r.pid for r in dataset.train] == [0, 0, 1, 1]
    assert [(r.pid, r.camid) for r in dataset.query] == [(3, 0)] and [
        (r.pid, r.camid) for r in dataset.gallery
    ] == [(3, 1)]


def test_missing_split_file(tmp_path):
    _release_tree(tmp_path)
    (tmp_path / "cuhk03_new_protocol_config_labeled.mat").unlink()
    with pytest.raises(DatasetError, match="split file .*cuhk03_new_protocol_config_labeled.mat is missing"):
        read_dataset(DataConfig(dataset=DatasetName.CUHK03_LABELED, root=str(tmp_path)))


def test_malformed_split_files(tmp_path):
    _release_tree(tmp_path)
    path = tmp_path / "cuhk03_new_protocol_config_labeled.mat"
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match="cannot be read as a MATLAB file"):
        read_protocol(path)
    scipy.io.savemat(path, {"filelist": np.array([["a.png"]], dtype=object)})
    with pytest.raises(DatasetError, match="malformed: it has no labels, camId"):
        read_protocol(path)
    scipy.io.savemat(path, {"filelist": np.array([["a.png"]], dtype=object), "labels": [[1]], "camId": [[1]],
                            "train_idx": [[0]], "query_idx": [[1]], "gallery_idx": [[1]]})  # fmt: skip
    with pytest.raises(DatasetError, match="train_idx must hold 1-based indices"):
        read_protocol(path)


def test_no_cuhk03_data_explains_both_layouts(tmp_path):
    with pytest.raises(DatasetError, match="(?s)no CUHK03-NP data .*Market style.*original release"):
        read_dataset(DataConfig(dataset=DatasetName.CUHK03_DETECTED, root=str(tmp_path)))
