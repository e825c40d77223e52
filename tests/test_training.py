"""The plain training loop on tiny synthetic data (detectron2's tiny CPU trainer tests)."""

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from mgn.checkpoint import (
    CHECKPOINT_FILE,
    CorruptCheckpointError,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)
from mgn.config import ExperimentConfig, OptimizerKind
from mgn.data import load_dataset
from mgn.evaluation.protocol import Evaluation
from mgn.optim import build_optimizer, build_scheduler, lr_factor
from mgn.recipes import community, paper
from mgn.training import FitResult, fit
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(tiny_config().data)


@dataclass(frozen=True)
class Uninterrupted:
    """A 2-epoch run, evaluated after each epoch, and its checkpoint after epoch 1."""

    config: ExperimentConfig
    result: FitResult
    lines: list[str]  # what it logged
    evaluations: list[Evaluation]  # after epoch 1 (the plain ranking), after epoch 2 (all of it)
    checkpoint: Path


def _uninterrupted(config: ExperimentConfig, dataset, folder: Path) -> Uninterrupted:
    config = replace(config, eval=replace(config.eval, interval=1))
    lines, evaluations, saved = [], [], {}

    def keep(stats, evaluation, snapshot):
        evaluations.append(evaluation)
        if stats.epoch == 1:
            saved["state"] = save_checkpoint(snapshot(), folder / CHECKPOINT_FILE)

    result = fit(config, dataset, log=lines.append, on_epoch_end=keep)
    return Uninterrupted(config, result, lines, evaluations, saved["state"])


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory) -> Uninterrupted:
    """The tiny recipe's run, trained once for the three tests that read it."""
    return _uninterrupted(tiny_config(), dataset, tmp_path_factory.mktemp("tiny-run"))


def test_fit_trains_and_evaluates_every_branch(tiny_run):
    result = tiny_run.result
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
    assert any("epoch 2/2" in line and "mAP" in line for line in tiny_run.lines)
    assert result.history[0].images_per_second > 0


def test_intermediate_evaluations_are_the_plain_ranking_and_the_last_is_complete(tiny_run):
    """eval.interval draws the metric curves: cheap points in between, the whole protocol at the end."""
    first, last = (e.metrics for e in tiny_run.evaluations)
    assert {"R1", "mAP", "mINP"} <= first.keys() and not any("/" in key for key in first)
    assert {"rerank/mAP", "branch/Part-3/mAP"} <= last.keys()
    assert last == tiny_run.result.evaluation.metrics


@pytest.fixture
def decoded_run(dataset, tmp_path) -> Uninterrupted:
    """The GPU input path on CPU: the decoded cache, two loader processes, random erasing."""
    base = tiny_config()
    config = replace(base, data=replace(base.data, decoded_cache=True, loader_workers=2, random_erasing=0.5))
    return _uninterrupted(config, dataset, tmp_path)


@pytest.mark.parametrize("run_fixture", ["tiny_run", "decoded_run"], ids=["pil", "decoded"])
def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(dataset, request, run_fixture):
    """Every draw (sampler, augmentation) follows (seed, epoch, step, position): a resumed run goes
    on exactly as the uninterrupted one (evaluated after every epoch), loader processes included."""
    run: Uninterrupted = request.getfixturevalue(run_fixture)
    resumed = fit(run.config, dataset, resume=load_checkpoint(run.checkpoint))
    assert [s.epoch for s in resumed.history] == [2]
    for (name, a), b in zip(
        run.result.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert resumed.evaluation.metrics == run.result.evaluation.metrics


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
