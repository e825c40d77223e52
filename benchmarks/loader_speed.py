"""Input pipeline throughput: decoded + augmented training images/s at 384x128.

The paper's training transform (resize to 384x128, random flip, ImageNet normalisation) over the
embedded synthetic set's JPEGs (Market-1501's 128x64 crop size), batched by the P x K sampler
(P=16, K=4), with 0, 1 and 2 loader worker processes, nothing cached. Compare with the training
speed of ``benchmarks/model_speed.py``: the loader must stay ahead of the model.

Run: ``python benchmarks/loader_speed.py`` (about a minute).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.config import DatasetName  # noqa: E402
from mgn.data import load_dataset, train_loader  # noqa: E402
from mgn.recipes import paper  # noqa: E402


def main(min_images: int = 2000) -> None:
    config = replace(paper().data, dataset=DatasetName.SYNTHETIC, cache_images=False)
    dataset = load_dataset(config)
    print(
        f"{dataset.summary()}\ninput {config.height}x{config.width}, P={config.p} K={config.k}, flip, normalise\n"
    )
    for workers in (0, 1, 2):
        loader = train_loader(dataset.train, replace(config, loader_workers=workers), seed=0)
        next(iter(loader))  # start the workers before timing
        images, epoch, began = 0, 0, time.perf_counter()
        while images < min_images:
            loader.batch_sampler.set_epoch(epoch)
            for batch, _, _ in loader:
                images += len(batch)
            epoch += 1
        rate = images / (time.perf_counter() - began)
        print(f"  {workers} loader workers: {rate:7.1f} images/s ({images} images)")


if __name__ == "__main__":
    main()
