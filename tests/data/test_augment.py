"""Training augmentation drawn per global batch position: torchvision's statistics, the same tensors
on the PIL path and the decoded cache's device path, the same draws for any rank layout."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from mgn.config import DataConfig
from mgn.data.augment import Augmentation, AugmentedImages, augment_batch, augment_image, draw, draw_seed
from mgn.data.decoded import DecodedImages
from mgn.data.images import ImageDataset
from mgn.data.records import ImageRecord
from mgn.data.sampler import Sample
from mgn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, input_transform

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


def test_a_drawn_box_is_erased_and_a_flip_mirrors():
    image = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 1, 1, -1).reshape(1, 6, 4).expand(3, 6, 4)
    out = augment_image(image, Augmentation(flip=True, box=(1, 2, 3, 1)))  # rows 1-3, column 2
    expected = image.flip(-1).clone()
    expected[:, 1:4, 2:3] = 0
    assert torch.equal(out, expected)
    assert torch.equal(augment_image(image, Augmentation(False, None)), image)


def test_the_pil_path_and_the_device_path_give_the_same_tensors(picture):
    """Same samples, same draws: ``AugmentedImages`` (PIL, per image) and ``DecodedImages`` +
    ``augment_batch`` (uint8, per batch) agree image by image, flips and boxes included."""
    config = DataConfig(height=96, width=32, random_flip=True, random_erasing=0.5)
    samples = [Sample(0, draw_seed(3, 1, step, 0)) for step in range(32)]
    pil = torch.stack([AugmentedImages([picture], config)[s][0] for s in samples])
    decoded = DecodedImages([picture], config)
    items = [decoded[s] for s in samples]
    device = augment_batch(torch.stack([i[0] for i in items]), torch.stack([i[3] for i in items]))
    torch.testing.assert_close(device, pil, rtol=0, atol=1e-6)
    drawn = [draw(s.draw, config) for s in samples]
    assert 4 < sum(a.flip for a in drawn) < 28 and 4 < sum(a.box is not None for a in drawn) < 28


def test_without_augmentation_training_images_are_the_test_images(picture):
    config = DataConfig(height=96, width=32, random_flip=False, random_erasing=0.0)
    plain = ImageDataset([picture], input_transform(config))[0][0]
    assert torch.equal(AugmentedImages([picture], config)[Sample(0, 12345)][0], plain)


def test_a_draw_depends_on_seed_epoch_step_and_position_only():
    config = DataConfig(height=96, width=32, random_flip=True, random_erasing=0.5)
    keys = [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    assert len({draw_seed(*key) for key in keys}) == len(keys)
    assert draw(draw_seed(0, 2, 5, 7), config) == draw(draw_seed(0, 2, 5, 7), config)
    # The erasing probability does not move the flips: one field does not shift another's draws.
    seeds = [draw_seed(0, 0, 0, i) for i in range(200)]
    flips = [draw(s, config).flip for s in seeds]
    assert flips == [draw(s, replace(config, random_erasing=0.0)).flip for s in seeds]


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


def test_the_draws_have_torchvisions_statistics(picture):
    """Against torchvision's own RandomHorizontalFlip and RandomErasing(value=0) on the PIL image."""
    config = DataConfig(height=96, width=32, random_flip=True, random_erasing=0.5)
    unflipped = ImageDataset([picture], input_transform(config))[0][0]
    torchvision = T.Compose([
        T.Resize((96, 32), interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD), T.RandomErasing(p=0.5, value=0),
    ])  # fmt: skip
    torch.manual_seed(0)
    reference = ImageDataset([picture] * SAMPLES, torchvision)
    theirs = _statistics(torch.stack([reference[i][0] for i in range(SAMPLES)]), unflipped)
    ours_dataset = AugmentedImages([picture], config)
    ours = _statistics(
        torch.stack([ours_dataset[Sample(0, draw_seed(0, 0, 0, i))][0] for i in range(SAMPLES)]), unflipped
    )
    assert abs(ours["flip"] - 0.5) < 0.04 and abs(theirs["flip"] - 0.5) < 0.04
    assert abs(ours["erase"] - theirs["erase"]) < 0.04 and abs(ours["erase"] - 0.5) < 0.04
    assert ours["area"] == pytest.approx(theirs["area"], rel=0.1)
    assert ours["log_aspect"] == pytest.approx(theirs["log_aspect"], abs=0.1)
