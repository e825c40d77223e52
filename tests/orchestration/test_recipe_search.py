"""A tiny recipe search end to end (experiments/recipe_search.py) on a local Ray instance: it never reads the
test set before the final evaluation, and it resumes after its driver is killed without rerunning finished
trials."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mgn.config import SyntheticConfig
from mgn.data.synthetic import ensure_synthetic
from mgn.evaluation import keys
from mgn.recipes import load_yaml
from tests.orchestration.driver import Process, children

pytestmark = pytest.mark.integration

SCRIPT = "experiments/recipe_search.py"
SYNTHETIC = {"num_train_ids": 12, "num_test_ids": 6, "images_per_id": 6, "num_distractors": 4, "num_junk": 3}
TEST_FOLDERS = ("query", "bounding_box_test", "gt_bbox")


def _study(data_root: Path) -> dict:
    """Two trials of two epochs on 4 held-out of 12 training ids, judged after the first epoch."""
    return {
        "validation_ids": 4,
        "trials": 2,
        "grace_epochs": 1,
        "final_seeds": 1,
        "startup_trials": 1,
        "base": {
            "data": {
                "height": 64,
                "width": 32,
                "p": 4,
                "k": 2,
                "root": str(data_root),
                "synthetic": SYNTHETIC,
            },
            "model": {"bn_group": None},  # 4 x 2 images: the recipe's groups of 32 do not fit
            "train": {"epochs": 2},
            "optimizer": {"warmup_epochs": 0, "milestones": [1]},
            "eval": {"rerank": False},
        },
        "space": {"epochs": [2], "warmup_epochs": [0], "milestones": [[0.5]]},
    }


def _spoil_the_test_set(dataset: Path, backup: Path) -> None:
    """Every test image becomes bytes no decoder reads: whatever opens one fails loudly."""
    for name in TEST_FOLDERS:
        shutil.copytree(dataset / name, backup / name)
        for image in (dataset / name).iterdir():
            image.write_bytes(b"not an image: the search must not read the test set")


def _attempts(storage: Path) -> dict[str, int]:
    (search,) = storage.glob("recipe_search-*")
    return {
        p.parent.parent.name: int(p.read_text()) for p in (search / "trials").glob("search-*/seed*/attempts")
    }


def test_a_search_never_reads_the_test_set_and_resumes_after_its_driver_is_killed(workspace, tmp_path):
    dataset = ensure_synthetic(SyntheticConfig(**SYNTHETIC), tmp_path / "data")
    _spoil_the_test_set(dataset, tmp_path / "backup")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(_study(tmp_path / "data")))
    storage, uri = Path(workspace["storage"]), workspace["uri"]
    args = ["--config", str(study), "--storage-path", str(storage), "--tracking-uri", uri,
            "--results-dir", workspace["results"], "--num-cpus", "2"]  # fmt: skip

    # Tune saves its state every second; the driver dies once a trial has finished.
    driver = Process(args, env={"TUNE_GLOBAL_CHECKPOINT_S": "1"}, script=SCRIPT)
    driver.wait_for(r"^\[search 1/2\] \w+ .*: val mAP")
    time.sleep(3)  # Tune has saved that the trial ended
    driver.kill()
    ended = {f"search-{m[1]}" for line in driver.lines if (m := re.match(r"^\[search \d/2\] (\w+) ", line))}
    assert ended and all(n == 1 for n in _attempts(storage).values())

    # Resumed with the test images still unreadable: the search ends, and only then is the test set read.
    resumed = Process([*args, "--resume"], script=SCRIPT)
    assert resumed.finish() == 2, "".join(resumed.lines)
    log = "".join(resumed.lines)
    assert "FAILED" not in log and "winner: " in log
    assert "error: the test set, read for the final evaluation" in log and "--resume" in log
    attempts = _attempts(storage)
    assert len(attempts) == 2 and all(attempts[name] == 1 for name in ended)  # not trained again

    for name in TEST_FOLDERS:
        shutil.rmtree(dataset / name)
        shutil.copytree(tmp_path / "backup" / name, dataset / name)
    final = Process([*args, "--resume"], script=SCRIPT)
    assert final.finish() == 0, "".join(final.lines)
    assert _attempts(storage) == attempts  # the search is not run again: only the final training
    assert re.search(r"^runs: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui .*viewStateShareKey=mgn-", final.lines[-1])  # how to look at them

    runs = children(uri, "MGN recipe search")
    search = [r for r in runs if r.data.tags["mgn.stage"] == "search"]
    tested = [r for r in runs if r.data.tags["mgn.stage"] == "final"]
    assert len(search) == 2 and {r.data.tags["mgn.row"] for r in search} == {
        n.replace("-", " ", 1) for n in attempts
    }
    client = MlflowClient(uri)
    for run in search:  # validation figures only, under their own names; a closed run with its outcome
        assert keys.validation(keys.MAP) in run.data.metrics and keys.MAP not in run.data.metrics
        assert run.info.status == "FINISHED" and run.data.tags["mgn.outcome"]
        assert run.data.params["data.validation_ids"] == "4"
        curve = client.get_metric_history(run.info.run_id, keys.validation(keys.MAP))
        assert [m.step for m in curve] == list(range(1, len(curve) + 1))  # every epoch, each once
    base = next(r for r in search if r.data.tags["mgn.base_recipe"] == "true")
    assert json.loads(base.data.tags["mgn.candidate"])["lr"] == 1e-3  # smoke()'s, measured first
    assert {r.data.tags["mgn.row"] for r in tested} <= {"base recipe", "searched recipe"}
    assert all(keys.MAP in r.data.metrics and r.data.params["data.validation_ids"] == "0" for r in tested)

    report = (Path(workspace["results"]) / "recipe_search.md").read_text()
    assert "| base recipe | 1 |" in report and "## Every search trial, best first" in report
    recipe = load_yaml(Path(workspace["results"]) / "recipe_search.yaml")
    assert recipe.data.validation_ids == 0 and recipe.train.epochs == 2

    # The report is written from the runs alone: rebuilt from the store, it is the same file.
    from orchestration.recipe_search.report import main as rebuild

    (folder,) = Path(storage).glob("recipe_search-*")
    again = tmp_path / "again"
    assert rebuild([str(folder), "--tracking-uri", uri, "--results-dir", str(again)]) == 0
    assert (again / "recipe_search.md").read_text() == report
    assert (again / "recipe_search.yaml").read_bytes() == (Path(workspace["results"]) / "recipe_search.yaml").read_bytes()
