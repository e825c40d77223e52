"""torchvision ResNets and their ImageNet weights, read from disk only.

Weights are never downloaded: they come from ``ModelConfig.pretrained_path`` or from the torch hub
cache (``$TORCH_HOME/hub/checkpoints``), where ``torchvision`` itself would have saved them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

import torch
import torchvision
from torch import nn

from mgn.config import Backbone, ImagenetWeights, Init, ModelConfig

_WEIGHTS = {
    Backbone.RESNET18: torchvision.models.ResNet18_Weights,
    Backbone.RESNET34: torchvision.models.ResNet34_Weights,
    Backbone.RESNET50: torchvision.models.ResNet50_Weights,
    Backbone.RESNET101: torchvision.models.ResNet101_Weights,
}


class PretrainedWeightsMissing(FileNotFoundError):
    """ImageNet weights were asked for and are not on disk."""


def hub_weight_files(backbone: Backbone) -> list[Path]:
    """Where torchvision caches this backbone's ImageNet weights (every published version)."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [checkpoints / Path(weights.url).name for weights in _WEIGHTS[backbone]]


def find_pretrained(
    backbone: Backbone, path: str | None, release: ImagenetWeights = ImagenetWeights.V1
) -> Path:
    """The weight file to load: ``path`` as given, else the hub-cache file of ``release``; or a
    ``PretrainedWeightsMissing`` that says where to put it. Another release's file in the cache is
    not taken silently: the error names it and how to ask for it (which is then recorded)."""
    if path is not None:
        if Path(path).is_file():
            return Path(path)
        raise PretrainedWeightsMissing(
            f"model.pretrained_path={path} does not exist. Put the ImageNet {backbone.value} weights there "
            f"(e.g. {_WEIGHTS[backbone].IMAGENET1K_V1.url}), or set model.init=random to train from scratch."
        )
    wanted = Path(torch.hub.get_dir()) / "checkpoints" / Path(_WEIGHTS[backbone][release.value].url).name
    if wanted.is_file():
        return wanted
    others = [f for f in hub_weight_files(backbone) if f.is_file()]
    if others:
        raise PretrainedWeightsMissing(
            f"model.imagenet_weights={release.value} asks for {wanted.name}, but the hub cache holds "
            f"{', '.join(f.name for f in others)} of another release. Put {wanted.name} "
            f"({_WEIGHTS[backbone][release.value].url}) in {wanted.parent}, or ask for the release you have "
            f"with --set model.imagenet_weights=... (a deviation, recorded), or pass the file with "
            f"--set model.pretrained_path=/path/to/file.pth."
        )
    raise PretrainedWeightsMissing(
        f"ImageNet weights for {backbone.value} were asked for (model.init=imagenet) but are not on disk.\n"
        f"Download\n  {_WEIGHTS[backbone][release.value].url}\non a machine with internet access and copy it "
        f"to\n  {wanted}\nor pass its path with --set model.pretrained_path=/path/to/file.pth; "
        f"or train from random initialisation with --set model.init=random (recorded with the run)."
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrained_identity(config: ModelConfig) -> dict[str, str]:
    """The weight file a run starts from, by name and sha256 (run tags); empty for random init."""
    if config.init is not Init.IMAGENET:
        return {}
    path = find_pretrained(config.backbone, config.pretrained_path, config.imagenet_weights)
    return {"pretrained_file": path.name, "pretrained_sha256": sha256(path)}


def build_resnet(
    backbone: Backbone,
    init: Init,
    pretrained_path: str | None = None,
    release: ImagenetWeights = ImagenetWeights.V1,
) -> torchvision.models.ResNet:
    """A torchvision ResNet, randomly initialised or loaded with ImageNet weights from disk."""
    resnet: torchvision.models.ResNet = getattr(torchvision.models, backbone.value)(weights=None)
    if init is Init.IMAGENET:
        weight_file = find_pretrained(backbone, pretrained_path, release)
        state = torch.load(weight_file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            missing, unexpected = resnet.load_state_dict(state, strict=False)
        except (RuntimeError, TypeError, AttributeError) as error:  # shape mismatches, or not a state dict
            raise ValueError(
                f"{weight_file} does not hold {backbone.value} weights: {str(error)[:300]}"
            ) from None
        # The ImageNet classifier (fc) is the only part MGN does not use; anything else is a wrong file.
        relevant = [k for k in missing + unexpected if not k.startswith("fc.")]
        if relevant:
            raise ValueError(
                f"{weight_file} does not hold {backbone.value} weights: "
                f"{len(relevant)} mismatched keys, e.g. {relevant[:3]}"
            )
    return resnet


def set_first_block_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the down-sampling stride of a ResNet stage's first block (res_conv5_1 in the paper)."""
    block = layer[0]
    # torchvision strides the 3x3 conv: conv2 in Bottleneck (ResNet v1.5), conv1 in BasicBlock.
    conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    cast(nn.Conv2d, conv).stride = (stride, stride)
    if isinstance(block.downsample, nn.Sequential):  # (1x1 conv, BN) on the shortcut, or None
        cast(nn.Conv2d, block.downsample[0]).stride = (stride, stride)


def feature_channels(resnet: torchvision.models.ResNet) -> int:
    """Channels of the final stage (2048 for ResNet-50/101, 512 for ResNet-18/34)."""
    return int(resnet.fc.in_features)
