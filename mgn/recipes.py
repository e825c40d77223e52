"""Named recipes: each function returns a complete, frozen ``ExperimentConfig``.

* ``paper()``: §4.1 of the paper: ResNet-50 from ImageNet, 384x128, P=16 K=4, SGD lr 0.01
  momentum 0.9 weight decay 5e-4, lr x0.1 after epochs 40 and 60, 80 epochs, flip only.
* ``community()``: the best public port's recipe (seathiefwang/MGN-pytorch, the last line of its
  ``demo.sh``), which reaches ~95 R1 / ~86 mAP on Market-1501 (see its docstring).
* ``smoke()``: the embedded synthetic data set on a 2-core laptop: ResNet-18 from random
  weights at 96x32, a few epochs; sized so the whole Table 5 grid trains in minutes.

Variants derive from these with ``dataclasses.replace`` (see ``mgn.table5``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mgn.config import (
    Backbone,
    ClassifierInput,
    ConfigError,
    DataConfig,
    DatasetName,
    Epoch,
    EvalConfig,
    ExperimentConfig,
    Init,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    OptimizerKind,
    Pooling,
    Profile,
    Reduction,
    ScalingConfig,
    SyntheticConfig,
    TrainConfig,
)
from mgn.config_io import flatten, from_dict, merged, read_mapping, to_dict


def paper() -> ExperimentConfig:
    return ExperimentConfig(
        profile=Profile.PAPER,
        # bn_group 32: the paper's 64-image batch on two GPUs, each normalising its half (§4.1).
        model=ModelConfig(
            backbone=Backbone.RESNET50, branches=(1, 2, 3), reduction_dim=256, init=Init.IMAGENET, bn_group=32
        ),
        loss=LossConfig(softmax_weight=1.0, triplet_weight=1.0, triplet_margin=1.2),
        optimizer=OptimizerConfig(
            kind=OptimizerKind.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4, milestones=(40, 60)
        ),
        data=DataConfig(dataset=DatasetName.MARKET1501, height=384, width=128, p=16, k=4, random_flip=True),
        # An intermediate evaluation embeds Market's 19,281 test images twice (flip), about the forward
        # and backward passes of one epoch (12,936 images); every 10 epochs costs ~10%, 8 points.
        eval=EvalConfig(flip=True, rerank=True, interval=10),
        train=TrainConfig(epochs=80),
        scaling=ScalingConfig(num_workers=1),
    )


def community() -> ExperimentConfig:
    """seathiefwang/MGN-pytorch's best run, point by point: average pooling; softmax on the reduced
    256-d globals; L2-normalised test features; an epoch of every identity x K images (~47 steps on
    Market-1501, so 400 epochs ~ 18.8k steps); Adam (AMSGrad) lr 2e-4, weight decay 5e-4, x0.1 at
    epochs 320 and 380; 1 x cross entropy + 2 x triplet (margin 1.2), each the mean of its terms;
    random erasing with probability 0.5; P=16 x K=4; flip; ResNet-50 from ImageNet at 384x128;
    one GPU, so batch norm over the whole 64-image batch (``bn_group=None``).

    Checked against the port's ``option.py``, ``data/__init__.py`` and ``data/sampler.py``: the same
    pooling, feature size, lr, weight decay, margin, erasing probability and fill (0 after
    normalisation), and K images per identity drawn without replacement when it has K. Differences
    that remain: the port's epoch ends with a partial batch (751 = 46 x 16 + 15 identities on
    Market-1501), ours drops it, since every step must be a whole P x K batch to split over workers
    (46 steps instead of 47); an identity with fewer than K images is resampled with replacement
    here, by repeating its list there.
    """
    base = paper()
    return replace(
        base,
        profile=Profile.COMMUNITY,
        model=replace(
            base.model, global_classifier_input=ClassifierInput.REDUCED, pooling=Pooling.AVG, bn_group=None
        ),
        loss=LossConfig(
            softmax_weight=1.0,
            triplet_weight=2.0,
            triplet_margin=1.2,
            softmax_reduction=Reduction.MEAN,
            triplet_reduction=Reduction.MEAN,
        ),
        optimizer=OptimizerConfig(
            kind=OptimizerKind.ADAM, lr=2e-4, weight_decay=5e-4, amsgrad=True, milestones=(320, 380)
        ),
        data=replace(base.data, random_erasing=0.5, epoch=Epoch.IDENTITIES),
        # An intermediate evaluation embeds Market's 19,281 test images twice (flip): as many forward
        # passes as 4.3 of these short epochs' training; every 50 epochs costs 8.6% and draws 8 points.
        eval=replace(base.eval, normalize=True, interval=50),
        train=replace(base.train, epochs=400),
    )


def smoke() -> ExperimentConfig:
    base = paper()
    return replace(
        base,
        profile=Profile.SMOKE,
        # The paper's batch-norm groups of 32 (ghost batches in one process): the smoke run is the
        # paper's experiment in miniature, and its default run exercises the group path.
        model=replace(base.model, backbone=Backbone.RESNET18, init=Init.RANDOM, bn_group=32),
        # From random weights in a few epochs Adam converges where the paper's SGD (tuned for
        # ImageNet-initialised ResNet-50 over 80 epochs) does not; without the warm-up the plain
        # ResNet (IDE) rows, which have no BN after pooling, stay at chance level.
        optimizer=OptimizerConfig(
            kind=OptimizerKind.ADAM, lr=1e-3, weight_decay=5e-4, milestones=(7,), warmup_epochs=3
        ),
        data=replace(
            base.data,
            dataset=DatasetName.SYNTHETIC,
            height=96,
            width=32,
            p=16,
            k=4,
            cache_images=True,
            synthetic=SyntheticConfig(),
        ),
        # interval 4: one intermediate evaluation (epoch 4; 2.2 s, embedding the test set twice) beside
        # 8 epochs of 3.4 s on 2 cores is 8.1% of training; with epochs 0 (untrained) and 8, a curve.
        eval=replace(base.eval, rerank=True, untrained=True, interval=4),
        # No resumable checkpoints: a smoke trial is a minute; writing ~360 MB per epoch is not.
        train=replace(base.train, epochs=8, checkpoint_every=0),
    )


# Fields that say where, how fast or how often a run goes, not which experiment it is.
_NOT_THE_EXPERIMENT = (
    "profile", "data.root", "data.loader_workers", "data.eval_batch_size", "data.image_check",
    "data.skip_bad_images", "data.cache_images", "data.synthetic.", "model.pretrained_path", "train.seed",
    "train.log_every", "train.checkpoint_every", "scaling.", "eval.interval", "eval.untrained", "eval.max_rank",
)  # fmt: skip


def deviations(config: ExperimentConfig, reference: ExperimentConfig) -> list[str]:
    """How ``config`` departs from ``reference`` (the paper's recipe for the same table row), one
    ``key=ours (paper: theirs)`` per field of the experiment, e.g. ``train.amp=True (paper: False)``."""
    ours, paper_values = flatten(config), flatten(reference)
    return [
        f"{key}={value} (paper: {paper_values[key]})"
        for key, value in ours.items()
        if value != paper_values[key] and not key.startswith(_NOT_THE_EXPERIMENT)
    ]


RECIPES: dict[str, Callable[[], ExperimentConfig]] = {
    Profile.PAPER.value: paper,
    Profile.COMMUNITY.value: community,
    Profile.SMOKE.value: smoke,
}


def recipe(name: str) -> ExperimentConfig:
    """The recipe called ``name`` (``paper``, ``community`` or ``smoke``)."""
    if name not in RECIPES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[name]()


def load_yaml(path: str | Path) -> ExperimentConfig:
    """A config file, the file form of a recipe. Fields it leaves out come from the recipe its
    ``profile`` names (the paper's when it names none), so a partial ``profile: smoke`` file is a
    variant of ``smoke()``."""
    path = Path(path)
    data = read_mapping(path)
    profile = data.get("profile")
    if profile is None:
        return from_dict(ExperimentConfig, data)
    try:
        base = to_dict(recipe(str(profile)))
    except ValueError as error:
        raise ConfigError(f"config file {path}: profile: {error}") from None
    return from_dict(ExperimentConfig, merged(base, data))
