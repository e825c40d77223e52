"""Market-1501-style folder layouts: Market-1501, DukeMTMC-reID, CUHK03-NP (Market style), your own.

File names start with ``<pid>_c<camera>``: ``0002_c1s1_000451_03.jpg`` (Market),
``0001_c2_f0046182.jpg`` (Duke), ``0001_c1_1.png`` (CUHK03-NP). Identity ``-1`` is junk (left out
of training and of ranking), ``0000`` a distractor (a wrong answer in the gallery). Cameras in the
names are 1-based and become 0-based here.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from mgn.data.records import DatasetError, ImageRecord, ReidDataset, relabel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_NAME = re.compile(r"^(-?\d+)_c(\d+)")

MARKET_LAYOUT = """\
  <root>/
    bounding_box_train/   0002_c1s1_000451_03.jpg ...   (training images)
    bounding_box_test/    0001_c1s1_001051_03.jpg ...   (gallery; -1 = junk, 0000 = distractor)
    query/                0001_c1s1_001051_00.jpg ...
    gt_bbox/              (optional: Market-1501 multiple-query images)"""


@dataclass(frozen=True)
class OfficialCounts:
    """Published image and identity totals, to warn when a folder is incomplete."""

    train_images: int
    query_images: int
    gallery_images: int
    train_ids: int
    download: str


OFFICIAL = {
    "market1501": OfficialCounts(
        12936, 3368, 19732, 751, "http://www.liangzheng.org/Project/project_reid.html"
    ),
    "dukemtmc": OfficialCounts(16522, 2228, 17661, 702, "https://github.com/layumi/DukeMTMC-reID_evaluation"),
    "cuhk03_labeled": OfficialCounts(
        7368, 1400, 5328, 767, "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"
    ),
    "cuhk03_detected": OfficialCounts(
        7365, 1400, 5332, 767, "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"
    ),
}

# The folder a data set's archive unpacks to, below the data root.
FOLDER_NAMES = {
    "market1501": ("Market-1501-v15.09.15", "Market-1501", "market1501"),
    "dukemtmc": ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmc"),
    "cuhk03_labeled": ("cuhk03-np/labeled",),
    "cuhk03_detected": ("cuhk03-np/detected",),
}


def parse_name(name: str) -> tuple[int, int] | None:
    """``0002_c1s1_000451_03.jpg`` -> (2, 0): identity and 0-based camera; None if it does not parse."""
    match = _NAME.match(name)
    if match is None or int(match.group(2)) < 1:
        return None
    return int(match.group(1)), int(match.group(2)) - 1


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` by name; something else named like an image (a FIFO, a socket, a
    device: opening it could block forever) is an error naming it."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    odd = [p for p in paths if not p.is_file()]
    if odd:
        raise DatasetError(
            f"{len(odd)} entries of {folder} are named like images but are not regular files "
            f"(e.g. {odd[0].name}): remove them or move them out"
        )
    return paths


def read_split(folder: Path, *, keep_junk: bool, keep_distractors: bool) -> list[ImageRecord]:
    """Parse every image in ``folder``; names that do not parse are reported together."""
    images = list_images(folder)
    if not images:
        raise DatasetError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): is the data set unpacked?"
        )
    records, unparsed = [], []
    for path in images:
        parsed = parse_name(path.name)
        if parsed is None:
            unparsed.append(path.name)
            continue
        pid, camid = parsed
        if (pid == -1 and not keep_junk) or (pid == 0 and not keep_distractors):
            continue
        records.append(ImageRecord(str(path), pid, camid))
    if unparsed:
        raise DatasetError(
            f"{len(unparsed)} file names in {folder} do not follow the Market-1501 naming <pid>_c<camera>..., "
            f"e.g. {', '.join(unparsed[:5])}. Rename them (e.g. 0002_c1s1_000451_03.jpg) or move them out."
        )
    if not records:
        raise DatasetError(f"{folder}: every image is junk or a distractor; the split is empty")
    return records


def resolve_root(root: Path, key: str) -> Path:
    """The folder holding the splits: ``root`` itself or its standard sub-folder for ``key``."""
    if (root / "bounding_box_train").is_dir() or (root / "query").is_dir():
        return root
    for name in FOLDER_NAMES.get(key, ()):
        if (root / name).is_dir():
            return root / name
    return root


def load_market_style(root: str | Path, key: str = "custom", multi_query: bool = True) -> ReidDataset:
    """Load a Market-1501-style folder; ``key`` names an official set whose totals are checked."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(_missing_message(key, base))
    base = resolve_root(base, key)
    missing = [s for s in ("bounding_box_train", "bounding_box_test", "query") if not (base / s).is_dir()]
    if missing:
        raise DatasetError(
            f"{base} is not a Market-1501-style data set: missing {', '.join(m + '/' for m in missing)}.\n"
            f"Expected layout:\n{MARKET_LAYOUT}"
        )
    train = relabel(read_split(base / "bounding_box_train", keep_junk=False, keep_distractors=False))
    query = read_split(base / "query", keep_junk=False, keep_distractors=False)
    gallery = read_split(base / "bounding_box_test", keep_junk=True, keep_distractors=True)
    extra: list[ImageRecord] = []
    if multi_query and (base / "gt_bbox").is_dir():
        extra = read_split(base / "gt_bbox", keep_junk=False, keep_distractors=False)
    dataset = ReidDataset(key, train, query, gallery, extra)
    if key in OFFICIAL:
        check_official_counts(dataset, OFFICIAL[key], base)
    return dataset


def check_official_counts(dataset: ReidDataset, expected: OfficialCounts, base: Path) -> None:
    """Warn (not fail) when an official set's folder does not hold the published totals."""
    found = (len(dataset.train), len(dataset.query), len(dataset.gallery), dataset.num_train_ids)
    wanted = (expected.train_images, expected.query_images, expected.gallery_images, expected.train_ids)
    if found != wanted:
        warnings.warn(
            f"{base}: found train/query/gallery/train-ids = {'/'.join(map(str, found))}, the official "
            f"{dataset.name} totals are {'/'.join(map(str, wanted))}. Results will not be comparable with "
            f"published numbers; re-download from {expected.download} if files are missing.",
            stacklevel=2,
        )


def _missing_message(key: str, root: Path) -> str:
    if key in OFFICIAL:
        folder = FOLDER_NAMES[key][0]
        return (
            f"data root {root} does not exist. Download {key} from {OFFICIAL[key].download}, unpack it so that "
            f"{root}/{folder}/ holds the splits:\n{MARKET_LAYOUT.replace('<root>', str(root / folder))}"
        )
    return f"data root {root} does not exist. Expected a folder in Market-1501 layout:\n{MARKET_LAYOUT}"
