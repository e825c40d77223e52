"""From ``DataConfig`` to a checked ``ReidDataset`` and its loaders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mgn.config import DataConfig, DatasetName, Epoch
from mgn.data.augment import AugmentedImages
from mgn.data.cuhk03 import RELEASE_LAYOUT, load_cuhk03_release
from mgn.data.decoded import DecodedImages, use_decoded_cache
from mgn.data.folders import MARKET_LAYOUT, OFFICIAL, load_market_style, resolve_root
from mgn.data.images import ImageDataset, check_images
from mgn.data.records import DatasetError, ImageRecord, ReidDataset
from mgn.data.sampler import PKBatchSampler
from mgn.data.synthetic import ensure_synthetic
from mgn.data.transforms import input_transform
from mgn.data.validation import hold_out
from mgn.distributed import shard_batches


def default_data_root() -> Path:
    """``$MGN_DATA`` or ``./data``: where real data sets are looked for when ``data.root`` is unset."""
    return Path(os.environ.get("MGN_DATA", "data")).absolute()


def locate(config: DataConfig) -> Path:
    """The folder a data set is read from (generating the synthetic set on first use)."""
    if config.dataset is DatasetName.SYNTHETIC:
        return ensure_synthetic(config.synthetic, config.root)
    return Path(config.root) if config.root else default_data_root()


def read_dataset(config: DataConfig) -> ReidDataset:
    """Parse the data set's layout (no image decoding); with ``data.validation_ids``, its validation
    split in place of the test protocol."""
    dataset = _read_layout(config)
    if config.validation_ids:
        return hold_out(dataset, config.validation_ids, min_train_ids=config.p)
    return dataset


def _read_layout(config: DataConfig) -> ReidDataset:
    root = locate(config)
    name = config.dataset
    if name in (DatasetName.CUHK03_LABELED, DatasetName.CUHK03_DETECTED):
        labeled = name is DatasetName.CUHK03_LABELED
        market_style = resolve_root(root, name.value)
        if (market_style / "bounding_box_train").is_dir():
            return load_market_style(market_style, name.value)
        if (root / f"images_{'labeled' if labeled else 'detected'}").is_dir():
            return load_cuhk03_release(root, labeled)
        raise DatasetError(
            f"no CUHK03-NP data under {root}. Download it from {OFFICIAL[name.value].download} and either unpack "
            f"cuhk03-np/ there (Market style:\n{MARKET_LAYOUT.replace('<root>', str(root / 'cuhk03-np/labeled'))})\n"
            f"or use the original release:\n{RELEASE_LAYOUT.replace('<root>', str(root))}"
        )
    key = "synthetic" if name is DatasetName.SYNTHETIC else name.value
    return load_market_style(root, key)


def load_dataset(config: DataConfig) -> ReidDataset:
    """Read the data set and check its images, before any compute is spent."""
    dataset = read_dataset(config)

    def checked(records: list[ImageRecord], split: str) -> list[ImageRecord]:
        kept = check_images(records, config.image_check, config.skip_bad_images, split)
        if not kept:
            raise DatasetError(f"{dataset.name}: no readable {split} images remain")
        return kept

    return ReidDataset(
        dataset.name,
        checked(dataset.train, "train"),
        checked(dataset.query, "query"),
        checked(dataset.gallery, "gallery"),
        check_images(dataset.multi_query, config.image_check, config.skip_bad_images, "gt_bbox"),
    )


def loader_workers(config: DataConfig, device: torch.device | str = "cpu", cpus: int = 1) -> int:
    """``data.loader_workers``, or when unset: none on CPU, where decoding processes would take the
    cores the training threads use (``benchmarks/loader_speed.py``), and the worker's other CPUs on
    a GPU, which would otherwise wait on JPEG decoding."""
    if config.loader_workers is not None:
        return config.loader_workers
    return max(1, cpus - 1) if torch.device(device).type == "cuda" else 0


def train_loader(
    records: list[ImageRecord],
    config: DataConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cpus: int = 1,
) -> DataLoader[Any]:
    """This rank's share (P/W identities x K images) of every global P x K batch: augmented float
    images, or uint8 ones from the decoded cache with their drawn augmentations, which
    ``mgn.data.augment.augment_batch`` applies on the device. The draws come with the sampler's
    items (one per global batch position), so nothing here depends on the rank."""
    sampler = PKBatchSampler(
        [r.pid for r in records],
        config.p,
        config.k,
        rank=rank,
        world_size=world_size,
        seed=seed,
        with_replacement=config.sample_with_replacement,
        identity_epochs=config.epoch is Epoch.IDENTITIES,
    )
    workers = loader_workers(config, device, cpus)
    dataset: DecodedImages | AugmentedImages
    if use_decoded_cache(config, len(records), device):  # uint8 batches, augmented on the device
        dataset = DecodedImages(records, config)
    else:
        dataset = AugmentedImages(records, config)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
    )


def eval_loader(
    records: list[ImageRecord],
    config: DataConfig,
    *,
    device: torch.device | str = "cpu",
    cpus: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[Any]:
    """Un-augmented images in record order, batches of ``eval_batch_size``: (images, pids, camids).
    With ``world_size`` > 1, only this rank's batches (``mgn.distributed.shard_batches``)."""
    return DataLoader(
        ImageDataset(records, input_transform(config), cache=config.cache_images),
        batch_sampler=shard_batches(len(records), config.eval_batch_size, rank, world_size),
        num_workers=loader_workers(config, device, cpus),
        pin_memory=torch.device(device).type == "cuda",
    )
