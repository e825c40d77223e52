"""The Multiple Granularity Network (Wang et al., 2018, §3.1, Fig. 3) and every Table 5 variant.

A ResNet is split after res_conv4_1 (torchvision ``layer3[0]``). The stem up to there is shared;
each branch owns its own copy of the rest of res_conv4 and of res_conv5, all initialised from the
same weights. A branch with part count 1 is the Global branch (res_conv5_1 strides by 2: a 12x4
map at 384x128); part count N > 1 is a Part-N branch (no down-sampling: 24x8), whose map is also
cut into N horizontal stripes. Every pooled feature is reduced to 256-d (1x1 conv + BN + ReLU)
and has its own identity classifier: nothing is shared between branches or features.

Shapes below use B = batch, C = backbone channels (2048 for ResNet-50), D = reduction_dim,
H x W = input size, and h x w = the Part-N map (H/16 x W/16).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from mgn.backbone import build_resnet, feature_channels, set_first_block_stride
from mgn.config import ClassifierInput, ModelConfig, Pooling


def branch_name(parts: int) -> str:
    return "Global" if parts == 1 else f"Part-{parts}"


@dataclass(frozen=True)
class MGNOutput:
    """What the network returns in train mode; every list is ordered branch by branch.

    Attributes:
        pooled_globals: z_g of each branch, (B, C): softmax input in the paper (§3.2).
        embedded_globals: f_g of each branch, (B, D): triplet input (and softmax for "w/o TP").
        embedded_parts: f_p of every stripe of every Part-N branch, (B, D) each.
        global_logits: one (B, num_classes) per branch, from z_g or f_g (config).
        part_logits: one (B, num_classes) per stripe.
    """

    pooled_globals: list[Tensor]
    embedded_globals: list[Tensor]
    embedded_parts: list[Tensor]
    global_logits: list[Tensor]
    part_logits: list[Tensor]


def _pool(x: Tensor, pooling: Pooling) -> Tensor:
    """(B, C, h, w) -> (B, C)."""
    return x.amax(dim=(2, 3)) if pooling is Pooling.MAX else x.mean(dim=(2, 3))


def _reduction(in_dim: int, out_dim: int) -> nn.Module:
    # A 1x1 conv on a pooled 1x1 map is a linear layer; BN1d + ReLU as in §3.1.
    linear = nn.Linear(in_dim, out_dim, bias=False)
    nn.init.kaiming_normal_(linear.weight, mode="fan_out")
    return nn.Sequential(linear, nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))


def _classifier(in_dim: int, num_classes: int) -> nn.Linear:
    classifier = nn.Linear(in_dim, num_classes)
    nn.init.normal_(classifier.weight, std=0.001)
    nn.init.zeros_(classifier.bias)
    return classifier


class Branch(nn.Module):
    """One branch: its own res_conv4_2.. and res_conv5, pooling, reductions and classifiers."""

    def __init__(
        self,
        layers: nn.Sequential,
        parts: int,
        channels: int,
        config: ModelConfig,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.parts = parts
        self.pooling = config.pooling
        self.layers = layers
        dim = config.reduction_dim or channels
        num_features = 1 + (parts if parts > 1 else 0)  # the global feature, then one per stripe
        if config.reduction_dim is None:
            self.reductions = nn.ModuleList([nn.Identity() for _ in range(num_features)])
        else:
            self.reductions = nn.ModuleList([_reduction(channels, dim) for _ in range(num_features)])
        global_in = channels if config.global_classifier_input is ClassifierInput.POOLED else dim
        self.classifier_on_pooled = config.global_classifier_input is ClassifierInput.POOLED
        self.classifiers = nn.ModuleList(
            [_classifier(global_in, num_classes)]
            + [_classifier(dim, num_classes) for _ in range(num_features - 1)]
        )
        self.embedding_dim = dim * num_features

    def pooled(self, shared: Tensor) -> list[Tensor]:
        """(B, C', H/16, W/16) -> [z_g, z_p1, ..., z_pN], each (B, C)."""
        x = self.layers(shared)  # (B, C, h, w), or (B, C, h/2, w/2) for the Global branch
        pooled = [_pool(x, self.pooling)]
        if self.parts > 1:
            # N horizontal stripes, equal when h is divisible by N (24 rows at 384x128 give 2, 3, 4, 6, 8);
            # otherwise sizes differ by one row, never overlapping.
            pooled += [_pool(stripe, self.pooling) for stripe in torch.tensor_split(x, self.parts, dim=2)]
        return pooled

    def embed(self, shared: Tensor) -> Tensor:
        """(B, C', H/16, W/16) -> (B, embedding_dim): [f_g, f_p1, ..., f_pN] concatenated."""
        return torch.cat(
            [reduce(z) for reduce, z in zip(self.reductions, self.pooled(shared), strict=True)], dim=1
        )


class Branches(nn.ModuleList):
    """An ``nn.ModuleList`` of ``Branch``: the same module (state-dict keys ``branches.i.``), typed
    for iteration."""

    def __iter__(self) -> Iterator[Branch]:
        return cast(Iterator[Branch], super().__iter__())


class MGN(nn.Module):
    """The MGN family.

    * ``embed(images)``: the test-time feature, every branch's f_g and f_p concatenated (§3.1);
    * ``feature_maps(images)``: each branch's last feature map, by branch name (Figs. 2 and 5);
    * ``forward(images)``: ``MGNOutput`` for the losses in train mode; in eval mode ``embed`` (so
      that wrappers that call the module, DDP, ``torch.onnx``, extract features).

    Example::

        model = MGN(ModelConfig(init=Init.RANDOM), num_classes=751).eval()
        embedding = model.embed(torch.randn(2, 3, 384, 128))  # (2, 2048) for MGN
        part2 = embedding[:, model.branch_columns([1])]  # (2, 768): the Part-2 branch only
    """

    def __init__(self, config: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: training needs at least 2 identities")
        self.config = config
        self.num_classes = num_classes
        resnet = build_resnet(config.backbone, config.init, config.pretrained_path, config.imagenet_weights)
        channels = feature_channels(resnet)
        # Shared trunk up to and including res_conv4_1 (§3.1).
        self.trunk = nn.Sequential(
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
            resnet.layer1,
            resnet.layer2,
            resnet.layer3[0],
        )
        branches = []
        for parts in config.branches:
            res_conv5 = copy.deepcopy(resnet.layer4)
            # The Global branch keeps res_conv5_1's down-sampling; Part-N branches drop it (Table 1).
            set_first_block_stride(res_conv5, 2 if parts == 1 else 1)
            layers = nn.Sequential(*copy.deepcopy(resnet.layer3[1:]), res_conv5)
            branches.append(Branch(layers, parts, channels, config, num_classes))
        self.branches = Branches(branches)

    @property
    def embedding_dim(self) -> int:
        return sum(branch.embedding_dim for branch in self.branches)

    def branch_slices(self) -> list[slice]:
        """The embedding columns of each branch, in ``config.branches`` order."""
        slices, start = [], 0
        for branch in self.branches:
            slices.append(slice(start, start + branch.embedding_dim))
            start += branch.embedding_dim
        return slices

    def branch_columns(self, branch_indices: Sequence[int]) -> list[int]:
        """Embedding column indices of the given branches (e.g. ``[1]`` = Part-2 in MGN)."""
        slices = self.branch_slices()
        return [c for i in branch_indices for c in range(slices[i].start, slices[i].stop)]

    def embed(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> (B, embedding_dim). BN as the module's mode: call ``eval()`` first
        for test features."""
        shared = self.trunk(images)  # (B, C/2, H/16, W/16)
        return torch.cat([branch.embed(shared) for branch in self.branches], dim=1)

    def feature_maps(self, images: Tensor) -> dict[str, Tensor]:
        """images (B, 3, H, W) -> {branch name: its last feature map (B, C, h, w)}, in branch order."""
        shared = self.trunk(images)
        return {branch_name(branch.parts): branch.layers(shared) for branch in self.branches}

    def forward(self, images: Tensor) -> MGNOutput | Tensor:
        """images (B, 3, H, W) -> ``MGNOutput`` (train) or ``embed(images)`` (eval)."""
        if not self.training:
            return self.embed(images)
        shared = self.trunk(images)  # (B, C/2, H/16, W/16)
        out = MGNOutput([], [], [], [], [])
        for branch in self.branches:
            pooled = branch.pooled(shared)
            embedded = [reduce(z) for reduce, z in zip(branch.reductions, pooled, strict=True)]
            out.pooled_globals.append(pooled[0])
            out.embedded_globals.append(embedded[0])
            out.embedded_parts.extend(embedded[1:])
            global_input = pooled[0] if branch.classifier_on_pooled else embedded[0]
            out.global_logits.append(branch.classifiers[0](global_input))
            out.part_logits.extend(
                head(f) for head, f in zip(branch.classifiers[1:], embedded[1:], strict=True)
            )
        return out
