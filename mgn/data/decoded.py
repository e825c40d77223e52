"""Training images decoded once, and augmented as whole batches on the training device.

An H100 consumes MGN-R50 batches far faster than PIL decodes JPEGs on a few cores. So every
training image is decoded and resized once (the same bicubic ``Resize`` as the PIL path) into one
uint8 tensor (N, 3, H, W) in shared memory, which the loader processes read without copying
(Market-1501's 12,936 images at 384x128 are 1.9 GB). Loaders then yield uint8 batches, and
``augment_batch`` does on the device what ``mgn.data.transforms.train_transform`` does per image:
scale to [0, 1], ImageNet normalisation, the paper's random flip (§4.1) and random erasing
(Zhong et al.: area 2-33 % of the image, aspect 0.3-3.3, up to 10 tries, filled with 0 after
normalisation), with the same statistics (``tests/data/test_decoded.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from torch import Tensor

from mgn.config import DataConfig
from mgn.data.images import load_image
from mgn.data.records import ImageRecord
from mgn.data.transforms import IMAGENET_MEAN, IMAGENET_STD

ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10  # torchvision's RandomErasing


def cache_bytes(num_images: int, config: DataConfig) -> int:
    return num_images * 3 * config.height * config.width


def available_memory() -> int:
    """Bytes of memory the system can still give (Linux ``MemAvailable``; total RAM elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def use_decoded_cache(config: DataConfig, num_images: int, device: torch.device | str) -> bool:
    """``data.decoded_cache``, or when unset: on a GPU, when the cache takes under a quarter of the
    free memory. CPU training keeps the per-image PIL path: decoding is ~1 % of a CPU step there."""
    if config.decoded_cache is not None:
        return config.decoded_cache
    return torch.device(device).type == "cuda" and cache_bytes(num_images, config) < available_memory() // 4


class DecodedImages(torch.utils.data.Dataset):
    """Records -> (uint8 image (3, H, W), pid, camid), all decoded up front into shared memory."""

    def __init__(self, records: Sequence[ImageRecord], config: DataConfig) -> None:
        self.records = list(records)
        resize = T.Resize((config.height, config.width), interpolation=T.InterpolationMode.BICUBIC)
        self.images = torch.empty((len(self.records), 3, config.height, config.width), dtype=torch.uint8)
        for index, record in enumerate(self.records):
            pixels = np.array(resize(load_image(record.path)), dtype=np.uint8)  # (H, W, 3)
            self.images[index] = torch.from_numpy(pixels).permute(2, 0, 1)
        self.images.share_memory_()  # loader processes read it without a copy

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        record = self.records[index]
        return self.images[index], record.pid, record.camid


def augment_batch(images: Tensor, config: DataConfig, generator: torch.Generator | None = None) -> Tensor:
    """uint8 (B, 3, H, W) on the training device -> normalised float (B, 3, H, W), flipped and erased
    per image as ``train_transform`` would."""
    device = images.device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = (images.float() / 255 - mean) / std
    batch, _, height, width = out.shape

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, device=device, generator=generator)

    if config.random_flip:
        out = torch.where((uniform(batch) < 0.5).view(-1, 1, 1, 1), out.flip(-1), out)
    if config.random_erasing > 0:
        out = out.masked_fill(_erasing_masks(batch, height, width, config.random_erasing, uniform), 0.0)
    return out


def _erasing_masks(batch: int, height: int, width: int, probability: float, uniform) -> Tensor:
    """(B, 1, H, W) masks of the rectangle each image loses (empty for images left whole)."""
    area = height * width * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * uniform(batch, ERASE_TRIES))
    log_low, log_high = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * uniform(batch, ERASE_TRIES))
    h = torch.round(torch.sqrt(area * aspect)).long()  # (B, tries)
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < height) & (w < width)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros_like(fits[:, 0], dtype=torch.long))
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    erase = (uniform(batch) < probability) & fits.any(1)
    top = (uniform(batch) * (height - h + 1).clamp(min=1)).long()
    left = (uniform(batch) * (width - w + 1).clamp(min=1)).long()
    rows = torch.arange(height, device=h.device).view(1, -1, 1)
    cols = torch.arange(width, device=h.device).view(1, 1, -1)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + h).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + w).view(-1, 1, 1))
    )
    return (inside & erase.view(-1, 1, 1)).unsqueeze(1)
