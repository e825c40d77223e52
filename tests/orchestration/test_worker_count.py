"""The worker count is not part of the experiment: ``fit`` with the default recipe (the smoke
profile, in float64, two epochs, flips and random erasing on) trains the same network, with the same
metrics, in one process (the laptop's path) and on 2 and 4 real Ray Train gloo workers, through the
real sampler, loaders, augmentation draws and ``seed_epoch``. The recipe's BN groups are the paper's
32 images: ghost batches in one process, per-rank BN on 2 workers (so W=1 with groups of 32 equals
W=2 with per-rank BN), pairs of ranks sharing statistics on 4. BN over the whole batch across ranks
is proven step by step in ``test_data_parallel.py``.

The same comparison with the old per-rank augmentation draws (each rank seeding its own) must fail:
it does, by orders of magnitude, which shows the test can see a draw that follows the rank.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mgn.config import ExperimentConfig, SyntheticConfig
from mgn.data.loading import load_dataset
from mgn.recipes import smoke
from mgn.training import TrainingEnv, fit
from tests.servers import private_ray

pytestmark = pytest.mark.integration

WORLDS = (1, 2, 4)
TOLERANCE = 1e-9


def _config() -> ExperimentConfig:
    """The default recipe, two epochs, erasing on; a smaller synthetic set (not part of the
    experiment: one step of 64 images an epoch, 44 test images) so the seven trainings take seconds."""
    base = smoke()
    return replace(
        base,
        data=replace(
            base.data,
            random_erasing=0.5,
            synthetic=SyntheticConfig(
                num_train_ids=16, num_test_ids=8, images_per_id=4, num_distractors=8, num_junk=4
            ),
        ),
        eval=replace(base.eval, untrained=False, interval=0),
        train=replace(base.train, epochs=2),
    )


def _fit_all(env: TrainingEnv, out: Path) -> None:
    """``fit`` each recipe in float64 on this rank; rank 0 saves the weights and metrics."""
    import mgn.data.sampler
    from mgn.data.augment import draw_seed

    runs = {"default": _config()}
    if env.world_size == 2:
        runs["per-rank draws"] = runs["default"]
    for name, config in runs.items():
        if name == "per-rank draws":  # the old scheme: every rank its own augmentation stream
            mgn.data.sampler.draw_seed = lambda seed, *place: draw_seed(seed * 1000 + env.rank, *place)
        result = fit(config, load_dataset(config.data), env=env)
        if env.is_main:
            torch.save(
                {"state": result.model.state_dict(), "metrics": result.evaluation.metrics},
                out / f"{name}-w{env.world_size}.pt",
            )


def _worker(loop_config: dict) -> None:
    """Every rank of a Ray Train worker group."""
    import ray.train

    from orchestration.runtime.worker import ray_environment

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    _fit_all(ray_environment(cpus=1), Path(loop_config["out"]))
    ray.train.report({"done": 1})


@pytest.fixture(scope="module")
def trained(memory_heavy_module, tmp_path_factory) -> Path:
    import ray.train
    from ray.train.torch import TorchTrainer

    out = tmp_path_factory.mktemp("worker-count")
    load_dataset(_config().data)  # the synthetic set generated once, before the workers read it
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _fit_all(TrainingEnv(), out)  # one process: what a laptop runs
    finally:
        torch.set_default_dtype(default)
    with private_ray(num_cpus=4, env_vars={"MGN_CACHE": os.environ["MGN_CACHE"]}):
        for world in WORLDS[1:]:
            TorchTrainer(
                _worker,
                train_loop_config={"out": str(out)},
                scaling_config=ray.train.ScalingConfig(num_workers=world, use_gpu=False),
                run_config=ray.train.RunConfig(storage_path=str(out / "train"), name=f"w{world}"),
            ).fit()
    return out


def _difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if not k.endswith("num_batches_tracked"))


def test_one_two_and_four_workers_train_the_same_network(trained):
    runs = {w: torch.load(trained / f"default-w{w}.pt", weights_only=True) for w in WORLDS}
    assert _config().model.bn_group == 32 and runs[1]["state"]["trunk.0.weight"].dtype == torch.float64
    for world in WORLDS[1:]:
        difference = _difference(runs[world]["state"], runs[1]["state"])
        print(f"W={world} against W=1, max |weight difference| {difference:.1e}")
        assert difference <= TOLERANCE, f"{world} workers differ from 1 by {difference:.2e}"
        metrics, reference = runs[world]["metrics"], runs[1]["metrics"]
        assert metrics.keys() == reference.keys() and "rerank/mAP" in metrics
        assert all(metrics[k] == pytest.approx(reference[k], abs=1e-6) for k in metrics)
    # BN statistics are part of the state: the running means moved, and agree too.
    assert any("running_mean" in k and float(v.abs().max()) > 0 for k, v in runs[1]["state"].items())


def test_per_rank_draws_would_change_the_network(trained):
    """The old scheme (each rank its own augmentation stream) is caught, far beyond the tolerance."""
    old = torch.load(trained / "per-rank draws-w2.pt", weights_only=True)
    one = torch.load(trained / "default-w1.pt", weights_only=True)
    assert _difference(old["state"], one["state"]) > 1e6 * TOLERANCE
