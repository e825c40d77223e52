"""Training images decoded once per node, and augmented as whole batches on the training device.

An H100 consumes MGN-R50 batches far faster than PIL decodes JPEGs on a few cores. So every
training image is decoded and resized once (the same bicubic ``Resize`` as the PIL path) into one
uint8 array (N, 3, H, W): Market-1501's 12,936 images at 384x128 are 1.9 GB. The array is a file
in the node's shared memory (``/dev/shm``), named by what it holds: the first process that needs it
decodes it (one decoder at a time), every other rank and trial on the node maps the same pages,
and the last one to let go deletes it (one 1.9 GB copy per node, not one per rank). Loaders then yield
uint8 batches with each image's drawn augmentation, and ``mgn.data.augment.augment_batch`` applies
it on the device: the PIL path's tensors (``tests/data/test_augment.py``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from torch import Tensor

from mgn.config import DataConfig
from mgn.data.augment import draw
from mgn.data.images import load_image
from mgn.data.records import ImageRecord
from mgn.data.sampler import Sample

SHARED_MEMORY = Path("/dev/shm")


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


def cache_name(records: Sequence[ImageRecord], config: DataConfig) -> str:
    """The node-wide name of these records' decoded array: their files (path, size, mtime) and size."""
    digest = hashlib.sha256(f"{config.height}x{config.width}".encode())
    for record in records:
        stat = os.stat(record.path)
        digest.update(f"\n{record.path}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return f"mgn-decoded-{digest.hexdigest()[:24]}.u8"


def _decode_into(images: Tensor, records: Sequence[ImageRecord], config: DataConfig) -> None:
    resize = T.Resize((config.height, config.width), interpolation=T.InterpolationMode.BICUBIC)
    for index, record in enumerate(records):
        pixels = np.array(resize(load_image(record.path)), dtype=np.uint8)  # (H, W, 3)
        images[index] = torch.from_numpy(pixels).permute(2, 0, 1)


def _release(lock: int, path: Path, owner: int) -> None:
    """Let go of the node's array; the last holder (no shared lock left) deletes it."""
    if os.getpid() != owner:  # a forked loader process shares the lock: only its creator lets go
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass  # another rank or trial still maps it
    finally:
        os.close(lock)


class DecodedImages(torch.utils.data.Dataset[tuple[Tensor, int, int, Tensor]]):
    """Training records -> (uint8 image (3, H, W), pid, camid, augmentation (5,)) for ``Sample``s,
    read from the node's one decoded array (a private copy where shared memory is missing or full)."""

    def __init__(self, records: Sequence[ImageRecord], config: DataConfig) -> None:
        self.records, self.config = list(records), config
        shape = (len(self.records), 3, config.height, config.width)
        size = cache_bytes(len(self.records), config)
        if SHARED_MEMORY.is_dir() and shutil.disk_usage(SHARED_MEMORY).free > size:
            self.images = self._node_array(SHARED_MEMORY / cache_name(self.records, config), shape, size)
        else:
            self.images = torch.empty(shape, dtype=torch.uint8)
            _decode_into(self.images, self.records, config)
            self.images.share_memory_()  # loader processes read it without a copy

    def _node_array(self, path: Path, shape: tuple[int, ...], size: int) -> Tensor:
        """Map ``path``, decoding it first if no one on the node has; held (a shared lock) until
        this dataset is collected, so the last user alone can delete it."""
        use = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        build = os.open(path.with_suffix(".build"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(build, fcntl.LOCK_EX)  # one decoder at a time; the others wait, then map its array
            fcntl.flock(use, fcntl.LOCK_SH)  # a user from now on: the array cannot be deleted under us
            if not path.exists():
                self._decode_file(path, shape, size)
            images = torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8).view(shape)
        except BaseException:
            os.close(use)
            raise
        finally:
            os.close(build)
        weakref.finalize(self, _release, use, path, os.getpid())
        return images

    def _decode_file(self, path: Path, shape: tuple[int, ...], size: int) -> None:
        """Decode into a partial file and rename it: the name only ever holds a whole array."""
        partial = path.with_suffix(f".partial-{os.getpid()}")
        try:
            with open(partial, "wb") as file:
                file.truncate(size)
            _decode_into(
                torch.from_file(str(partial), shared=True, size=size, dtype=torch.uint8).view(shape),
                self.records,
                self.config,
            )
            partial.rename(path)
        finally:
            partial.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, sample: Sample) -> tuple[Tensor, int, int, Tensor]:
        record = self.records[sample.record]
        return self.images[sample.record], record.pid, record.camid, draw(sample.draw, self.config).as_tensor()
