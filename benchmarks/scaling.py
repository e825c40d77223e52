"""Data-parallel scaling: training throughput of 1, 2 and 4 gloo workers on one global P x K batch.

Strong scaling, as the paper's experiment demands: the global batch stays P=16 x K=4 = 64 images
and W workers take 64/W each (``mgn.data.sampler``), so W workers do the same optimisation as one.
Each worker is a process with one thread running the production step (``mgn.training.train_step``
under DDP: gradient-carrying gather of the triplet features, DDP's gradient averaging), the
smoke profile's network (MGN on ResNet-18) at 96x32, on random images. Printed: global images/s,
the speed-up over one worker and the scaling efficiency (speed-up / W).

Beside it, in the same run, the cost of the recipe's batch-norm groups (``model.bn_group``,
``mgn.batchnorm``) against the plain BN over each worker's share, at every W: the paper's groups of 32
(ghost batches in one process, the plain BN on 2 workers, pairs of ranks sharing statistics on 4) and
the whole batch (one all-reduce pair per BN layer on W > 1).

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

from mgn.batchnorm import group_batch_norm  # noqa: E402
from mgn.config import ExperimentConfig, batch_norm_groups  # noqa: E402
from mgn.optim import build_optimizer  # noqa: E402
from mgn.recipes import smoke  # noqa: E402
from mgn.training import TrainingEnv, build_model, train_step  # noqa: E402

WARMUP, TIMED = 2, 8
NUM_CLASSES = 64


def _config() -> ExperimentConfig:
    base = smoke()
    return replace(base, train=replace(base.train, amp=False))


# BN group per W: what each mode normalises together.
BN_MODES = {
    "plain BN per worker": lambda world: 64 // world,
    "groups of 32 (paper)": lambda world: 32,
    "whole batch": lambda world: None,
}


def _worker(rank: int, world: int, group: int | None, port: int, results: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    config = _config()
    torch.manual_seed(0)
    model = build_model(config, NUM_CLASSES, torch.device("cpu"))
    model = group_batch_norm(model, batch_norm_groups(config.global_batch_size, config.data.k, world, group))
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


def throughput(world: int, group: int | None) -> float:
    """Global images/s of ``world`` gloo workers on one P x K batch per step, BN over ``group``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_worker, args=(r, world, group, port, results)) for r in range(world)]
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
    rates = {
        (world, mode): throughput(world, group(world))
        for world in (1, 2, 4)
        for mode, group in BN_MODES.items()
    }
    single = rates[(1, "plain BN per worker")]
    print(
        f"{'workers':>8} {'images/worker':>14} {'images/s':>10} {'speed-up':>9} {'efficiency':>11}   (plain BN)"
    )
    for world in (1, 2, 4):
        rate = rates[(world, "plain BN per worker")]
        speedup = rate / single
        print(f"{world:>8} {config.global_batch_size // world:>14} {rate:>10.1f} {speedup:>8.2f}x {speedup / world:>10.0%}"
              + ("   (more workers than cores)" if world > (os.cpu_count() or 1) else ""))  # fmt: skip
    print(f"\nBN groups, images/s and the cost against plain BN at the same W:\n{'workers':>8} " + "".join(
        f"{mode:>28}" for mode in BN_MODES))  # fmt: skip
    for world in (1, 2, 4):
        plain = rates[(world, "plain BN per worker")]
        cells = [
            f"{rates[(world, mode)]:>10.1f} ({rates[(world, mode)] / plain - 1:+6.1%}{_same_as_plain(world, group)})"
            for mode, group in BN_MODES.items()
        ]
        print(f"{world:>8} " + "".join(f"{cell:>28}" for cell in cells))
    print("\n= : the same code as plain BN at that W (a group is one worker's share): its difference is noise.")


def _same_as_plain(world: int, group) -> str:
    config = _config()
    groups = batch_norm_groups(config.global_batch_size, config.data.k, world, group(world))
    return " =" if groups.ghosts == groups.ranks == 1 else ""

if __name__ == "__main__":
    main()
