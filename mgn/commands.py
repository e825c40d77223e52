"""The ``mgn`` commands themselves: extract, evaluate, search, export. ``mgn.cli`` parses the command
line and imports this module (torch, torchvision, the data stack) only once the arguments are good,
so that ``mgn --help`` and a mistyped option answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from mgn.checkpoint import CorruptCheckpointError, load_model, weights_digest
from mgn.config import Metric
from mgn.data.folders import IMAGE_SUFFIXES, list_images, parse_name
from mgn.data.images import CorruptImageError, ImageDataset
from mgn.data.records import DatasetError, ImageRecord
from mgn.data.transforms import input_transform
from mgn.errors import UsageError

if TYPE_CHECKING:
    from mgn.config import ExperimentConfig
    from mgn.model import MGN

UNLABELLED = -2  # images whose names do not follow <pid>_c<camera>


@dataclass(frozen=True)
class Extraction:
    """What made a features file: the network (``weights_digest``) and the extraction settings.
    Features of two extractions are not comparable: distances between them mean nothing."""

    model: str
    height: int
    width: int
    flip: bool

    def describe(self) -> str:
        return (
            f"model {self.model}, {self.height}x{self.width}, {'flip-averaged' if self.flip else 'no flip'}"
        )

    def as_array(self) -> np.ndarray:
        return np.array(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def of(cls, features: dict[str, np.ndarray]) -> Extraction | None:
        """The record of a features file; None for a file written before features were recorded."""
        return cls(**json.loads(str(features["extraction"]))) if "extraction" in features else None


def check_same_extraction(
    first: Extraction | None, second: Extraction | None, names: tuple[str, str]
) -> None:
    """Refuse features from two networks or two settings, naming both; files that record nothing
    (older ones) cannot be checked and pass."""
    if first is not None and second is not None and first != second:
        raise UsageError(
            f"{names[0]} comes from {first.describe()}, {names[1]} from {second.describe()}: their distances mean "
            "nothing. Extract both with the same model and settings"
        )


# What a command's input can cause: each is printed as one line, exit 2.
ERRORS = (UsageError, FileNotFoundError, CorruptCheckpointError, CorruptImageError, ValueError)


def _records(folder: Path) -> list[ImageRecord]:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of images")
    try:
        paths = list_images(folder)
    except DatasetError as error:
        raise UsageError(str(error)) from None
    if not paths:
        raise UsageError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    records = []
    for path in paths:
        parsed = parse_name(path.name)
        pid, camid = parsed if parsed else (UNLABELLED, UNLABELLED)
        records.append(ImageRecord(str(path), pid, camid))
    return records


def _embed(
    model: MGN, config: ExperimentConfig, records: list[ImageRecord], batch_size: int, flip: bool,
    device: torch.device,
) -> torch.Tensor:
    from mgn.evaluation.features import extract_features

    loader = torch.utils.data.DataLoader(
        ImageDataset(records, input_transform(config.data)), batch_size=batch_size
    )
    # A bar on a terminal (a large folder takes minutes); nothing in a log or a pipe.
    shown = tqdm(loader, desc=f"embedding {len(records)} images", unit="batch", disable=not sys.stderr.isatty(),
                 leave=False)  # fmt: skip
    return extract_features(model.to(device), shown, device, flip=flip).features


def _load_features(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"features file {path} does not exist (make it with `mgn extract`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            features = {k: data[k] for k in data.files}
    except Exception as error:  # empty, truncated (BadZipFile, EOFError), not an .npz, pickled objects
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "allow_pickle" in reason:  # NumPy's advice is to unpickle it, which this project never does
            reason = "it holds Python objects, not arrays of numbers"
        raise UsageError(f"{path} is not a features file from `mgn extract` ({reason})") from None
    missing = {"features", "pids", "camids", "paths"} - set(features)
    if missing:
        raise UsageError(
            f"{path} is not a features file from `mgn extract`: it has no {', '.join(sorted(missing))}"
        )
    if features["features"].ndim != 2 or len(features["features"]) == 0:
        raise UsageError(
            f"{path} holds no features (shape {features['features'].shape}): extract a non-empty folder"
        )
    return features


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


def extract(args: argparse.Namespace) -> int:
    model, config = load_model(args.checkpoint.path(args.resolve_uri))
    records = _records(args.folder)
    features = _embed(model, config, records, args.batch_size, not args.no_flip, _device(args.device))
    unlabelled = sum(r.pid == UNLABELLED for r in records)
    made = Extraction(weights_digest(model), config.data.height, config.data.width, not args.no_flip)
    np.savez(
        args.out,
        extraction=made.as_array(),
        features=features.numpy(),
        pids=np.array([r.pid for r in records]),
        camids=np.array([r.camid for r in records]),
        paths=np.array([r.path for r in records]),
        input_size=np.array([config.data.height, config.data.width]),
    )
    print(f"wrote {args.out}: {len(records)} images x {features.shape[1]}-d features"
          + (f" ({unlabelled} without <pid>_c<camera> names: unlabelled)" if unlabelled else ""))  # fmt: skip
    return 0


DEFAULT_MAX_RANK = 50  # the CMC's length when --max-rank is not given (torchreid's, the tables' R1-R10)


def _max_rank(asked: int | None, gallery: int) -> int:
    """``--max-rank``, refused past the gallery before any work: no match ranks below the last gallery
    image, and the curve's memory grows with the rank asked (10**9 was 11.5 GB)."""
    if asked is None:
        return DEFAULT_MAX_RANK
    if asked > gallery:
        raise UsageError(
            f"--max-rank {asked}: the gallery has {gallery} images, so no match ranks past {gallery}; "
            f"give --max-rank {gallery} or less"
        )
    return asked


def evaluate(args: argparse.Namespace) -> int:
    from mgn.evaluation import FeatureSet, evaluate_features, evaluate_rank, re_rank

    query, gallery = _load_features(args.query), _load_features(args.gallery)
    check_same_extraction(Extraction.of(query), Extraction.of(gallery), (str(args.query), str(args.gallery)))
    if query["features"].shape[1] != gallery["features"].shape[1]:
        raise UsageError(
            f"query features are {query['features'].shape[1]}-d, gallery {gallery['features'].shape[1]}-d: extract both with one model"
        )
    if (query["pids"] == UNLABELLED).any() or (gallery["pids"] == UNLABELLED).any():
        raise UsageError(
            "evaluation needs identities and cameras in the file names (<pid>_c<camera>...); some images have none"
        )
    q = FeatureSet(torch.from_numpy(query["features"]), query["pids"], query["camids"])
    g = FeatureSet(torch.from_numpy(gallery["features"]), gallery["pids"], gallery["camids"])
    if args.normalize:
        q, g = q.select(normalize=True), g.select(normalize=True)
    max_rank = _max_rank(args.max_rank, len(g.pids))
    results = {"": evaluate_features(q, g, Metric(args.metric), max_rank, args.ap)}
    if args.rerank:
        distance = re_rank(q.features, g.features, args.k1, args.k2, args.lambda_value)
        results["re-ranked "] = evaluate_rank(
            distance, q.pids, g.pids, q.camids, g.camids, max_rank, args.ap
        )
    if args.json:  # for scripts: percentages, as in the tables and MLflow
        print(json.dumps({
            (label.strip().replace(" ", "_") or "plain"): {
                **result.summary(), "queries": result.num_queries, "skipped": result.num_skipped
            }
            for label, result in results.items()
        }))  # fmt: skip
        return 0
    for label, result in results.items():
        figures = "  ".join(f"{k} {v:.2f}" for k, v in result.summary().items())
        print(f"{label}{figures}  ({result.num_queries} queries, {result.num_skipped} without a valid match)")
    return 0


def search(args: argparse.Namespace) -> int:
    from mgn.evaluation import pairwise_distance

    if args.image.is_dir():
        raise UsageError(
            f"query image {args.image} is a folder: give one image (mgn extract embeds a folder)"
        )
    if not args.image.is_file():
        raise UsageError(f"query image {args.image} does not exist")
    gallery = _load_features(args.gallery)
    model, config = load_model(args.checkpoint.path(args.resolve_uri))
    parsed = parse_name(args.image.name)
    query = ImageRecord(str(args.image), *(parsed or (UNLABELLED, UNLABELLED)))
    made = Extraction(weights_digest(model), config.data.height, config.data.width, not args.no_flip)
    check_same_extraction(made, Extraction.of(gallery), ("the query image (embedded now)", str(args.gallery)))
    feature = _embed(model, config, [query], 1, not args.no_flip, _device(args.device))
    if feature.shape[1] != gallery["features"].shape[1]:
        raise UsageError(
            f"the model gives {feature.shape[1]}-d features, {args.gallery} holds {gallery['features'].shape[1]}-d ones"
        )
    from mgn.visualize import RANKING_RULE, rank_list_figure, ranked_gallery, save

    distances = np.asarray(pairwise_distance(feature, gallery["features"])[0])
    records = [
        ImageRecord(str(p), int(i), int(c))
        for p, i, c in zip(gallery["paths"], gallery["pids"], gallery["camids"], strict=True)
    ]
    print(f"# {RANKING_RULE}")
    for rank, index in enumerate(ranked_gallery(query, records, distances)[: args.top_k], 1):
        print(f"{rank:3d}  {distances[index]:8.4f}  {gallery['paths'][index]}")
    if args.png:
        save(rank_list_figure([query], records, distances[None], top_k=args.top_k), args.png)
        print(f"wrote {args.png}")
    return 0


def _check_writable(out: Path) -> None:
    folder = out.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write {out}: {existing} is a file, not a folder")
    if not folder.exists():
        raise UsageError(f"cannot write {out}: folder {folder} does not exist")
    if out.is_dir():
        raise UsageError(f"cannot write {out}: it is a folder; name the .onnx file")


def export(args: argparse.Namespace) -> int:
    from mgn.export import EmbeddingNetwork, export_onnx, onnx_max_difference

    model, config = load_model(args.checkpoint.path(args.resolve_uri))
    network = EmbeddingNetwork(model, flip=not args.no_flip, normalize=not args.no_normalize)
    _check_writable(args.out)
    path = export_onnx(network, args.out, config.data.height, config.data.width)
    print(f"wrote {path}: input 'images' (N, 3, {config.data.height}, {config.data.width}) float RGB in [0, 1], "
          f"output 'embedding' (N, {model.embedding_dim})")  # fmt: skip
    if args.check:
        difference = onnx_max_difference(
            path, network, torch.rand(5, 3, config.data.height, config.data.width)
        )
        print(f"onnxruntime vs PyTorch on 5 images: max |difference| {difference:.2e} (limit 1e-4)")
        if difference > 1e-4:
            return 1
    return 0
