"""Shared fixtures: tiny configs and data, and a private cache for the synthetic data set."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mgn.config import Backbone, ExperimentConfig, Init, SyntheticConfig
from mgn.recipes import smoke
from tests import scheduling

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A few seconds on 2 CPU cores: 8 + 6 identities, 6 images each.
TINY_SYNTHETIC = SyntheticConfig(
    num_train_ids=8, num_test_ids=6, images_per_id=6, num_distractors=4, num_junk=3
)


# What the fast tier (`pytest -m "not integration"`) may start: git (the runs' commit), nothing else.
FAST_TIER_COMMANDS = ("git",)


@pytest.fixture(autouse=True)
def _fast_tier_stays_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the ``integration`` mark that starts a process (Ray's raylet and GCS, an MLflow
    server, PostgreSQL, moto, another Python) fails at once, naming the mark to add: the fast tier
    stays fast because nothing in it can start those."""
    if request.node.get_closest_marker("integration"):
        return
    real_init = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen, args, *rest, **options) -> None:
        program = Path(str(args[0] if isinstance(args, (list, tuple)) else str(args).split()[0])).name
        if program not in FAST_TIER_COMMANDS:
            raise RuntimeError(
                f"{request.node.nodeid} starts a process ({program}) without the integration mark: "
                "add pytestmark = pytest.mark.integration (or @pytest.mark.integration)"
            )
        real_init(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations", action="store_true",
        help=f"write each test file's seconds in this run to tests/{scheduling.DURATIONS.name} (the order of the files)",
    )  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration files first, the longest first (``tests/scheduling.py``): a stable sort, each
    file's own order kept."""
    seconds = scheduling.stored_seconds()
    items.sort(key=lambda item: scheduling.schedule_key(item, seconds))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent under -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` with each group of files that share a lock or a trained grid on one worker
    (``tests/scheduling.py``)."""
    return scheduling.make_scheduler(config, log)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    scheduling.FILE_SECONDS[scheduling.test_file(report.nodeid)] += report.duration  # set-up, call, teardown


def pytest_sessionfinish(session: pytest.Session) -> None:
    # In the controller only, which sees every worker's reports.
    if session.config.getoption("store_durations") and not hasattr(session.config, "workerinput"):
        scheduling.store_seconds()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated data goes to a per-session folder, never the user's ~/.cache."""
    os.environ["MGN_CACHE"] = str(tmp_path_factory.mktemp("mgn-cache"))
    # Under pytest-xdist (`-n 2`) every worker is one of the cores: two torch threads each would make
    # four on two cores, and oversubscribed torch runs at a fraction of its speed.
    threads = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
    torch.set_num_threads(min(threads, torch.get_num_threads()))


def tiny_config(**model_changes: object) -> ExperimentConfig:
    """The smoke recipe shrunk to seconds: ResNet-18, 64x32 input, 4x2 batches (BN over the whole
    batch), 2 epochs."""
    base = smoke()
    return replace(
        base,
        model=replace(
            base.model, backbone=Backbone.RESNET18, init=Init.RANDOM, bn_group=None, **model_changes
        ),
        data=replace(base.data, height=64, width=32, p=4, k=2, synthetic=TINY_SYNTHETIC, eval_batch_size=32),
        train=replace(base.train, epochs=2),
        optimizer=replace(base.optimizer, milestones=(1,)),
    )


@pytest.fixture
def tiny() -> ExperimentConfig:
    return tiny_config()
