"""Data-parallel scaling: training throughput of 1, 2 and 4 gloo workers on one global P x K batch.

Strong scaling, as the paper's experiment demands: the global batch stays P=16 x K=4 = 64 images
and W workers take 64/W each (``mgn.data.sampler``), so W workers do the same optimisation as one.
Each worker is a process with one thread running the production step (``mgn.training.train_step``
under DDP: gradient-carrying gather of the triplet features, DDP's gradient averaging), the
smoke profile's network (MGN on ResNet-18) at 96x32, on random images. Printed: global images/s,
the speed-up over one worker and the scaling efficiency (speed-up / W).

The workers share this machine's cores: beyond ``os.cpu_count()`` workers the efficiency can only
fall (each then gets a fraction of a core), so read W > cores as the overhead of oversubscription,
not of the method. Run: ``python benchmarks/scaling.py`` (about a minute).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.config import ExperimentConfig  # noqa: E402
from mgn.optim import build_optimizer  # noqa: E402
from mgn.recipes import smoke  # noqa: E402
from mgn.training import TrainingEnv, build_model, train_step  # noqa: E402

WARMUP, TIMED = 2, 8
NUM_CLASSES = 64


def _config() -> ExperimentConfig:
    base = smoke()
    return replace(base, train=replace(base.train, amp=False))


def _worker(rank: int, world: int, port: int, results: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    config = _config()
    torch.manual_seed(0)
    model = build_model(config, NUM_CLASSES, torch.device("cpu"))
    ddp = world > 1
    env = TrainingEnv(rank=rank, world_size=world, device=torch.device("cpu"), cpus=1,
                      wrap_model=torch.nn.parallel.DistributedDataParallel if ddp else (lambda m: m))  # fmt: skip
    trained, optimizer = env.wrap_model(model), build_optimizer(config, model)
    share = config.data.p // world * config.data.k  # P/W whole identities of K images
    images = torch.randn(share, 3, config.data.height, config.data.width)
    targets = torch.arange(share // config.data.k).repeat_interleave(config.data.k) + rank * share
    for step in range(WARMUP + TIMED):
        if step == WARMUP:
            dist.barrier()
            began = time.perf_counter()
        train_step(trained, images, targets, optimizer, config, env)
    dist.barrier()
    if rank == 0:
        results.put(config.global_batch_size * TIMED / (time.perf_counter() - began))
    dist.destroy_process_group()


def throughput(world: int) -> float:
    """Global images/s of ``world`` gloo workers on one P x K batch per step."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_worker, args=(r, world, port, results)) for r in range(world)]
    for process in processes:
        process.start()
    rate = results.get(timeout=600)
    for process in processes:
        process.join()
    return rate


def main() -> None:
    config = _config()
    print(f"{os.cpu_count()} CPU cores; MGN-{config.model.backbone.value} at {config.data.height}x"
          f"{config.data.width}, global batch P={config.data.p} x K={config.data.k} = {config.global_batch_size}, "
          f"1 thread per worker, {TIMED} timed steps\n")  # fmt: skip
    print(f"{'workers':>8} {'images/worker':>14} {'images/s':>10} {'speed-up':>9} {'efficiency':>11}")
    single = None
    for world in (1, 2, 4):
        rate = throughput(world)
        single = single or rate
        speedup = rate / single
        print(f"{world:>8} {config.global_batch_size // world:>14} {rate:>10.1f} {speedup:>8.2f}x {speedup / world:>10.0%}"
              + ("   (more workers than cores)" if world > (os.cpu_count() or 1) else ""))  # fmt: skip


if __name__ == "__main__":
    main()
