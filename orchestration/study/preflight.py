"""The pre-flight every study runs before Ray or MLflow start: what its trials will read, checked now.

For every distinct data set of the trials: its images read and decoded, and at least one query with a
match from another camera; per trial: its ImageNet weights found and its P x K sampler filled on its
number of workers. Storage, the tracking store, the results folder and the lock are checked by the
command layer (``orchestration.study.command``); the cluster's placement by the driver.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from mgn.backbone import find_pretrained
from mgn.config import DataConfig, DatasetName, Epoch, ExperimentConfig, Init
from mgn.data.folders import OFFICIAL
from mgn.data.loading import load_dataset
from mgn.data.records import DatasetError, ReidDataset
from mgn.data.sampler import PKBatchSampler
from orchestration.datasets.cache import local_data

K = TypeVar("K", bound=Hashable)  # how a study keys its trials: (row, seed) in a grid


@dataclass(frozen=True)
class TrialShape:
    """What the data gives a trial: optimisation steps per epoch and training identities."""

    steps_per_epoch: int
    num_classes: int


@dataclass(frozen=True)
class Preflight(Generic[K]):
    """Each trial's shape (by the key the study gave its config), and the data sets read (by data
    config)."""

    shapes: dict[K, TrialShape]
    datasets: dict[DataConfig, ReidDataset]


def preflight(
    configs: Mapping[K, ExperimentConfig], study: str, log: Callable[[str], None] = print
) -> Preflight[K]:
    """Check every trial of ``study`` (its title, for messages) before compute; raises ``DatasetError``,
    ``PretrainedWeightsMissing`` or ``ConfigError`` naming the problem and its fix."""
    datasets: dict[DataConfig, ReidDataset] = {}
    shapes: dict[K, TrialShape] = {}
    for key, config in configs.items():
        if config.data not in datasets:  # the data first: a wrong --data-root is the likelier mistake
            datasets[config.data] = _read(config.data, study, log)
        if config.model.init is Init.IMAGENET:
            find_pretrained(
                config.model.backbone, config.model.pretrained_path, config.model.imagenet_weights
            )
        dataset = datasets[config.data]
        sampler = PKBatchSampler(
            [r.pid for r in dataset.train],
            config.data.p,
            config.data.k,
            world_size=config.scaling.num_workers,
            with_replacement=config.data.sample_with_replacement,
            identity_epochs=config.data.epoch is Epoch.IDENTITIES,
        )
        shapes[key] = TrialShape(len(sampler), dataset.num_train_ids)
    return Preflight(shapes, datasets)


def _read(data: DataConfig, study: str, log: Callable[[str], None]) -> ReidDataset:
    """One data set, every image decoded once; its warnings printed, its cameras checked."""
    if data.dataset is not DatasetName.SYNTHETIC and data.root is None:
        name = data.dataset.value
        raise DatasetError(
            f"{study} needs {name}, and no --data-root was given. Download it from "
            f"{OFFICIAL.get(name, OFFICIAL['market1501']).download} and pass --data-root /path/to/datasets "
            f"(or run without --data-root for the smoke profile on the embedded synthetic data set)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_dataset(local_data(data, log))  # from object storage: this node's checked copy
    for warning in caught:
        log(f"warning: {warning.message}")
    log(f"data: {dataset.summary()}")
    check_cross_camera_matches(dataset)
    return dataset


def check_cross_camera_matches(dataset: ReidDataset) -> None:
    """The protocol scores a query only against its identity in *other* cameras: a data set where
    no query has such a match (one camera, say) would train for days and score nothing."""
    gallery = {(r.pid, r.camid) for r in dataset.gallery}
    cameras_of: dict[int, set[int]] = {}
    for pid, camid in gallery:
        cameras_of.setdefault(pid, set()).add(camid)
    if not any(cameras_of.get(q.pid, set()) - {q.camid} for q in dataset.query):
        cameras = sorted({r.camid + 1 for r in (*dataset.query, *dataset.gallery)})
        raise DatasetError(
            f"{dataset.name}: no query has an image of its identity from another camera in the gallery (cameras "
            f"found: {cameras}), so every query would be skipped by the Market-1501 protocol. Re-ID data needs "
            f"at least two cameras: check the <pid>_c<camera> names."
        )
