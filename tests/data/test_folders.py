"""Market-1501-style layouts on tiny trees, and the real crops of ../shared/data/mini_market1501."""

import warnings

import pytest
from PIL import Image

from mgn.config import DataConfig, DatasetName
from mgn.data import DatasetError, load_dataset, read_dataset
from mgn.data.folders import load_market_style, parse_name
from tests.conftest import SHARED_DATA


def make_tree(root, splits, suffix=".jpg"):
    for split, names in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (16, 32), (len(name) * 7 % 255, 90, 30)).save(root / split / (name + suffix))
    return root


MARKET = {
    "bounding_box_train": [
        "0002_c1s1_000451_03",
        "0002_c2s1_000551_01",
        "0007_c3s3_077344_04",
        "0007_c6s4_002452_02",
    ],
    "bounding_box_test": [
        "0001_c2s1_000301_01",
        "0000_c1s1_000401_02",
        "-1_c3s1_000501_01",
        "0001_c1s1_000601_01",
    ],
    "query": ["0001_c1s1_001051_00"],
    "gt_bbox": ["0001_c1s1_001051_00", "0001_c1s1_001101_00", "0001_c2s1_001151_00"],
}


def test_parse_market_and_duke_names():
    assert parse_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_name("-1_c3s1_000501_01.jpg") == (-1, 2)
    assert parse_name("0001_c8_f0046182.jpg") == (1, 7)  # Duke
    assert parse_name("0001_c1_1.png") == (1, 0)  # CUHK03-NP
    assert parse_name("Thumbs.db") is None and parse_name("0001_c0s1.jpg") is None


def test_market_layout_junk_distractors_relabel_and_multi_query(tmp_path):
    dataset = load_market_style(make_tree(tmp_path / "Market-1501-v15.09.15", MARKET))
    assert [r.pid for r in dataset.train] == [0, 0, 1, 1]  # relabelled 0..C-1
    assert {r.camid for r in dataset.train} == {0, 1, 2, 5}  # 0-based cameras
    assert sorted(r.pid for r in dataset.gallery) == [-1, 0, 1, 1]  # junk and distractor kept for ranking
    assert [(r.pid, r.camid) for r in dataset.query] == [(1, 0)]
    assert len(dataset.multi_query) == 3


def test_official_folder_found_below_root_and_counts_checked(tmp_path):
    make_tree(tmp_path / "Market-1501-v15.09.15", MARKET)
    with pytest.warns(UserWarning, match="official market1501 totals are 12936/3368/19732/751"):
        dataset = read_dataset(DataConfig(dataset=DatasetName.MARKET1501, root=str(tmp_path)))
    assert len(dataset.train) == 4


def test_custom_data_is_not_count_checked(tmp_path):
    make_tree(tmp_path / "mine", MARKET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dataset(DataConfig(dataset=DatasetName.CUSTOM, root=str(tmp_path / "mine")))


def test_duke_layout(tmp_path):
    splits = {
        "bounding_box_train": [
            "0001_c2_f0046182",
            "0001_c5_f0051341",
            "0003_c1_f0044158",
            "0003_c8_f0044299",
        ],
        "bounding_box_test": ["0002_c1_f0044158", "0002_c3_f0044999"],
        "query": ["0002_c5_f0046182"],
    }
    make_tree(tmp_path / "DukeMTMC-reID", splits)
    with pytest.warns(UserWarning, match="dukemtmc"):
        dataset = read_dataset(DataConfig(dataset=DatasetName.DUKEMTMC, root=str(tmp_path)))
    assert dataset.num_train_ids == 2 and {r.camid for r in dataset.train} == {0, 1, 4, 7}


def test_cuhk03_np_market_style_png(tmp_path):
    splits = {
        "bounding_box_train": ["0001_c1_1", "0001_c2_1", "0002_c1_1", "0002_c2_1"],
        "bounding_box_test": ["0005_c1_2", "0005_c2_2"],
        "query": ["0005_c1_1"],
    }
    make_tree(tmp_path / "cuhk03-np" / "detected", splits, suffix=".png")
    with pytest.warns(UserWarning, match="cuhk03_detected totals are 7365/1400/5332"):
        dataset = read_dataset(DataConfig(dataset=DatasetName.CUHK03_DETECTED, root=str(tmp_path)))
    assert len(dataset.gallery) == 2


def test_missing_root_says_what_to_download(tmp_path):
    with pytest.raises(
        DatasetError, match=r"does not exist\. Download market1501 from .*Market-1501-v15\.09\.15"
    ):
        read_dataset(DataConfig(dataset=DatasetName.MARKET1501, root=str(tmp_path / "nowhere")))


def test_missing_split_folder_shows_the_layout(tmp_path):
    make_tree(tmp_path / "mine", {"bounding_box_train": MARKET["bounding_box_train"]})
    with pytest.raises(DatasetError, match=r"(?s)missing bounding_box_test/, query/.*Expected layout"):
        load_market_style(tmp_path / "mine")


def test_empty_split(tmp_path):
    make_tree(tmp_path / "mine", {k: v for k, v in MARKET.items() if k != "query"})
    (tmp_path / "mine" / "query").mkdir()
    with pytest.raises(DatasetError, match="query holds no images"):
        load_market_style(tmp_path / "mine")


def test_unparsable_names_are_listed(tmp_path):
    splits = dict(MARKET, query=["0001_c1s1_001051_00", "holiday", "IMG_2041"])
    make_tree(tmp_path / "mine", splits)
    with pytest.raises(
        DatasetError, match=r"2 file names in .*query do not follow .*IMG_2041.jpg, holiday.jpg"
    ):
        load_market_style(tmp_path / "mine")


MINI = SHARED_DATA / "mini_market1501"


@pytest.mark.skipif(not MINI.is_dir(), reason="../shared/data/mini_market1501 is absent")
def test_real_market_crops():
    dataset = load_dataset(DataConfig(dataset=DatasetName.CUSTOM, root=str(MINI)))
    assert (len(dataset.train), dataset.num_train_ids) == (32, 16)
    assert len(dataset.query) == 32 and len(dataset.gallery) == 32
    import json

    reference = json.loads((MINI / "gtPepper" / "query.json").read_text())
    expected = sorted((q["pid"], q["camid"], q["img_path"]) for q in reference)
    assert sorted((r.pid, r.camid, r.path.rsplit("/", 1)[1]) for r in dataset.query) == expected
    train_reference = json.loads((MINI / "gtPepper" / "train.json").read_text())
    assert sorted(r.pid for r in dataset.train) == sorted(t["pid"] for t in train_reference)
