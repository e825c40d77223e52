"""The library stands alone: nothing in ``mgn/`` imports Ray, MLflow or ``orchestration``, not even
lazily inside a function (read from the source), and importing it loads neither at run time."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import mgn

FORBIDDEN = {"ray", "mlflow", "orchestration"}


def forbidden_imports(source: str, name: str) -> list[str]:
    """``file:line module`` of every import of a FORBIDDEN package in ``source``, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [(node.lineno, f"{name}:{node.lineno} {m}") for m in modules if m.split(".")[0] in FORBIDDEN]
    return [hit for _, hit in sorted(found)]


def test_no_module_of_the_library_imports_ray_mlflow_or_orchestration():
    root = Path(mgn.__file__).parent
    found = [
        hit
        for path in sorted(root.rglob("*.py"))
        for hit in forbidden_imports(path.read_text(), str(path.relative_to(root.parent)))
    ]
    assert found == []


def test_the_scan_sees_lazy_imports():
    lazy = "def resolve(uri):\n    if uri:\n        from orchestration.runtime.tracking import Tracker\n    import ray.tune\n"
    assert forbidden_imports(lazy, "cli.py") == [
        "cli.py:3 orchestration.runtime.tracking",
        "cli.py:4 ray.tune",
    ]
    assert forbidden_imports("import raytracer\nfrom mgn import cli\n", "x.py") == []


LIBRARY = "mgn.training, mgn.evaluation, mgn.model, mgn.distributed, mgn.cli"
COMMANDS = (
    "orchestration.tables.command, orchestration.recipe_search.command, orchestration.sweep.command, "
    "orchestration.datasets.command, orchestration.runtime.model_uris"
)
DRIVER = "orchestration.study.driver"
# One fresh interpreter imports each stage in turn and says which of Ray and MLflow it has loaded
# after each (one import of torch, not three).
_PROBE = """
import importlib, json, sys
loaded = []
for stage in sys.argv[1:]:
    for module in stage.split(","):
        importlib.import_module(module.strip())
    loaded.append(sorted({m.split(".")[0] for m in sys.modules} & {"ray", "mlflow"}))
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded_after() -> dict[str, list[str]]:
    """Ray and MLflow as loaded after the library, then also the study commands, then also a driver."""
    stages = (LIBRARY, COMMANDS, DRIVER)
    run = subprocess.run([sys.executable, "-c", _PROBE, *stages], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return dict(zip(stages, json.loads(run.stdout), strict=True))


@pytest.mark.integration  # starts a Python subprocess
def test_the_library_leaves_ray_and_mlflow_unloaded(loaded_after):
    assert loaded_after[LIBRARY] == []
    # The probe can fail: orchestration does load them.
    assert loaded_after[DRIVER] == ["mlflow", "ray"]


@pytest.mark.integration  # starts a Python subprocess
def test_a_study_command_imports_ray_only_after_its_pre_flight(loaded_after):
    """Bad input must fail in seconds: the study commands parse, plan and check without Ray (the
    driver imports it once the input is known to be good)."""
    assert "ray" not in loaded_after[COMMANDS]
