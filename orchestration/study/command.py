"""The command line of every study (``experiments/*.py``): bad input fails before Ray is imported.

``run_command`` = parse, let the study prepare (its config, folder, pre-flight: ``Prepared``), check
the run options, tracking store and results folder, take the folder's lock, then hand the study to
the driver (``orchestration.study.driver``). Any error a user's input causes is one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mgn.backbone import PretrainedWeightsMissing
from mgn.config import ConfigError
from mgn.data.records import DatasetError
from mgn.errors import UsageError
from orchestration.runtime.storage import Storage, StorageError
from orchestration.runtime.tracking import TrackingUnavailable, check_reachable, redact, resolve_tracking_uri
from orchestration.study.lock import StudyLocked, acquire, release
from orchestration.study.options import RunOptions
from orchestration.study.state import StudyState

if TYPE_CHECKING:  # the driver imports Ray: only once the input is known to be good
    from orchestration.study.driver import Study

# What a user's input can cause before any compute: each is printed as its one-line message.
INPUT_ERRORS = (
    ConfigError, DatasetError, PretrainedWeightsMissing, StorageError, StudyLocked, TrackingUnavailable, UsageError,
)  # fmt: skip


@dataclass(frozen=True)
class Prepared:
    """A study ready to run: checked, with its folder (new or resumed) and the command it records."""

    study: Study
    folder: Storage
    state: StudyState | None  # the recorded state of a resumed study
    options: RunOptions


# A study's preparation: the parsed arguments and the command line -> the study, or an exit code
# (a dry run that rehearsed and ended).
Prepare = Callable[[argparse.Namespace, str], "Prepared | int"]


def command_line(script: str, argv: list[str] | None) -> str:
    """How the study was started, credentials redacted: what its runs and the resume hint record."""
    given = argv if argv is not None else sys.argv[1:]
    return " ".join(["python", script, *(shlex.quote(redact(a)) for a in given)])


def check_results_dir(folder: Path) -> None:
    """The results are written after all training: a folder they cannot be written to fails now."""
    folder = folder.absolute()
    for path in (folder, *folder.parents):  # a dangling link "does not exist", yet mkdir cannot pass it
        if path.is_symlink() and not path.exists():
            raise UsageError(
                f"--results-dir {folder}: {path} is a link to {os.readlink(path)}, which does not exist; "
                "create that folder or pass another"
            )
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--results-dir {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {folder}: {existing} is not writable; pass a folder you can write")


def open_storage(args: argparse.Namespace) -> Storage:
    """``--storage-path``, reachable and writable, before the data are decoded."""
    storage = Storage.parse(args.storage_path)
    storage.check()
    return storage


def run_command(
    parser: argparse.ArgumentParser, script: str, argv: list[str] | None, prepare: Prepare
) -> int:
    """Parse, prepare, check, lock, run: the exit code (2 for bad input, before any compute)."""
    args = parser.parse_args(argv)
    command = command_line(script, argv)
    try:
        prepared = prepare(args, command)
        if isinstance(prepared, int):
            return prepared
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        check_results_dir(prepared.options.results_dir)
        lock = acquire(prepared.folder)
    except INPUT_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in the pre-flight (decoding, generating the synthetic set)
        print("interrupted while preparing, before any training or record: run the command again", file=sys.stderr)
        return 130
    from orchestration.study.driver import run_study

    # A resumed study reproduces as it was started: its tables and hints say the original command.
    recorded = prepared.state.command if prepared.state else command
    try:
        return run_study(prepared.study, prepared.options, uri, prepared.folder, prepared.state, recorded)
    finally:
        release(prepared.folder, lock)
