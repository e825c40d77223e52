"""W data-parallel workers run the paper's one-batch experiment (§4.1), proven on CPU with real Ray
Train gloo worker groups against a one-process reference written plainly here:

* one step (float32, the training dtype) and three steps (float64) from the same weights and
  global batches give the same loss and the same weights as one process computing that batch with
  BN over the same per-rank shards (and, with ``model.bn_group=None``, BN over the whole batch). The
  trajectories are compared in float64 because this tiny network is chaotic: the one-process
  reference itself turns a 1e-7 change of its weights into 1e-3 after one step (BN over 4 to 8
  images), so float32 rounding alone would part two exact implementations after a step;
* distributed evaluation (every rank embeds its share) equals one-process evaluation exactly;
* a 2-worker trial of every Table 5 network (and of a loss that leaves layers without gradient)
  finishes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from mgn.config import ExperimentConfig, OptimizerConfig, OptimizerKind
from mgn.data.loading import load_dataset
from mgn.losses import mgn_loss
from mgn.model import MGNOutput
from mgn.optim import build_optimizer
from mgn.training import build_model
from tests.conftest import tiny_config
from tests.servers import private_ray

pytestmark = pytest.mark.integration

NUM_CLASSES = 10
STEPS = {torch.float32: 1, torch.float64: 3}
RUNS = [(whole_bn, dtype) for whole_bn in (False, True) for dtype in STEPS]  # whole_bn: BN over the whole batch (else per rank)
GLOBAL_BATCH = 16  # P=8 identities x K=2: 8 images per rank with 2 workers, 4 with 4


def _config(whole_bn: bool) -> ExperimentConfig:
    """The tiny MGN with the paper's optimiser (SGD: Adam's first step would turn rounding noise in
    near-zero gradients into whole lr-sized steps) and its P x K split over the workers; BN over
    each rank's share, or (``whole_bn``) over the whole batch."""
    base = tiny_config()
    return replace(
        base,
        model=replace(base.model, bn_group=None if whole_bn else GLOBAL_BATCH // 2),
        optimizer=OptimizerConfig(kind=OptimizerKind.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4),
        data=replace(base.data, p=8, k=2, eval_batch_size=5),  # uneven evaluation shards
        eval=replace(base.eval, rerank=True, multi_query=True),
        train=replace(base.train, amp=False),
    )


def _batches(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Global batches; identities contiguous (K=2 each), so each rank's slice holds whole ones."""
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(GLOBAL_BATCH, 3, 64, 32, generator=generator, dtype=dtype),
            torch.randperm(NUM_CLASSES, generator=generator)[: GLOBAL_BATCH // 2].repeat_interleave(2),
        )
        for _ in range(STEPS[dtype])
    ]


def _run_name(world: int, whole_bn: bool, dtype: torch.dtype) -> str:
    return f"w{world}-sync{int(whole_bn)}-{str(dtype).removeprefix('torch.')}.pt"


def _share(rank: int, world: int) -> slice:
    return slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _worker(loop_config: dict) -> None:
    """Runs in every rank of a Ray Train worker group, through the production code path."""
    import ray.train

    from mgn.batchnorm import group_batch_norm
    from mgn.config import batch_norm_groups
    from mgn.distributed import mean_over_ranks
    from mgn.table5 import trained_rows
    from mgn.training import TrainingEnv, evaluate, fit, train_step
    from orchestration.runtime.worker import ray_environment

    torch.set_num_threads(1)
    env = ray_environment(cpus=1)
    out, world = Path(loop_config["out"]), env.world_size
    for whole_bn, dtype in RUNS:
        config = _config(whole_bn)
        torch.manual_seed(0)
        model = build_model(config, NUM_CLASSES, env.device).to(dtype)
        # Only rank 0 records (a float64 state is 250 MB: four per run on every rank of four would
        # take gigabytes the test does not need).
        initial = _snapshot(model) if env.is_main else {}
        group = None if whole_bn else GLOBAL_BATCH // world
        model = group_batch_norm(model, batch_norm_groups(GLOBAL_BATCH, 2, world, group))
        trained = env.wrap_model(model)
        optimizer = build_optimizer(config, model)
        losses, states = [], []
        for images, targets in _batches(dtype):
            share = _share(env.rank, world)
            step = train_step(trained, images[share], targets[share], optimizer, config, env)
            losses.append(mean_over_ranks([step.total.item()], env.device)[0])
            if env.is_main:
                states.append(_snapshot(model))
        if env.is_main:
            torch.save(
                {"initial": initial, "losses": losses, "states": states},
                out / _run_name(world, whole_bn, dtype),
            )

    # Distributed evaluation vs one process (rank 0 alone, same weights, same batches).
    model = model.float()
    dataset = load_dataset(config.data)
    distributed = evaluate(model, dataset, config, env)
    if env.is_main:
        single = evaluate(model, dataset, config, TrainingEnv(device=env.device, cpus=1))
        record = {
            "metrics": [distributed.metrics, single.metrics],
            "same_features": all(
                torch.equal(a.features, b.features)
                and (a.pids == b.pids).all()
                and (a.camids == b.camids).all()
                for a, b in ((distributed.query, single.query), (distributed.gallery, single.gallery))
            ),
            "cmc_equal": bool((distributed.cmc == single.cmc).all()),
        }
        (out / f"eval-w{world}.json").write_text(json.dumps(record))

    if loop_config["all_rows"]:  # every Table 5 network, and a loss that leaves layers unused
        base = replace(tiny_config(), eval=replace(tiny_config().eval, rerank=False, untrained=False))
        base = replace(base, train=replace(base.train, epochs=1))
        variants = {row.name: row.config(base) for row in trained_rows()}
        variants["MGN, loss.triplet_weight=0"] = replace(base, loss=replace(base.loss, triplet_weight=0.0))
        finished = {}
        for name, variant in variants.items():
            result = fit(variant, dataset, env=env)
            if env.is_main:
                finished[name] = {"epochs": len(result.history), "mAP": result.evaluation.metrics["mAP"]}
        if env.is_main:
            (out / "rows.json").write_text(json.dumps(finished))
    ray.train.report({"done": 1})


@pytest.fixture(scope="module")
def ray_cpus(memory_heavy_module, tmp_path_factory):
    """A private Ray instance with 4 logical CPUs (workers use one thread each), stopped after."""
    load_dataset(_config(False).data)  # generate the synthetic set once, before the workers read it
    with private_ray(num_cpus=4, env_vars={"MGN_CACHE": os.environ["MGN_CACHE"]}):
        yield


def _run_group(world: int, out: Path, all_rows: bool) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer

    TorchTrainer(
        _worker,
        train_loop_config={"out": str(out), "all_rows": all_rows},
        scaling_config=ray.train.ScalingConfig(num_workers=world, use_gpu=False),
        run_config=ray.train.RunConfig(storage_path=str(out / "train"), name=f"dp-{world}"),
    ).fit()


@contextmanager
def _bn_momentum(model: nn.Module, momentum: float | None):
    """Temporarily set every BN's momentum (0: leave the running statistics as they are)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    if momentum is not None:
        for m in norms:
            m.momentum = momentum
    try:
        yield
    finally:
        for m, value in zip(norms, saved, strict=True):
            m.momentum = value


def _reference(
    world: int, whole_bn: bool, dtype: torch.dtype, initial: dict
) -> tuple[list[float], list[dict]]:
    """One process: forward each rank's shard (BN per shard) or the whole batch (sync BN), the
    loss over the whole batch, one optimiser step. Rank 0's running BN statistics follow its own
    shard between epochs (``train_epoch`` then averages the ranks', ``test_worker_count.py``)."""
    config = _config(whole_bn)
    model = build_model(config, NUM_CLASSES, torch.device("cpu")).to(dtype)
    model.load_state_dict(initial)
    model.train()
    optimizer = build_optimizer(config, model)
    losses, states = [], []
    for images, targets in _batches(dtype):
        if whole_bn:
            outputs = model(images)
        else:
            shards = []
            for r in range(world):
                with _bn_momentum(model, None if r == 0 else 0.0):
                    shards.append(model(images[_share(r, world)]))
            outputs = MGNOutput(
                *(
                    [torch.cat(parts) for parts in zip(*(getattr(s, f.name) for s in shards), strict=True)]
                    for f in dataclasses.fields(MGNOutput)
                )
            )
        loss = mgn_loss(outputs, targets, config.loss).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        states.append(_snapshot(model))
    return losses, states


def _max_difference(a: dict, b: dict) -> float:
    keys = [k for k in a if not k.endswith("num_batches_tracked")]
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)


def _check_equivalence(out: Path, world: int) -> None:
    for whole_bn, dtype in RUNS:
        recorded = torch.load(out / _run_name(world, whole_bn, dtype), weights_only=True)
        losses, states = _reference(world, whole_bn, dtype, recorded["initial"])
        label = f"{world} workers, whole_bn={whole_bn}, {dtype}"
        for step in range(STEPS[dtype]):
            assert recorded["losses"][step] == pytest.approx(losses[step], rel=1e-5), (
                f"{label}, step {step + 1}"
            )
            difference = _max_difference(recorded["states"][step], states[step])
            relative = abs(recorded["losses"][step] - losses[step]) / abs(losses[step])
            print(
                f"{label}, step {step + 1}: loss rel. diff {relative:.1e}, max |weight diff| {difference:.1e}"
            )
            assert difference <= 1e-5, f"{label}, step {step + 1}: weights differ by {difference:.2e}"
        moved = _max_difference(recorded["states"][-1], recorded["initial"])
        assert moved > 1e-3, f"{label}: the weights did not move ({moved:.1e}): the test would prove nothing"


def _check_evaluation(out: Path, world: int) -> None:
    record = json.loads((out / f"eval-w{world}.json").read_text())
    distributed, single = record["metrics"]
    assert distributed == single  # CMC, mAP, mINP, re-ranked, multiple query, branches: exactly
    assert {"rerank/mAP", "mq/mAP", "mq/rerank/R1", "branch/Part-3/mAP"} <= set(distributed)
    assert record["same_features"] and record["cmc_equal"]


def test_two_workers_train_and_evaluate_as_one_process_and_every_table5_network_runs(ray_cpus, tmp_path):
    _run_group(2, tmp_path, all_rows=True)
    _check_equivalence(tmp_path, 2)
    _check_evaluation(tmp_path, 2)
    rows = json.loads((tmp_path / "rows.json").read_text())
    from mgn.table5 import trained_rows

    assert set(rows) == {r.name for r in trained_rows()} | {"MGN, loss.triplet_weight=0"}
    assert all(r["epochs"] == 1 and 0 <= r["mAP"] <= 100 for r in rows.values())


def test_four_workers_train_and_evaluate_as_one_process(ray_cpus, tmp_path):
    _run_group(4, tmp_path, all_rows=False)
    _check_equivalence(tmp_path, 4)
    _check_evaluation(tmp_path, 4)
