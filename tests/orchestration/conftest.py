"""Shared set-up for the orchestration tests: tiny grids on a private Ray instance and MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

# The tiny synthetic set of tests/conftest.py, 64x32 input, 4x2 batches, one epoch, no re-ranking.
TINY_SETS = [
    "data.height=64",
    "data.width=32",
    "data.p=4",
    "data.k=2",
    "data.synthetic.num_train_ids=8",
    "data.synthetic.num_test_ids=6",
    "data.synthetic.images_per_id=6",
    "data.synthetic.num_distractors=4",
    "data.synthetic.num_junk=3",
    "train.epochs=1",
    "optimizer.warmup_epochs=0",
    "optimizer.milestones=[1]",
    "eval.rerank=false",
]


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, str]:
    return {
        "storage": str(tmp_path / "ray_results"),
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "results": str(tmp_path / "results"),
    }


def grid_args(workspace: dict[str, str], *extra: str, rows: tuple[str, ...] = ("MGN",)) -> list[str]:
    args = [
        "--storage-path",
        workspace["storage"],
        "--tracking-uri",
        workspace["uri"],
        "--results-dir",
        workspace["results"],
    ]
    args += ["--num-cpus", "2"]
    for row in rows:
        args += ["--rows", row]
    for item in TINY_SETS:
        args += ["--set", item]
    return [*args, *extra]
