"""Frozen, typed configuration for every MGN experiment.

One ``ExperimentConfig`` describes a complete run: network (``ModelConfig``), losses
(``LossConfig``), optimiser and schedule (``OptimizerConfig``), data (``DataConfig``),
evaluation (``EvalConfig``), training loop (``TrainConfig``) and scale (``ScalingConfig``).
Named recipes live in ``mgn.recipes``; variants derive from them with ``dataclasses.replace``.

Each dataclass validates its own fields in ``__post_init__``; ``ExperimentConfig`` checks the
rules that span sections (e.g. a part count the feature map height cannot give). Errors name
the offending field and the fix, before any compute is spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# Bounds on sizes that pass "positive" and fail or waste later (an allocation error after training,
# or minutes of silence): each far above any use of this field, each named in its message.
MAX_SIDE = 2048  # pixels: person crops are a few hundred pixels high (the paper: 384x128)
MAX_BATCH_INPUT_BYTES = 16 * 2**30  # one batch of float32 input images (activations come on top)
MAX_SYNTHETIC_IMAGES = 1_000_000  # the embedded set is a smoke stand-in (Market-1501 has 32,668 images)
MAX_CMC_RANK = 100_000  # longer than the gallery of any supported set (Market-1501's has 19,732 images)


def _input_bytes(images: int, height: int, width: int) -> int:
    return images * 3 * height * width * 4


class Backbone(StrEnum):
    RESNET18 = "resnet18"
    RESNET34 = "resnet34"
    RESNET50 = "resnet50"
    RESNET101 = "resnet101"


class Pooling(StrEnum):
    MAX = "max"  # global max pooling, the paper's choice (§3.1, after [2])
    AVG = "avg"


class ClassifierInput(StrEnum):
    """Which global feature of a branch feeds its identity classifier."""

    POOLED = "pooled"  # z_g, 2048-d before reduction (paper §3.2)
    REDUCED = "reduced"  # f_g, 256-d after reduction ("MGN w/o TP", community ports)


class Init(StrEnum):
    IMAGENET = "imagenet"  # ImageNet weights from a local file or the torch hub cache
    RANDOM = "random"  # an explicit choice, recorded with every run


class ImagenetWeights(StrEnum):
    """Which torchvision ImageNet release initialises the backbone."""

    V1 = "IMAGENET1K_V1"  # the original release: the weights of the paper's era
    V2 = "IMAGENET1K_V2"  # torchvision's 2021 re-training (ResNet-50/101 only): a deviation, recorded


class Precision(StrEnum):
    """Arithmetic of test-feature extraction."""

    FP32 = "fp32"  # the paper's
    BF16 = "bf16"
    FP16 = "fp16"


class Reduction(StrEnum):
    """How the several loss terms of one kind (one per classifier / per global) are combined."""

    SUM = "sum"  # paper: every path to a loss is an independent supervisory signal
    MEAN = "mean"  # community ports: average over terms of a kind


class OptimizerKind(StrEnum):
    SGD = "sgd"
    ADAM = "adam"


class LRScaling(StrEnum):
    """How the learning rate follows the global batch P*K (which does not change with the workers)."""

    NONE = "none"  # lr is used as given, whatever the number of workers
    LINEAR = "linear"  # lr * P*K / reference_batch_size (Goyal et al., 2017)


class DatasetName(StrEnum):
    SYNTHETIC = "synthetic"
    MARKET1501 = "market1501"
    DUKEMTMC = "dukemtmc"
    CUHK03_LABELED = "cuhk03_labeled"
    CUHK03_DETECTED = "cuhk03_detected"
    CUSTOM = "custom"  # a user's own folders in Market-1501 naming


class Epoch(StrEnum):
    """What one training epoch is (the learning-rate milestones count these)."""

    IMAGES = "images"  # every training image about once: ~181 steps of P16K4 on Market-1501 (ours)
    IDENTITIES = "identities"  # every identity once, K images each: ~47 steps (the public MGN port)


class ImageCheck(StrEnum):
    """How image files are checked before training starts."""

    DECODE = "decode"  # decode every image once: catches truncated files
    HEADER = "header"  # open and verify headers only: fast, misses truncation
    NONE = "none"


class Metric(StrEnum):
    EUCLIDEAN = "euclidean"  # the paper's distance
    COSINE = "cosine"


class QueryPooling(StrEnum):
    """Market-1501 multiple query: how a query's gt_bbox group is merged (§4.2)."""

    MEAN = "mean"
    MAX = "max"


class Profile(StrEnum):
    SMOKE = "smoke"  # embedded synthetic data, small input, few epochs: a 2-core laptop
    PAPER = "paper"  # the paper's recipe at 384x128 (§4.1): GPUs
    COMMUNITY = "community"  # the recipe public ports use to reach ~95/86 on Market-1501


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """The network: ResNet backbone split after res_conv4_1 into one branch per entry of ``branches``.

    ``branches`` lists each branch's part count: 1 is the Global branch (res_conv5_1 with stride 2),
    N > 1 is a Part-N branch (stride 1, N horizontal stripes). ``(1, 2, 3)`` is MGN; ``(1,)`` with
    ``reduction_dim=None`` is the plain ResNet (IDE) baseline.
    """

    backbone: Backbone = Backbone.RESNET50
    branches: tuple[int, ...] = (1, 2, 3)
    reduction_dim: int | None = 256
    pooling: Pooling = Pooling.MAX
    global_classifier_input: ClassifierInput = ClassifierInput.POOLED
    init: Init = Init.IMAGENET
    imagenet_weights: ImagenetWeights = ImagenetWeights.V1
    pretrained_path: str | None = None  # an explicit weight file: used as given, whatever its release
    # Images whose batch-norm statistics are taken together in training: the paper's per-GPU batch
    # (P x K = 64 on two GPUs, 32 each). None: the whole global batch. A fact of the recipe, not of
    # the hardware: 1, 2 or 4 workers normalise the same groups of the same images (mgn.batchnorm).
    bn_group: int | None = 32

    def __post_init__(self) -> None:
        _require(
            len(self.branches) > 0,
            "model.branches is empty: give at least one branch, e.g. [1, 2, 3] for MGN",
        )
        _require(
            all(isinstance(n, int) and n >= 1 for n in self.branches),
            f"model.branches={list(self.branches)}: every part count must be an integer >= 1 (1 = Global branch)",
        )
        _require(
            self.reduction_dim is None or self.reduction_dim > 0,
            f"model.reduction_dim={self.reduction_dim}: must be positive, or null for no reduction (IDE baseline)",
        )
        _require(
            self.imagenet_weights is ImagenetWeights.V1
            or self.backbone in (Backbone.RESNET50, Backbone.RESNET101),
            f"model.imagenet_weights={self.imagenet_weights.value}: torchvision publishes only IMAGENET1K_V1 for "
            f"{self.backbone.value}",
        )
        _require(
            self.bn_group is None or self.bn_group >= 2,
            f"model.bn_group={self.bn_group}: batch norm needs groups of at least 2 images (null: the whole batch)",
        )
        _require(
            not (self.reduction_dim is None and self.global_classifier_input is ClassifierInput.REDUCED),
            "model.global_classifier_input=reduced needs a reduction layer: set model.reduction_dim (e.g. 256)",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LossConfig:
    """Softmax on every classifier, batch-hard triplet on the reduced globals f_g (paper §3.2)."""

    softmax_weight: float = 1.0
    triplet_weight: float = 1.0  # 0 disables the triplet loss ("w/o TP")
    triplet_margin: float = 1.2
    softmax_reduction: Reduction = Reduction.SUM
    triplet_reduction: Reduction = Reduction.SUM

    def __post_init__(self) -> None:
        _require(self.softmax_weight >= 0, f"loss.softmax_weight={self.softmax_weight}: must be >= 0")
        _require(self.triplet_weight >= 0, f"loss.triplet_weight={self.triplet_weight}: must be >= 0")
        _require(
            self.softmax_weight + self.triplet_weight > 0,
            "loss: softmax_weight and triplet_weight are both 0",
        )
        _require(self.triplet_margin >= 0, f"loss.triplet_margin={self.triplet_margin}: must be >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerConfig:
    kind: OptimizerKind = OptimizerKind.SGD
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    amsgrad: bool = False
    milestones: tuple[int, ...] = (40, 60)  # epochs after which lr *= gamma
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up from lr/10, epoch by epoch
    lr_scaling: LRScaling = LRScaling.NONE
    reference_batch_size: int = 64  # the global batch at which ``lr`` is specified

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"optimizer.lr={self.lr}: must be > 0")
        _require(self.weight_decay >= 0, f"optimizer.weight_decay={self.weight_decay}: must be >= 0")
        _require(0 <= self.momentum < 1, f"optimizer.momentum={self.momentum}: must be in [0, 1)")
        _require(0 < self.gamma <= 1, f"optimizer.gamma={self.gamma}: must be in (0, 1]")
        _require(
            list(self.milestones) == sorted(set(self.milestones)) and all(m > 0 for m in self.milestones),
            f"optimizer.milestones={list(self.milestones)}: must be increasing positive epochs",
        )
        _require(self.warmup_epochs >= 0, f"optimizer.warmup_epochs={self.warmup_epochs}: must be >= 0")
        _require(self.reference_batch_size > 0, "optimizer.reference_batch_size must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class SyntheticConfig:
    """Size and seed of the embedded synthetic data set (``mgn.data.synthetic``)."""

    num_train_ids: int = 64
    num_test_ids: int = 48
    images_per_id: int = 10  # spread over the cameras
    num_cameras: int = 6
    num_distractors: int = 40  # "0000" images in the gallery
    num_junk: int = 20  # "-1" images in the gallery
    bbox_jitter: float = 0.06  # detector-like misalignment, fraction of the crop size
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.num_train_ids >= 2, "data.synthetic.num_train_ids must be >= 2")
        _require(self.num_test_ids >= 2, "data.synthetic.num_test_ids must be >= 2")
        _require(
            self.images_per_id >= 2,
            "data.synthetic.images_per_id must be >= 2 (a query needs a gallery match)",
        )
        _require(
            2 <= self.num_cameras <= 9, "data.synthetic.num_cameras must be in 2..9 (Market naming c1..c9)"
        )
        _require(self.num_distractors >= 0 and self.num_junk >= 0, "data.synthetic: counts must be >= 0")
        images = (self.num_train_ids + self.num_test_ids) * self.images_per_id + self.num_distractors + self.num_junk
        _require(
            images <= MAX_SYNTHETIC_IMAGES,
            f"data.synthetic: {images:,} images asked; the embedded set is a stand-in for smoke runs (at most "
            f"{MAX_SYNTHETIC_IMAGES:,}): give a real data set (--data-root) for scale",
        )
        _require(0 <= self.bbox_jitter < 0.5, "data.synthetic.bbox_jitter must be in [0, 0.5)")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    dataset: DatasetName = DatasetName.MARKET1501
    root: str | None = None  # None: the synthetic cache, or $MGN_DATA for real sets
    height: int = 384
    width: int = 128
    p: int = 16  # identities per global batch, split over the workers (P/W each)
    k: int = 4  # images per identity
    sample_with_replacement: bool = True  # ids with fewer than K images are resampled
    epoch: Epoch = Epoch.IMAGES
    random_flip: bool = True  # the paper's only augmentation (§4.1)
    random_erasing: float = 0.0  # probability (Zhong et al., 2020); community recipe 0.5
    # Decoding processes per training worker; None: 0 on CPU (they would take the cores training
    # uses), the worker's CPUs minus one on a GPU (the GPU would otherwise wait on JPEG decoding).
    loader_workers: int | None = None
    eval_batch_size: int = 128
    image_check: ImageCheck = ImageCheck.DECODE
    skip_bad_images: bool = False  # drop unreadable images (and count them) instead of failing
    cache_images: bool = False  # keep decoded images in memory (small data sets)
    # Decode and resize every training image once into shared uint8 memory, augment batches on the
    # training device (mgn.data.decoded). None: on a GPU when it takes < 1/4 of the free memory.
    decoded_cache: bool | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # Hold out this many training identities as a query/gallery protocol (mgn.data.validation) and
    # evaluate on them instead of the test set, which is then never read: for choosing a recipe.
    validation_ids: int = 0

    def __post_init__(self) -> None:
        _require(self.validation_ids >= 0, f"data.validation_ids={self.validation_ids}: must be >= 0")
        _require(
            self.height >= 32 and self.width >= 16, f"data: input {self.height}x{self.width} is too small"
        )
        _require(
            self.height <= MAX_SIDE and self.width <= MAX_SIDE,
            f"data: input {self.height}x{self.width} is larger than {MAX_SIDE} pixels a side; person crops are "
            "a few hundred pixels (the paper: data.height=384 data.width=128)",
        )
        _require(self.p >= 2, f"data.p={self.p}: batch-hard triplet needs at least 2 identities per batch")
        _require(self.k >= 1, f"data.k={self.k}: must be >= 1")
        _require(
            0 <= self.random_erasing <= 1,
            f"data.random_erasing={self.random_erasing}: a probability in [0, 1]",
        )
        _require(
            self.loader_workers is None or self.loader_workers >= 0,
            "data.loader_workers must be >= 0 (or null: chosen from the device)",
        )
        _require(self.eval_batch_size >= 1, "data.eval_batch_size must be >= 1")
        for name, images in (("data.eval_batch_size", self.eval_batch_size), ("data.p x data.k", self.batch_size)):
            size = _input_bytes(images, self.height, self.width)
            _require(
                size <= MAX_BATCH_INPUT_BYTES,
                f"{name}={images:,}: one batch of {self.height}x{self.width} images is {size / 2**30:,.1f} GiB of "
                f"input before any activation (at most {MAX_BATCH_INPUT_BYTES // 2**30} GiB); give a smaller batch",
            )
        _require(
            self.dataset is not DatasetName.CUSTOM or self.root is not None,
            "data.dataset=custom needs data.root: the folder holding bounding_box_train/, bounding_box_test/, query/",
        )

    @property
    def batch_size(self) -> int:
        """Images per global batch: P identities x K images (§4.1), over all workers together."""
        return self.p * self.k


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    # Also evaluate every N epochs (0: only at the end), for the metric curves: those evaluations are
    # the plain single-query ranking only (no re-ranking, multiple query or branches), so that a
    # recipe's interval costs about 10% of its training (each recipe's comment gives its measurement).
    interval: int = 0
    flip: bool = True  # average features of the image and its mirror (§4.1)
    normalize: bool = False  # L2-normalise features before distances
    metric: Metric = Metric.EUCLIDEAN
    rerank: bool = True  # also report k-reciprocal re-ranking (Zhong et al., 2017)
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    multi_query: bool = False  # Market-1501 multiple query (needs gt_bbox)
    query_pooling: QueryPooling = QueryPooling.MEAN
    max_rank: int = 50
    untrained: bool = False  # also evaluate the network before training (a baseline to beat)
    precision: Precision = Precision.FP32  # of feature extraction (bf16/fp16: autocast, a recorded deviation)

    def __post_init__(self) -> None:
        _require(self.interval >= 0, f"eval.interval={self.interval}: must be >= 0")
        _require(
            self.rerank_k1 >= 1 and self.rerank_k2 >= 1, "eval.rerank_k1 and eval.rerank_k2 must be >= 1"
        )
        _require(self.rerank_k2 <= self.rerank_k1 + 1, "eval.rerank_k2 must be <= rerank_k1 + 1")
        _require(0 <= self.rerank_lambda <= 1, "eval.rerank_lambda must be in [0, 1]")
        _require(self.max_rank >= 10, "eval.max_rank must be >= 10 (tables report rank-10)")
        _require(
            self.max_rank <= MAX_CMC_RANK,
            f"eval.max_rank={self.max_rank}: longer than any gallery (at most {MAX_CMC_RANK:,}); 50 is the usual",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    epochs: int = 80
    seed: int = 0
    amp: bool = False  # mixed precision on CUDA (bf16, else fp16); the paper trained in fp32
    channels_last: bool = False
    log_every: int = 0  # print a line every N iterations; 0 = once per epoch
    checkpoint_every: int = 1  # epochs between resumable checkpoints (and after the last); 0 = none

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"train.epochs={self.epochs}: must be >= 1")
        _require(self.checkpoint_every >= 0, f"train.checkpoint_every={self.checkpoint_every}: must be >= 0")
        _require(self.seed >= 0, f"train.seed={self.seed}: must be >= 0")
        _require(self.log_every >= 0, "train.log_every must be >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class ScalingConfig:
    """How many training workers a trial gets; read by ``orchestration`` (Ray Train)."""

    num_workers: int = 1
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    cpus_per_worker: int = 1
    # torch.distributed collectives (NCCL / gloo) give up after this long. Every rank extracts its
    # share of the test features, but rank 0 alone computes the metrics (re-ranking, multiple
    # query) while the others wait in Ray's report barrier, not in a collective.
    collective_timeout_s: int = 1800

    def __post_init__(self) -> None:
        _require(self.num_workers >= 1, f"scaling.num_workers={self.num_workers}: must be >= 1")
        _require(self.cpus_per_worker >= 1, f"scaling.cpus_per_worker={self.cpus_per_worker}: must be >= 1")
        _require(self.collective_timeout_s >= 10, "scaling.collective_timeout_s must be >= 10 seconds")


@dataclass(frozen=True, slots=True)
class BatchNormGroups:
    """The global batch's batch-norm groups on W workers: each worker computes ``per_rank`` images;
    a group is ``images`` of them. Smaller than a worker's share: ``ghosts`` groups inside it; larger:
    ``ranks`` neighbouring workers share one group's statistics (``mgn.batchnorm``)."""

    images: int
    per_rank: int

    @property
    def ghosts(self) -> int:
        return max(1, self.per_rank // self.images)

    @property
    def ranks(self) -> int:
        return max(1, self.images // self.per_rank)


def batch_norm_groups(batch: int, k: int, workers: int, group: int | None) -> BatchNormGroups:
    """The layout of ``model.bn_group`` on ``workers`` workers, or ``ConfigError`` naming the fix."""
    per_rank = batch // workers
    if group is None:
        return BatchNormGroups(batch, per_rank)
    _require(
        group % k == 0 and batch % group == 0,
        f"model.bn_group={group}: a group must hold whole identities (a multiple of data.k={k}) and divide the "
        f"global batch P x K = {batch}: use e.g. model.bn_group={batch // 2 if (batch // 2) % k == 0 else batch} "
        f"or null (the whole batch)",
    )
    _require(
        group % per_rank == 0 or per_rank % group == 0,
        f"model.bn_group={group} with {workers} workers of {per_rank} images each: a group must be a whole "
        f"number of workers' shares or a whole part of one; change --workers or model.bn_group",
    )
    return BatchNormGroups(group, per_rank)


def fitting_p(p: int, k: int, workers: int, group: int | None) -> int:
    """The P nearest ``p`` that splits over ``workers`` and forms the BN groups: what a refusal
    advises (the nearest multiple of W alone, 15 for P=16 on 3 workers, was refused next for its
    groups of 32)."""

    def fits(candidate: int) -> bool:
        try:
            batch_norm_groups(candidate * k, k, workers, group)
        except ConfigError:
            return False
        return candidate % workers == 0

    found = [c for c in range(max(2, workers), 8 * max(p, workers) + 1) if fits(c)]
    return min(found, key=lambda c: (abs(c - p), c)) if found else workers


# Stride from the input to the Part-N branch feature map (stem /4, res_conv3 /8, res_conv4 /16);
# the Global branch halves it once more in res_conv5_1.
PART_MAP_STRIDE = 16
GLOBAL_MAP_STRIDE = 32


@dataclass(frozen=True, kw_only=True, slots=True)
class ExperimentConfig:
    profile: Profile = Profile.PAPER
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)

    def __post_init__(self) -> None:
        map_height = self.data.height // PART_MAP_STRIDE
        for parts in self.model.branches:
            _require(
                parts == 1 or parts <= map_height,
                f"model.branches has a Part-{parts} branch, but a {self.data.height}-pixel-high input gives a "
                f"{map_height}-row feature map: use data.height >= {parts * PART_MAP_STRIDE} "
                f"(the paper's 384 gives 24 rows) or fewer parts",
            )
        _require(
            self.data.height >= GLOBAL_MAP_STRIDE and self.data.width >= GLOBAL_MAP_STRIDE,
            f"data: input {self.data.height}x{self.data.width} is smaller than the network stride {GLOBAL_MAP_STRIDE}",
        )
        workers, group = self.scaling.num_workers, self.model.bn_group
        _require(
            self.data.p % workers == 0,
            f"data.p={self.data.p} identities per global batch cannot be split over {workers} workers: "
            f"each worker takes P/W whole identities, so make data.p a multiple of {workers}"
            + (f" that also forms model.bn_group={group} groups" if group else "")
            + f" (e.g. data.p={fitting_p(self.data.p, self.data.k, workers, group)}) or change --workers",
        )
        _require(
            self.loss.triplet_weight == 0 or self.data.k >= 2,
            f"data.k={self.data.k}: the triplet loss needs K >= 2 images per identity (or loss.triplet_weight=0)",
        )
        batch_norm_groups(self.data.batch_size, self.data.k, workers, self.model.bn_group)

    @property
    def global_batch_size(self) -> int:
        """P x K: the batch of one optimisation step, however many workers share it."""
        return self.data.batch_size

    @property
    def worker_batch_size(self) -> int:
        """Images each worker computes per step: P/W identities x K."""
        return self.data.p // self.scaling.num_workers * self.data.k

    @property
    def bn_groups(self) -> BatchNormGroups:
        """How the BN groups of the global batch fall on the workers."""
        return batch_norm_groups(
            self.data.batch_size, self.data.k, self.scaling.num_workers, self.model.bn_group
        )

    @property
    def effective_lr(self) -> float:
        """The learning rate actually used, after the explicit batch scaling rule."""
        if self.optimizer.lr_scaling is LRScaling.LINEAR:
            return self.optimizer.lr * self.global_batch_size / self.optimizer.reference_batch_size
        return self.optimizer.lr
