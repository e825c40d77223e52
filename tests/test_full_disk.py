"""A full disk: a clear "no space left on <folder>" error, no half-written file left behind (it would
fail every retry at once), and what was written before kept. A 1 MiB tmpfs is the full disk, so
this needs the right to mount (root, as in CI); elsewhere it is skipped."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mgn.checkpoint import TrainingState, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.integration  # mounts a tmpfs (mount, umount)


@contextlib.contextmanager
def tmpfs(disk: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``disk`` (skips the test where mounting is not allowed)."""
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(disk)], capture_output=True)  # a file still open: detach


@pytest.fixture
def full_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        yield disk


def _state(megabytes: float, epochs: int) -> TrainingState:
    return TrainingState({"w": torch.zeros(int(megabytes * 2**18))}, {}, {}, epochs, {})


def test_a_checkpoint_on_a_full_disk_is_named_cleaned_up_and_keeps_the_previous(full_disk):
    kept = save_checkpoint(_state(0.1, 1), full_disk / "epoch1.pt")
    with pytest.raises(OSError, match=f"no space left on {full_disk} to write the checkpoint epoch2.pt"):
        save_checkpoint(_state(4, 2), full_disk / "epoch2.pt")
    assert sorted(p.name for p in full_disk.iterdir()) == ["epoch1.pt"]  # no partial or temporary file
    assert load_checkpoint(kept).epochs_done == 1


def test_grid_storage_on_a_full_disk_is_named_and_cleaned_up(full_disk):
    from orchestration.runtime.storage import Storage

    grid = Storage.parse(full_disk)
    (grid / "done.json").write_text("{}")
    with pytest.raises(OSError, match=f"no space left on {full_disk}/trials to write features.pt"):
        (grid / "trials" / "features.pt").write_bytes(b"x" * 4 * 2**20)
    assert [p.name for p in Path(full_disk, "trials").iterdir()] == []
    assert (grid / "done.json").read_text() == "{}"


def test_a_grid_whose_storage_fills_up_says_so_and_how_to_resume(tmp_path, capsys):
    """A checkpoint (136 MB here) that does not fit: the trial fails (its retry's line says why), Ray's
    pickled record of that failure is cut short too, and Tune itself then fails reading it
    (``UnpicklingError``, ``EOFError``). The driver names the full disk and the resume command instead
    of Tune's traceback; the parent is FAILED."""
    from mlflow.tracking import MlflowClient

    from orchestration.tables.command import main
    from tests.orchestration.conftest import grid_args

    with tmpfs(tmp_path / "disk", "100m") as disk:
        workspace = {"storage": str(disk / "runs"), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "results": str(tmp_path / "results")}  # fmt: skip
        args = grid_args(
            workspace, "--max-failures", "1", "--set", "train.checkpoint_every=1", rows=("ResNet-50+TP",)
        )
        assert main("table5", args) == 1
    out, error = capsys.readouterr()
    # The retry's line names the cause Tune recorded (not "a process or its node was lost").
    assert re.search(r"stopped after epoch \d \(OSError: \[Errno 28\] .*\); restarting it from epoch", out), (
        out
    )
    line = re.search(
        rf"^error: grid storage {disk}/runs/(table5-\S+) is full \(\d+ MB free\): .*$", error, re.M
    )
    assert line, error
    assert f"--resume {line.group(1)}" in error and "Traceback" not in error[line.start() :]
    client = MlflowClient(workspace["uri"])
    runs = client.search_runs([client.get_experiment_by_name("MGN Table 5").experiment_id])
    assert {r.info.status for r in runs} == {"FAILED"}  # the parent and its trial: never RUNNING
