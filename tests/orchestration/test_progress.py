"""The console lines of a running study (a Tune callback): one per epoch, and one for each wait that
would otherwise be minutes of silence or of Ray's own log lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgn.config_io import apply_overrides
from mgn.recipes import smoke
from orchestration.runtime.progress import ProgressPrinter
from orchestration.runtime.trial import TrialSpec


@dataclass
class _Trial:  # what the callback reads of Tune's Trial
    config: dict[str, Any]
    trial_id: str = "abc_00000"
    path: str = "/grids/g/trials/abc"
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None  # Tune's local record of the last failure, when there is one


def _trial(*overrides: str) -> _Trial:
    config = apply_overrides(smoke(), list(overrides))
    return _Trial({"trial": TrialSpec(row="MGN", seed=0, config=config).to_dict()})


def test_a_trial_says_what_comes_before_its_first_epoch_and_when_it_restarts(tmp_path):
    lines: list[str] = []
    printer = ProgressPrinter({"MGN seed0": 8}, concurrency=1, printer=lines.append)
    trial = _trial(
        "scaling.num_workers=2", "eval.untrained=true", "train.checkpoint_every=2", "train.epochs=8"
    )
    printer.on_trial_start(0, [], trial)
    assert lines[-1].endswith(
        "start MGN seed0: a worker group of 2 (Ray Train), then the untrained network's evaluation before its first epoch"
    )
    for epoch in (1, 2, 3):
        printer.on_trial_result(0, [], trial, {"loss": 1.0, "epoch": epoch, "epoch_seconds": 10.0})
    printer.on_trial_recover(0, [], trial)
    assert lines[-1].endswith(
        "MGN seed0 stopped after epoch 3 (a process or its node was lost); restarting it from epoch 2"
    )
    # Why, when Tune recorded it: the exception's line that ends the remote traceback.
    (tmp_path / "error.txt").write_text(
        'Failure # 1 (occurred at 2026-12-04)\nray::run_trial() (pid=1, ip=10.0.0.2)\n  File "x.py", line 3\n'
        "OSError: [Errno 28] No space left on device\n"
    )
    trial.error_file = str(tmp_path / "error.txt")
    printer.on_trial_recover(0, [], trial)
    assert lines[-1].endswith(
        "stopped after epoch 3 (OSError: [Errno 28] No space left on device); restarting it from epoch 2"
    )
    plain = _trial("train.checkpoint_every=0", "eval.untrained=false")
    printer.on_trial_start(0, [], plain)
    assert lines[-1].endswith("start MGN seed0")  # one process, no untrained evaluation: nothing to wait for
    printer.on_trial_recover(0, [], plain)
    assert lines[-1].endswith("restarting it from epoch 0 (train.checkpoint_every=0: no checkpoints)")
