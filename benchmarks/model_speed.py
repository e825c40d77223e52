"""Training throughput of MGN on this machine's CPU, against references measured in the same run.

For MGN-R50 at the paper's 384x128 and at a small 96x32, beside torchvision ResNet-50 and
ResNet-101 (one classifier, the same batch): forward+backward+SGD step images/s and their ratios;
the FLOP rate achieved (FLOPs counted by ``torch.utils.flop_counter``) as a fraction of this
machine's float32 matrix-multiply rate (the ceiling, measured here); the effect of channels-last
memory format; and parameter counts (the paper: MGN and ResNet-101 are "of similar scale").

Run: ``python benchmarks/model_speed.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.config import Backbone, Init, LossConfig, ModelConfig  # noqa: E402
from mgn.losses import mgn_loss  # noqa: E402
from mgn.model import MGN  # noqa: E402

NUM_CLASSES = 751  # Market-1501's training identities


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a square matrix product: the ceiling for dense convolution math."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - began) / 1e9


def _step_fn(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_config = LossConfig()

    def step() -> None:
        out = model(images)
        loss = (
            mgn_loss(out, targets, loss_config).total
            if isinstance(model, MGN)
            else torch.nn.functional.cross_entropy(out, targets)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(
    model: torch.nn.Module, size: tuple[int, int], batch: int, steps: int, channels_last: bool = False
) -> tuple[float, float]:
    """(images/s, GFLOP per image for forward+backward)."""
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    images = torch.randn(batch, 3, *size).to(memory_format=fmt)
    targets = torch.arange(batch) // 4 % NUM_CLASSES
    step = _step_fn(model, images, targets)
    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - began), counter.get_total_flops() / batch / 1e9


def params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def main() -> None:
    torch.manual_seed(0)
    ceiling = matmul_rate()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul ceiling {ceiling:.0f} GFLOP/s\n"
    )
    models = {
        "MGN-R50": lambda: MGN(ModelConfig(backbone=Backbone.RESNET50, init=Init.RANDOM), NUM_CLASSES),
        "ResNet-50": lambda: torchvision.models.resnet50(num_classes=NUM_CLASSES),
        "ResNet-101": lambda: torchvision.models.resnet101(num_classes=NUM_CLASSES),
    }
    for size, batch, steps in (((384, 128), 8, 2), ((96, 32), 32, 3)):
        print(f"input {size[0]}x{size[1]}, batch {batch} (forward + backward + SGD step)")
        rates = {}
        for name, make in models.items():
            ips, gflop = measure(make(), size, batch, steps)
            rates[name] = ips
            print(
                f"  {name:11s} {ips:7.1f} img/s  {gflop:6.1f} GFLOP/img  {ips * gflop:6.1f} GFLOP/s = {ips * gflop / ceiling:5.1%} of the matmul rate"
            )
        print(
            f"  MGN-R50 runs at {rates['MGN-R50'] / rates['ResNet-50']:.2f}x ResNet-50's and {rates['MGN-R50'] / rates['ResNet-101']:.2f}x ResNet-101's images/s"
        )
        ips_cl, _ = measure(models["MGN-R50"](), size, batch, steps, channels_last=True)
        print(f"  MGN-R50 channels-last: {ips_cl:.1f} img/s ({ips_cl / rates['MGN-R50']:.2f}x contiguous)\n")
    mgn, r50, r101 = (params(make()) for make in models.values())
    mgn_no_heads = params(MGN(ModelConfig(backbone=Backbone.RESNET50, init=Init.RANDOM), 2))
    print(f"parameters: MGN-R50 {mgn:.1f} M ({mgn_no_heads:.1f} M without the {NUM_CLASSES}-way classifiers), "
          f"ResNet-101 {r101:.1f} M, ResNet-50 {r50:.1f} M (with {NUM_CLASSES}-way heads)")  # fmt: skip


if __name__ == "__main__":
    main()
