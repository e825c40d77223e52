"""The library stands alone: importing it loads neither Ray nor MLflow (only orchestration/ does)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_library_leaves_ray_and_mlflow_unloaded():
    probe = (
        "import json, sys\n"
        "import mgn.training, mgn.evaluation, mgn.model, mgn.distributed, mgn.cli\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'})))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []
    # The probe can fail: orchestration does load them.
    run = subprocess.run(
        [sys.executable, "-c", probe.replace("mgn.cli\n", "mgn.cli, orchestration.tables.grid\n")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert json.loads(run.stdout) == ["mlflow", "ray"]
