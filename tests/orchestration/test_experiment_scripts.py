"""Every experiment script, end to end on tiny data, run as a user runs it (subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.orchestration.conftest import grid_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "key", "filled"),
    [
        ("experiments/market_table2.py", "table2", ["SQ R1", "SQ mAP", "MQ R1", "MQ mAP"]),
        ("experiments/duke_table3.py", "table3", ["R1", "mAP"]),
        (
            "experiments/cuhk03_table4.py",
            "table4",
            ["Labeled R1", "Labeled mAP", "Detected R1", "Detected mAP"],
        ),
    ],
)
def test_dataset_table_on_the_synthetic_stand_in(workspace, script, key, filled):
    args = grid_args(workspace, rows=())
    run = subprocess.run(
        [sys.executable, script, *args, "--set", "eval.rerank=true"], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    frame = pd.read_csv(Path(workspace["results"]) / f"{key}.csv")
    ours = frame[frame["Source"] == "ours"]
    assert ours[filled].notna().all().all()  # every column of our rows comes from the store
    assert (frame["Source"] == "published").sum() > 5  # the competing methods, marked as published
    markdown = (Path(workspace["results"]) / f"{key}.md").read_text()
    assert "published (paper)" in markdown and "profile | smoke" in markdown
    assert (Path(workspace["results"]) / "figures" / f"{key}_cmc.png").is_file()


def test_scripts_explain_their_options():
    for script in sorted((ROOT / "experiments").glob("*.py")):
        run = subprocess.run(
            [sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0 and "--data-root" in run.stdout and "--resume" in run.stdout, script.name
