"""Every experiment script, end to end on tiny data, run as a user runs it (subprocess)."""

from __future__ import annotations

import json
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


# Each script run as ``python <script> --help`` would run it, all in one interpreter (one import of
# torch, not one per script): its help text, and the exit code argparse gives it.
_HELP_PROBE = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as done:
        code = done.code or 0
    out[script] = [code, text.getvalue()]
print(json.dumps(out))
"""


def test_scripts_explain_their_options():
    scripts = [str(s) for s in sorted((ROOT / "experiments").glob("*.py"))]
    run = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    helps = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(helps) == scripts
    for script, (code, text) in helps.items():
        assert code == 0 and "--data-root" in text and "--resume" in text, script
