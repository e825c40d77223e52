"""Input pipeline throughput per CPU core at 384x128: PIL decoding vs the decoded cache.

The paper's training input (resize to 384x128, random flip, ImageNet normalisation; random erasing
0.5 as the community recipe) over the embedded synthetic set's JPEGs (Market-1501's 128x64 crop
size), batched by the P x K sampler (P=16, K=4), in one process (one core):

* PIL path: decode, resize, augment per image (``AugmentedImages``);
* decoded cache: uint8 images decoded and resized once (``DecodedImages``; the one-time cost is
  printed); per image the CPU then only gathers uint8 batches, and ``augment_batch`` (flip,
  erasing, normalisation as tensor ops) runs on the training device. Both are timed: the loader
  side (what a GPU node's CPUs do) and the batch ops on this CPU (on a GPU they take microseconds).

Printed beside them: the images/s MGN-R50 trains at on one H100, from its training FLOPs per
image (71.1 GFLOP, forward + backward at 384x128: ``benchmarks/model_speed.py``) at a stated
utilisation of the H100's dense peak, so the reader sees how many cores each path needs.

Run: ``python benchmarks/loader_speed.py`` (about a minute).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.config import DatasetName  # noqa: E402
from mgn.data import load_dataset, train_loader  # noqa: E402
from mgn.data.augment import augment_batch  # noqa: E402
from mgn.recipes import paper  # noqa: E402

TRAIN_GFLOP_PER_IMAGE = 71.1  # MGN-R50, forward + backward, 384x128
H100_DENSE_TFLOPS = {"bf16": 989.0, "tf32 (fp32 training)": 494.7}  # H100 SXM, dense
UTILISATION = 0.4


def rate(config, dataset, min_images: int, augment_on_cpu: bool = False) -> float:
    """Images/s of the training loader in one process (uint8 batches augmented here if asked)."""
    loader = train_loader(dataset.train, config, seed=0)
    images, epoch, began = 0, 0, time.perf_counter()
    while images < min_images:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            if augment_on_cpu and batch[0].dtype == torch.uint8:
                augment_batch(batch[0], batch[3])
            images += len(batch[0])
        epoch += 1
    return images / (time.perf_counter() - began)


def main(min_images: int = 2000) -> None:
    torch.set_num_threads(1)
    config = replace(paper().data, dataset=DatasetName.SYNTHETIC, random_erasing=0.5, loader_workers=0)
    dataset = load_dataset(config)
    print(f"{dataset.summary()}\ninput {config.height}x{config.width}, P={config.p} K={config.k}, flip, "
          f"random erasing 0.5, normalise; one process, one thread\n")  # fmt: skip
    pil = rate(replace(config, decoded_cache=False, cache_images=False), dataset, min_images)
    began = time.perf_counter()
    cached_config = replace(config, decoded_cache=True)
    # Decodes and resizes every image once into the node's shared array, which the loaders below map
    # while this one holds it.
    holder = train_loader(dataset.train, cached_config, seed=0)
    build = time.perf_counter() - began
    cached = rate(cached_config, dataset, min_images)
    on_cpu = rate(cached_config, dataset, min_images, augment_on_cpu=True)
    del holder
    print(f"  PIL path (decode, resize, augment per image)  {pil:8.1f} images/s per core")
    print(
        f"  decoded cache, loader side (uint8 batches)    {cached:8.1f} images/s per core ({cached / pil:.1f}x the PIL path)"
    )
    print(
        f"  decoded cache + batch ops on this CPU         {on_cpu:8.1f} images/s per core (on a GPU the ops run there)"
    )
    print(f"  one-time decode: {build:.1f} s for {len(dataset.train)} images = {len(dataset.train) / build:.0f} images/s")  # fmt: skip
    print(
        f"\nMGN-R50 on one H100 at {UTILISATION:.0%} of the dense peak ({TRAIN_GFLOP_PER_IMAGE} GFLOP per training image):"
    )
    for arithmetic, tflops in H100_DENSE_TFLOPS.items():
        need = tflops * 1e12 * UTILISATION / (TRAIN_GFLOP_PER_IMAGE * 1e9)
        print(f"  {arithmetic:22s} {need:7.0f} images/s -> {need / pil:5.1f} cores of PIL decoding, "
              f"{need / cached:5.1f} cores with the cache")  # fmt: skip


if __name__ == "__main__":
    main()
