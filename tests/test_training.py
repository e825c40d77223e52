"""The plain training loop on tiny synthetic data (detectron2's tiny CPU trainer tests)."""

from dataclasses import replace

import pytest
import torch

from mgn.checkpoint import (
    CHECKPOINT_FILE,
    CorruptCheckpointError,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)
from mgn.config import OptimizerKind
from mgn.data import load_dataset
from mgn.optim import build_optimizer, build_scheduler, lr_factor
from mgn.recipes import community, paper
from mgn.training import fit
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(tiny_config().data)


def test_fit_trains_and_evaluates_every_branch(dataset):
    config = tiny_config()
    lines = []
    result = fit(config, dataset, log=lines.append)
    assert [s.epoch for s in result.history] == [1, 2]
    metrics = result.evaluation.metrics
    for key in (
        "R1",
        "R5",
        "R10",
        "mAP",
        "mINP",
        "rerank/mAP",
        "branch/Global/mAP",
        "branch/Part-2/mAP",
        "branch/Part-3/mAP",
    ):
        assert 0 <= metrics[key] <= 100, key
    assert result.evaluation.query.features.shape[1] == 2048
    assert any("epoch 2/2" in line and "mAP" in line for line in lines)
    assert result.history[0].images_per_second > 0


def test_intermediate_evaluations_are_the_plain_ranking_and_the_last_is_complete(dataset):
    """eval.interval draws the metric curves: cheap points in between, the whole protocol at the end."""
    config = tiny_config()
    config = replace(config, eval=replace(config.eval, interval=1))
    seen = []
    fit(config, dataset, on_epoch_end=lambda stats, evaluation, snapshot: seen.append(evaluation))
    first, last = (e.metrics for e in seen)
    assert {"R1", "mAP", "mINP"} <= first.keys() and not any("/" in key for key in first)
    assert {"rerank/mAP", "branch/Part-3/mAP"} <= last.keys()


def _decoded_in_loader_processes():
    """The GPU input path on CPU: the decoded cache, two loader processes, random erasing."""
    base = tiny_config()
    return replace(base, data=replace(base.data, decoded_cache=True, loader_workers=2, random_erasing=0.5))


@pytest.mark.parametrize("make_config", [tiny_config, _decoded_in_loader_processes], ids=["pil", "decoded"])
def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(dataset, tmp_path, make_config):
    """Every draw (sampler, augmentation) follows (seed, epoch, step, position): a resumed run goes
    on exactly as the uninterrupted one, loader processes included."""
    config = make_config()
    saved = {}

    def keep(stats, evaluation, snapshot):
        if stats.epoch == 1:
            saved["state"] = save_checkpoint(snapshot(), tmp_path / CHECKPOINT_FILE)

    uninterrupted = fit(config, dataset, on_epoch_end=keep)
    resumed = fit(config, dataset, resume=load_checkpoint(saved["state"]))
    assert [s.epoch for s in resumed.history] == [2]
    for (name, a), b in zip(
        uninterrupted.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert resumed.evaluation.metrics == uninterrupted.evaluation.metrics


def test_same_seed_same_result_other_seed_other_result(dataset):
    config = replace(tiny_config(), train=replace(tiny_config().train, epochs=1))
    a, b = fit(config, dataset), fit(config, dataset)
    assert a.evaluation.metrics == b.evaluation.metrics
    c = fit(replace(config, train=replace(config.train, seed=1)), dataset)
    assert c.history[0].loss != a.history[0].loss


def test_corrupt_checkpoint_is_named(tmp_path):
    good = TrainingState({"w": torch.ones(2)}, {}, {}, 1, {"train": {"epochs": 2}})
    bad = save_checkpoint(good, tmp_path / CHECKPOINT_FILE)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptCheckpointError, match=str(bad)):
        load_checkpoint(bad)


def test_checkpoints_refuse_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "epochs_done": 1, "config": object()}, path)
    with pytest.raises(CorruptCheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_paper_schedule_decays_after_epochs_40_and_60():
    config = paper()
    assert [lr_factor(config, e) for e in (0, 39, 40, 59, 60, 79)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(config, model)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    scheduler = build_scheduler(config, optimizer)
    lrs = []
    for _ in range(61):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert (
        lrs[39] == pytest.approx(0.01) and lrs[40] == pytest.approx(0.001) and lrs[60] == pytest.approx(1e-4)
    )


def test_community_optimizer_and_warmup():
    config = community()
    optimizer = build_optimizer(config, torch.nn.Linear(2, 2))
    assert config.optimizer.kind is OptimizerKind.ADAM and isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["amsgrad"] is True and optimizer.defaults["lr"] == 2e-4
    warm = replace(config, optimizer=replace(config.optimizer, warmup_epochs=10))
    assert (
        lr_factor(warm, 0) == pytest.approx(0.1)
        and lr_factor(warm, 5) == pytest.approx(0.55)
        and lr_factor(warm, 10) == 1
    )


def test_divergence_stops_training_with_a_clear_message(dataset):
    from mgn.training import TrainingDiverged

    config = tiny_config()
    config = replace(config, optimizer=replace(config.optimizer, lr=1e12, warmup_epochs=0))
    with pytest.raises(TrainingDiverged, match="diverged in epoch 1 .*lower optimizer.lr"):
        fit(config, dataset)
