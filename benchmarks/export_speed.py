"""Deployment speed on this machine's CPU: onnxruntime vs PyTorch eager vs torch.compile.

The deployed graph is ``mgn.export.EmbeddingNetwork`` (normalisation inside, flip averaging,
L2-normalised output) of MGN-R50 at the paper's 384x128, and of the smoke profile's MGN-R18 at
96x32. Each engine embeds the same batches; images/s (best of 3) are printed side by side with the
ratio to eager PyTorch, and the largest difference of each engine from eager.

Run: ``python benchmarks/export_speed.py`` (about 4 minutes on 2 cores, most of it compiling).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.config import Backbone, Init, ModelConfig  # noqa: E402
from mgn.export import EmbeddingNetwork, export_onnx  # noqa: E402
from mgn.model import MGN  # noqa: E402


def rate(run, batch: torch.Tensor, repeats: int = 3) -> tuple[float, np.ndarray]:
    out = run(batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        out = run(batch)
        best = min(best, time.perf_counter() - began)
    return len(batch) / best, np.asarray(out)


def compare(backbone: Backbone, height: int, width: int, batch_size: int) -> None:
    import onnxruntime

    torch.manual_seed(0)
    network = EmbeddingNetwork(MGN(ModelConfig(backbone=backbone, init=Init.RANDOM), 751)).eval()
    batch = torch.rand(batch_size, 3, height, width)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(network, Path(tmp) / "mgn.onnx", height, width)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            eager, reference = rate(lambda x: network(x).numpy(), batch)
            began = time.perf_counter()
            compiled_net = torch.compile(network)
            compiled_net(batch)
            compile_seconds = time.perf_counter() - began
            compiled, out_compiled = rate(lambda x: compiled_net(x).numpy(), batch)
        onnx, out_onnx = rate(lambda x: session.run(None, {"images": x.numpy()})[0], batch)
    print(
        f"MGN-R{backbone.value[6:]} at {height}x{width}, batch {batch_size} (flip-averaged, L2-normalised embedding)"
    )
    engines = (
        ("PyTorch eager", eager, reference),
        ("torch.compile", compiled, out_compiled),
        ("onnxruntime", onnx, out_onnx),
    )
    for name, speed, out in engines:
        print(
            f"  {name:14s} {speed:8.1f} img/s   {speed / eager:5.2f}x eager   max |diff| vs eager {np.abs(out - reference).max():.1e}"
        )
    print(f"  (torch.compile's first call took {compile_seconds:.0f} s)\n")


def main() -> None:
    import onnxruntime

    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}\n"
    )
    compare(Backbone.RESNET50, 384, 128, 8)
    compare(Backbone.RESNET18, 96, 32, 64)


if __name__ == "__main__":
    main()
