"""Resuming from Ray's checkpoints, with a fallback when the newest one cannot be read.

Ray gives a restarted worker group (or trial) only its newest checkpoint. A file truncated by a
full disk or a node lost mid-upload must not end the trial: the older checkpoints Ray kept
(``CheckpointConfig(num_to_keep=...)``) lie beside it in the same storage folder, named so that
they sort by age (``checkpoint_000007`` in Tune, ``checkpoint_<timestamp>`` in Train).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from mgn.checkpoint import CHECKPOINT_FILE, CorruptCheckpointError, TrainingState, load_checkpoint

if TYPE_CHECKING:  # Ray is imported by the function that builds checkpoints, in a trial's worker
    from ray.train import Checkpoint

_PREFIX = "checkpoint_"


def with_older_siblings(newest: Checkpoint) -> list[Checkpoint]:
    """``newest`` first, then the checkpoints kept beside it, newest to oldest."""
    from ray.train import Checkpoint

    filesystem = newest.filesystem
    assert filesystem is not None  # a Checkpoint resolves its filesystem when it is made
    parent, name = newest.path.rstrip("/").rsplit("/", 1)
    selector = pafs.FileSelector(parent, allow_not_found=True)
    older = sorted(
        (
            info.path
            for info in filesystem.get_file_info(selector)
            if info.type is pafs.FileType.Directory
            and info.base_name.startswith(_PREFIX)
            and info.base_name < name
        ),
        reverse=True,
    )
    return [newest, *(Checkpoint(path, filesystem=filesystem) for path in older)]


def latest_good_state(newest: Checkpoint | None, warn: Callable[[str], None] = print) -> TrainingState | None:
    """The training state of the newest readable checkpoint; unreadable ones are named and skipped."""
    if newest is None:
        return None
    for checkpoint in with_older_siblings(newest):
        # A private copy per process: ``as_directory`` shares one download among the processes of
        # a machine and deletes it when the first is done, under the others' feet.
        with tempfile.TemporaryDirectory(prefix="mgn-resume-") as folder:
            try:
                checkpoint.to_directory(folder)
                return load_checkpoint(Path(folder) / CHECKPOINT_FILE)
            except (CorruptCheckpointError, FileNotFoundError) as error:
                reason = "has no checkpoint file" if isinstance(error, FileNotFoundError) else "is corrupt"
                warn(f"checkpoint {checkpoint.path} {reason}; falling back to the previous checkpoint")
    warn(f"no readable checkpoint beside {newest.path}: training starts again from epoch 0")
    return None
