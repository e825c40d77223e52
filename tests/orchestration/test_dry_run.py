"""``--dry-run``: the paper profile's path at its full shape (384x128, ResNet-50 MGN, 2048-d), a step.

The reduced variant runs in the suite (MGN only, a P=2 batch, an 8-image test batch: minutes on two
cores); the whole Table 5 grid at P16 K4 is ``benchmarks/dry_run.py``."""

from __future__ import annotations

import re

import pytest

from mgn.data import load_dataset
from mgn.dry_run import dry_run
from mgn.model import MGN
from mgn.recipes import smoke
from orchestration.tables.command import main
from tests.conftest import tiny_config

PAPER_AT_FULL_SHAPE = [
    "--profile", "paper",
    "--set", "data.dataset=synthetic",  # Market-1501 is not on this machine
    "--set", "model.init=random",  # nor are ImageNet weights
    "--set", "data.synthetic.num_train_ids=8", "--set", "data.synthetic.num_test_ids=4",
]  # fmt: skip


@pytest.mark.integration
def test_dry_run_of_the_paper_profile_at_full_shape(capsys, tmp_path):
    args = [*PAPER_AT_FULL_SHAPE, "--rows", "MGN", "--set", "data.p=2", "--set", "model.bn_group=null",
            "--set", "data.eval_batch_size=8",
            "--storage-path", str(tmp_path / "ray_results"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
            "--dry-run"]  # fmt: skip
    assert main("table5", args) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("  MGN: ") and "per step" in line)
    assert "8 images of 384x128 per step" in line and "(2048-d)" in line, line
    assert float(re.search(r"peak memory ([\d.]+) GiB", line).group(1)) > 0.5
    assert "the grid's training at these rates" in out
    assert "MGN: 80 epochs x" in out  # the paper's schedule in the plan
    assert not (tmp_path / "m.db").exists() and not list((tmp_path / "ray_results").glob("table5-*"))


def test_dry_run_report_measures_a_real_step():
    config = tiny_config()
    dataset = load_dataset(config.data)
    report = dry_run(config, dataset, steps=2)
    assert report.steps == 2 and report.images_per_step == config.data.p * config.data.k
    assert report.step_seconds > 0 and report.eval_seconds > 0 and report.loss > 0
    assert report.feature_dim == MGN(config.model, dataset.num_train_ids).embedding_dim
    with pytest.raises(ValueError, match="at least one step"):
        dry_run(smoke(), dataset, steps=0)


def test_dry_run_needs_a_step(capsys):
    assert main("table5", ["--dry-run", "0"]) == 2
    assert "--dry-run 0: give at least one step" in capsys.readouterr().err
