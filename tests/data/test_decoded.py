"""The decoded cache + device augmentation gives the PIL path's images and augmentation statistics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mgn.config import DataConfig
from mgn.data.decoded import DecodedImages, augment_batch, use_decoded_cache
from mgn.data.images import ImageDataset
from mgn.data.records import ImageRecord
from mgn.data.transforms import train_transform

SAMPLES = 3000


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> ImageRecord:
    """A 128x64 crop with structure (a gradient and a bright patch): resizing and flips show."""
    rng = np.random.default_rng(0)
    pixels = np.clip(np.linspace(40, 220, 64)[None, :, None] + rng.normal(0, 20, (128, 64, 3)), 0, 255)
    pixels[10:40, 5:20] = 250
    path = tmp_path_factory.mktemp("img") / "0001_c1s1_000001_01.jpg"
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    return ImageRecord(str(path), 0, 0)


def test_without_augmentation_the_cache_gives_the_pil_paths_tensors(picture):
    config = DataConfig(height=96, width=32, random_flip=False, random_erasing=0.0)
    pil = ImageDataset([picture], train_transform(config))[0][0]
    cached = augment_batch(DecodedImages([picture], config)[0][0][None], config)[0]
    torch.testing.assert_close(cached, pil, rtol=0, atol=1e-6)


def _statistics(images: torch.Tensor, unflipped: torch.Tensor) -> dict[str, float]:
    """Flip rate, erasing rate, erased area fraction and log aspect (height/width) of erased boxes."""
    erased = images == 0  # normalised pixels of this picture are never exactly 0 elsewhere
    erased_any = erased.flatten(1).any(1)
    whole = images.masked_fill(erased, 0)
    flipped = ((whole - unflipped.flip(-1).masked_fill(erased, 0)).abs().flatten(1).amax(1) < 1e-5) & ~(
        (whole - unflipped.masked_fill(erased, 0)).abs().flatten(1).amax(1) < 1e-5
    )
    boxes = erased[erased_any][:, 0]
    heights = boxes.any(2).sum(1).float()
    widths = boxes.any(1).sum(1).float()
    return {
        "flip": flipped.float().mean().item(),
        "erase": erased_any.float().mean().item(),
        "area": (heights * widths / (images.shape[-1] * images.shape[-2])).mean().item(),
        "log_aspect": torch.log(heights / widths).mean().item(),
    }


def test_augmentation_statistics_equal_the_pil_paths(picture):
    config = DataConfig(height=96, width=32, random_flip=True, random_erasing=0.5)
    plain = replace(config, random_flip=False, random_erasing=0.0)
    unflipped = ImageDataset([picture], train_transform(plain))[0][0]
    torch.manual_seed(0)
    pil_path = ImageDataset([picture] * SAMPLES, train_transform(config))
    pil = torch.stack([pil_path[i][0] for i in range(SAMPLES)])
    uint8 = DecodedImages([picture], config)[0][0]
    device = augment_batch(
        uint8.expand(SAMPLES, -1, -1, -1).contiguous(), config, torch.Generator().manual_seed(1)
    )
    ours, theirs = _statistics(device, unflipped), _statistics(pil, unflipped)
    assert abs(ours["flip"] - 0.5) < 0.04 and abs(theirs["flip"] - 0.5) < 0.04
    assert abs(ours["erase"] - theirs["erase"]) < 0.04 and abs(ours["erase"] - 0.5) < 0.04
    assert ours["area"] == pytest.approx(theirs["area"], rel=0.1)
    assert ours["log_aspect"] == pytest.approx(theirs["log_aspect"], abs=0.1)


def test_the_cache_is_chosen_on_gpus_and_when_asked():
    config = DataConfig(height=384, width=128)
    assert use_decoded_cache(config, 12936, "cpu") is False  # CPU training keeps the PIL path
    assert use_decoded_cache(replace(config, decoded_cache=True), 12936, "cpu") is True
    assert use_decoded_cache(replace(config, decoded_cache=False), 10, "cuda") is False
    assert use_decoded_cache(config, 10**9, "cuda") is False  # 300 TB would not fit
