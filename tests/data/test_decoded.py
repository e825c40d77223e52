"""The decoded cache: chosen on GPUs, one array per node shared by every dataset that needs it."""

from __future__ import annotations

import gc
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mgn.config import DataConfig
from mgn.data import decoded
from mgn.data.decoded import DecodedImages, cache_bytes, cache_name, use_decoded_cache
from mgn.data.images import ImageDataset
from mgn.data.records import ImageRecord
from mgn.data.sampler import Sample
from mgn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, input_transform


@pytest.fixture
def pictures(tmp_path) -> list[ImageRecord]:
    rng = np.random.default_rng(1)
    records = []
    for index in range(3):
        path = tmp_path / f"000{index}_c1s1_00000{index}_01.jpg"
        Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(str(path), index, 1))
    return records


@pytest.fixture
def shared_memory(tmp_path, monkeypatch):
    """A private stand-in for /dev/shm: the node's shared folder of this test alone."""
    folder = tmp_path / "shm"
    folder.mkdir()
    monkeypatch.setattr(decoded, "SHARED_MEMORY", folder)
    return folder


def test_the_cache_is_chosen_on_gpus_and_when_asked():
    config = DataConfig(height=384, width=128)
    assert use_decoded_cache(config, 12936, "cpu") is False  # CPU training keeps the PIL path
    assert use_decoded_cache(replace(config, decoded_cache=True), 12936, "cpu") is True
    assert use_decoded_cache(replace(config, decoded_cache=False), 10, "cuda") is False
    assert use_decoded_cache(config, 10**9, "cuda") is False  # 300 TB would not fit
    assert cache_bytes(12936, config) == 1_907_490_816  # Market-1501's training set: 1.9 GB a node


def test_the_ranks_of_a_node_map_one_array_and_the_last_deletes_it(pictures, shared_memory):
    config = DataConfig(height=96, width=32)
    first, second = DecodedImages(pictures, config), DecodedImages(pictures, config)
    array = shared_memory / cache_name(pictures, config)
    locks = [array.with_suffix(".lock").name, array.with_suffix(".build").name]
    assert sorted(p.name for p in shared_memory.iterdir()) == sorted([array.name, *locks])
    assert array.stat().st_size == cache_bytes(3, config)  # one copy, whatever the number of readers
    first.images[0, 0, 0, 0] = 7  # the same pages: a write through one is seen through the other
    assert int(second.images[0, 0, 0, 0]) == 7
    plain = ImageDataset(pictures, input_transform(config))
    for index in (1, 2):
        image, pid, camid, augmentation = second[Sample(index, 0)]
        assert (pid, camid) == (index, 1) and augmentation.shape == (5,)
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        expected = ((plain[index][0] * std + mean) * 255).round()  # the PIL path's pixels, un-normalised
        assert (image.float() - expected).abs().max() <= 1
    del first
    gc.collect()
    assert array.exists()  # the second still maps it
    del second
    gc.collect()
    assert not array.exists() and not list(shared_memory.glob("*.partial-*"))


def test_a_full_shared_memory_keeps_a_private_copy(pictures, shared_memory, monkeypatch):
    monkeypatch.setattr(decoded.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 10})())
    images = DecodedImages(pictures, DataConfig(height=96, width=32))
    assert images.images.shape == (3, 3, 96, 32) and list(shared_memory.iterdir()) == []


def test_a_failed_decode_leaves_no_array(pictures, shared_memory):
    broken = [*pictures, ImageRecord(str(shared_memory.parent / "missing.jpg"), 9, 1)]
    (shared_memory.parent / "missing.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(Exception, match="cannot read image"):
        DecodedImages(broken, DataConfig(height=96, width=32))
    assert sorted(p.suffix for p in shared_memory.iterdir()) == [".build", ".lock"]
