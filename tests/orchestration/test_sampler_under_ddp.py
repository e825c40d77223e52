"""Ray Train's prepare_data_loader must keep our P x K sampler (add_dist_sampler=False) under DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgn.data.sampler import PKBatchSampler
from tests.servers import private_ray

pytestmark = pytest.mark.integration


class _Indices:
    """Sampler items -> (index, pid): what the loader saw."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, sample) -> tuple[int, int]:
        return sample.record, self.pids[sample.record]


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from mgn.data.sampler import PKBatchSampler

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    pids = [pid for pid in range(16) for _ in range(4)]
    dataset = _Indices(pids)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=PKBatchSampler(pids, p=4, k=2, rank=rank, world_size=world, seed=0)
    )
    prepared = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
    prepared.batch_sampler.set_epoch(1)
    seen = [int(i) for indices, _ in prepared for i in indices]
    record = {"sampler": type(prepared.batch_sampler).__name__, "indices": seen, "batches": len(prepared)}
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(record))
    ray.train.report({"done": 1})


def test_pk_sampler_survives_prepare_data_loader(tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    with private_ray(num_cpus=2):
        TorchTrainer(
            _worker,
            train_loop_config={"out": str(tmp_path)},
            scaling_config=ray.train.ScalingConfig(num_workers=2, use_gpu=False),
            run_config=ray.train.RunConfig(storage_path=str(tmp_path / "train")),
        ).fit()
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["sampler"] == "PKBatchSampler" for r in records)
    pids = [pid for pid in range(16) for _ in range(4)]
    single = PKBatchSampler(pids, p=4, k=2, seed=0)
    single.set_epoch(1)
    assert records[0]["batches"] == records[1]["batches"] == len(single) > 0  # W does not change the epoch
    for b, batch in enumerate(single):  # each step: P=4 ids x K=2 images over both ranks, 2 ids each
        shares = [r["indices"][b * 4 : (b + 1) * 4] for r in records]
        assert shares[0] + shares[1] == [i for i, _ in batch]
        assert not {pids[i] for i in shares[0]} & {pids[i] for i in shares[1]}
