"""The paper profile's Table 5 grid, dry-run at its full shape: P16 K4 batches of 384x128 images,
ResNet-50 backbones, 2048-d MGN features, one training step and one 128-image test batch per row.

Market-1501 and ImageNet weights are not on our machines: the embedded synthetic set stands in for
the data (its steps per epoch are printed for it, not for Market) and the networks start from random
weights; shapes, losses, optimiser and extraction are the paper profile's. The plan it prints
(epochs, steps, images, training PFLOP per row) is the paper's schedule; on a GPU node with the
data the same command (without the two --set lines) forecasts the real grid.

Run: ``python benchmarks/dry_run.py`` (every row: about an hour on 2 CPU cores), or
``python benchmarks/dry_run.py --rows MGN --rows ResNet-50`` (the widest and the narrowest network).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.dry_run import peak_memory  # noqa: E402
from orchestration.tables.command import main  # noqa: E402

PAPER_ON_THIS_MACHINE = [
    "--profile", "paper",
    "--set", "data.dataset=synthetic",  # Market-1501 is not here
    "--set", "model.init=random",  # nor are ImageNet weights
]  # fmt: skip


if __name__ == "__main__":
    import torch

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        code = main("table5", [*PAPER_ON_THIS_MACHINE, "--storage-path", folder, "--dry-run", *sys.argv[1:]])
    print(
        f"dry run wall time {time.perf_counter() - began:.0f} s, this process's peak memory "
        f"{peak_memory(torch.device('cpu')) / 1024**3:.2f} GiB"
    )
    sys.exit(code)
