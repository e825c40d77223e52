"""A full disk: a clear "no space left on <folder>" error, no half-written file left behind (it would
fail every retry at once), and what was written before kept. A 1 MiB tmpfs is the full disk, so
this needs the right to mount (root, as in CI); elsewhere it is skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from mgn.checkpoint import TrainingState, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.integration  # mounts a tmpfs (mount, umount)


@pytest.fixture
def full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(disk)], capture_output=True)  # a file still open: detach


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
