"""The embedded synthetic data set: deterministic bytes, Market layout, and a task that is not trivial."""

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mgn.config import DataConfig, DatasetName, SyntheticConfig
from mgn.data import read_dataset
from mgn.data.records import pids_and_camids
from mgn.data.synthetic import ensure_synthetic, generate
from mgn.evaluation import FeatureSet, evaluate_features
from tests.conftest import TINY_SYNTHETIC


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate(TINY_SYNTHETIC, tmp_path / "a")
    generate(TINY_SYNTHETIC, tmp_path / "b")
    generate(_with_seed(1), tmp_path / "c")
    assert tree_hash(tmp_path / "a") == tree_hash(tmp_path / "b")
    assert tree_hash(tmp_path / "a") != tree_hash(tmp_path / "c")


def _with_seed(seed: int) -> SyntheticConfig:
    from dataclasses import replace

    return replace(TINY_SYNTHETIC, seed=seed)


def test_market_layout_with_junk_distractors_and_multi_query():
    dataset = read_dataset(DataConfig(dataset=DatasetName.SYNTHETIC, synthetic=TINY_SYNTHETIC))
    gallery_pids = {r.pid for r in dataset.gallery}
    assert -1 in gallery_pids and 0 in gallery_pids
    assert dataset.num_train_ids == 8 and len(dataset.train) == 8 * 6
    assert not {r.pid for r in dataset.query} & {-1, 0}
    assert dataset.multi_query and {(r.pid, r.camid) for r in dataset.multi_query} == {
        (r.pid, r.camid) for r in dataset.query
    }
    for query in dataset.query:  # every query has a correct match in another camera
        assert any(g.pid == query.pid and g.camid != query.camid for g in dataset.gallery)
    with Image.open(dataset.train[0].path) as image:
        assert image.size == (64, 128)


def test_generated_once_then_reused():
    first = ensure_synthetic(TINY_SYNTHETIC)
    stamp = (first / "synthetic.json").stat().st_mtime_ns
    assert (
        ensure_synthetic(TINY_SYNTHETIC) == first and (first / "synthetic.json").stat().st_mtime_ns == stamp
    )


def test_a_killed_generation_leaves_no_staging_folder_for_good(tmp_path):
    """A generator killed mid-way (SIGKILL: no ``finally``) left ``.generating-*`` for good; the next
    call removes this host's dead ones and leaves a live process's and another host's alone."""
    import socket

    dead = 2**22 + 12345  # above Linux's largest pid_max: never a live process
    host = socket.gethostname()
    abandoned = tmp_path / f".generating-{host}-{dead}-x1"
    running = tmp_path / f".generating-{host}-{os.getpid()}-x2"  # this process: alive
    elsewhere = tmp_path / ".generating-another-host-1-x3"
    for folder in (abandoned, running, elsewhere):
        (folder / "query").mkdir(parents=True)
    made = ensure_synthetic(TINY_SYNTHETIC, root=tmp_path)
    assert (made / "synthetic.json").is_file() and not abandoned.exists()
    assert running.exists() and elsewhere.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([made.name, running.name, elsewhere.name])


def test_default_size_generates_in_seconds(tmp_path):
    began = time.perf_counter()
    generate(SyntheticConfig(), tmp_path / "default")
    assert time.perf_counter() - began < 30  # ~2 s on 2 cores; generous for slow CI


def _histograms(records, box=None, halves=False, bins=4) -> torch.Tensor:
    features = []
    for record in records:
        with Image.open(record.path) as image:
            pixels = np.asarray(image.convert("RGB").crop(box) if box else image.convert("RGB")) // (
                256 // bins
            )
        parts = [pixels[: len(pixels) // 2], pixels[len(pixels) // 2 :]] if halves else [pixels]
        hists = []
        for part in parts:
            index = (part[..., 0] * bins + part[..., 1]) * bins + part[..., 2]
            counts = np.bincount(index.ravel(), minlength=bins**3).astype(np.float32)
            hists.append(np.sqrt(counts / counts.sum()))
        features.append(np.concatenate(hists))
    return torch.tensor(np.stack(features))


def _map(dataset, query: torch.Tensor, gallery: torch.Tensor) -> float:
    return evaluate_features(
        FeatureSet(query, *pids_and_camids(dataset.query)),
        FeatureSet(gallery, *pids_and_camids(dataset.gallery)),
    ).mAP


def test_colour_histograms_are_far_from_perfect_but_identities_are_separable():
    dataset = read_dataset(DataConfig(dataset=DatasetName.SYNTHETIC))  # the default size
    generator = torch.Generator().manual_seed(0)
    chance = _map(dataset, torch.randn(len(dataset.query), 64, generator=generator),
                  torch.randn(len(dataset.gallery), 64, generator=generator))  # fmt: skip
    whole = _map(dataset, _histograms(dataset.query), _histograms(dataset.gallery))
    person = _map(
        dataset,
        *(_histograms(s, box=(20, 30, 44, 100), halves=True) for s in (dataset.query, dataset.gallery)),
    )
    # Camera backgrounds and illumination dominate a global colour histogram: no better than chance.
    assert whole < 0.10
    # The person's own colours (upper and lower halves of the body region) do carry identity, but
    # family members share them and cameras shift them, so they are far from enough.
    assert person > 3 * chance and 0.15 < person < 0.6
