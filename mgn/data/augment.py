"""The training augmentation (§4.1: random horizontal flip; random erasing, Zhong et al., in the
community recipe), drawn from each image's place in the global batch.

The draw for the image at ``position`` of step ``step`` of ``epoch`` comes from (seed, epoch, step,
position) alone: not from a rank, a loader process or a global generator. So W workers apply to
every image exactly what one process applies to it, the PIL path and the decoded cache on the
device apply the same flips and boxes, and a run resumed at an epoch boundary continues the
uninterrupted run's draws. The draws follow torchvision's ``RandomHorizontalFlip`` and
``RandomErasing`` (area 2-33 % of the image, aspect 0.3-3.3, up to 10 tries, the first box that
fits; filled with 0 after normalisation, the ImageNet mean colour): ``tests/data/test_augment.py``
compares their statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mgn.config import DataConfig
from mgn.data.images import ImageDataset
from mgn.data.records import ImageRecord
from mgn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, input_transform

if TYPE_CHECKING:
    from mgn.data.sampler import Sample

ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10  # torchvision's RandomErasing
_UNIFORMS = 2 + 2 * ERASE_TRIES + 2  # flip, erase, the tries' areas and aspects, top, left


def draw_seed(seed: int, epoch: int, step: int, position: int) -> int:
    """The seed of one image's augmentation: its place in the run's global batches."""
    return int(np.random.SeedSequence([seed, epoch, step, position]).generate_state(1)[0])


@dataclass(frozen=True, slots=True)
class Augmentation:
    """What happens to one training image: a mirror, then an erased box (top, left, height, width)."""

    flip: bool
    box: tuple[int, int, int, int] | None

    def as_tensor(self) -> Tensor:
        """(5,) int64: flip, top, left, height, width (height 0: nothing erased)."""
        return torch.tensor([int(self.flip), *(self.box or (0, 0, 0, 0))], dtype=torch.int64)


def draw(seed: int, config: DataConfig) -> Augmentation:
    """The augmentation of the image whose draw seed is ``seed`` (always the same uniforms, so one
    field of the recipe does not shift another's draws)."""
    u = np.random.default_rng(seed).random(_UNIFORMS)
    flip = bool(config.random_flip and u[0] < 0.5)
    if not (config.random_erasing > 0 and u[1] < config.random_erasing):
        return Augmentation(flip, None)
    height, width = config.height, config.width
    tries = slice(2, 2 + ERASE_TRIES)
    area = height * width * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * u[tries])
    log_low, log_high = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    aspect = np.exp(log_low + (log_high - log_low) * u[2 + ERASE_TRIES : 2 + 2 * ERASE_TRIES])
    heights = np.round(np.sqrt(area * aspect)).astype(int)
    widths = np.round(np.sqrt(area / aspect)).astype(int)
    fits = np.flatnonzero((heights < height) & (widths < width))
    if len(fits) == 0:
        return Augmentation(flip, None)
    h, w = int(heights[fits[0]]), int(widths[fits[0]])
    top, left = int(u[-2] * (height - h + 1)), int(u[-1] * (width - w + 1))
    return Augmentation(flip, (top, left, h, w))


def augment_image(image: Tensor, augmentation: Augmentation) -> Tensor:
    """A normalised (3, H, W) image, mirrored and erased as drawn."""
    if augmentation.flip:
        image = image.flip(-1)
    if augmentation.box is not None:
        top, left, h, w = augmentation.box
        image = image.clone()
        image[:, top : top + h, left : left + w] = 0
    return image


def augment_batch(images: Tensor, augmentations: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) on the training device and their (B, 5) ``Augmentation.as_tensor`` rows ->
    normalised images (B, 3, H, W) in torch's default float type, as ``augment_image`` makes them."""
    device = images.device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = (images.to(torch.get_default_dtype()) / 255 - mean) / std
    flip, top, left, h, w = augmentations.to(device).unbind(1)  # (B,) each
    out = torch.where(flip.bool().view(-1, 1, 1, 1), out.flip(-1), out)
    rows = torch.arange(out.shape[-2], device=device).view(1, -1, 1)
    cols = torch.arange(out.shape[-1], device=device).view(1, 1, -1)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + h).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + w).view(-1, 1, 1))
    )
    return out.masked_fill(inside.unsqueeze(1), 0.0)


class AugmentedImages(torch.utils.data.Dataset[tuple[Tensor, int, int]]):
    """Training records read with PIL: ``Sample`` -> (augmented image (3, H, W), pid, camid)."""

    def __init__(self, records: Sequence[ImageRecord], config: DataConfig) -> None:
        self.images = ImageDataset(records, input_transform(config), cache=config.cache_images)
        self.config = config

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, sample: Sample) -> tuple[Tensor, int, int]:
        image, pid, camid = self.images[sample.record]
        return augment_image(image, draw(sample.draw, self.config)), pid, camid
