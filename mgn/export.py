"""Deployment: the embedding network with its input normalisation inside, exported to ONNX.

The exported graph takes float32 RGB images in [0, 1], (N, 3, H, W) with a dynamic batch, and
returns the flip-averaged (§4.1), L2-normalised embedding (N, D): everything between a decoded
crop and a nearest-neighbour search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mgn.model import MGN


class EmbeddingNetwork(nn.Module):
    """images in [0, 1] (N, 3, H, W) -> embedding (N, D); ImageNet normalisation inside."""

    def __init__(self, model: MGN, flip: bool = True, normalize: bool = True) -> None:
        super().__init__()
        self.model = model.eval()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.flip, self.normalize = flip, normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std  # (N, 3, H, W)
        if self.flip:
            # The image and its mirror in one pass of 2N (eval mode: BN uses running statistics, so
            # each image's embedding is its own): the traced graph holds the network once, not twice,
            # and its ONNX export takes a quarter less time.
            n = x.shape[0]
            both = self.model.embed(torch.cat([x, torch.flip(x, dims=[3])]))  # (2N, D)
            embedding = (both[:n] + both[n:]) / 2
        else:
            embedding = self.model.embed(x)  # (N, D)
        return F.normalize(embedding, dim=1) if self.normalize else embedding


def export_onnx(network: EmbeddingNetwork, path: str | Path, height: int, width: int) -> Path:
    """Write ``network`` as ONNX with a dynamic batch dimension (torch.export-based exporter)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        network.eval(), (example,), dynamo=True, verbose=False, input_names=["images"], output_names=["embedding"],
        dynamic_shapes={"images": {0: batch}},
    )  # fmt: skip
    if program is None:  # only the legacy exporter (dynamo=False) returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path))
    return path


def onnx_max_difference(path: str | Path, network: EmbeddingNetwork, images: torch.Tensor) -> float:
    """Largest |onnxruntime - PyTorch| over the embeddings of ``images`` (N, 3, H, W) in [0, 1]."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"images": images.numpy().astype(np.float32)})
    with torch.no_grad():
        reference = network.eval()(images).numpy()
    return float(np.abs(ours - reference).max())
