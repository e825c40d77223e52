"""Progress a person can follow: which trial, which epoch, loss, images/s, time left."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from mgn.evaluation import keys
from orchestration.runtime.trial import title_of


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _config(params: dict[str, Any]) -> dict[str, Any]:
    return (params.get("trial") or {}).get("config") or {}


def _before_first_epoch(params: dict[str, Any]) -> str:
    """What a trial does before its first epoch line, which can be minutes away: ": a worker group of
    2 (Ray Train), then the untrained network's evaluation"."""
    config = _config(params)
    workers = int(config.get("scaling", {}).get("num_workers", 1))
    steps = [f"a worker group of {workers} (Ray Train)"] if workers > 1 else []
    if config.get("eval", {}).get("untrained"):
        steps.append("the untrained network's evaluation")
    return f": {', then '.join(steps)} before its first epoch" if steps else ""


def failure(trial: Any, longest: int = 200) -> str:
    """Why a trial failed: the last line of the error Tune just recorded in the trial's local error
    file (``Trial.handle_error`` writes it before the recover callback; the exception's own line ends
    a remote traceback), else what a missing record usually means."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    if not lines or lines[-1].startswith("Failure #"):
        return "a process or its node was lost"
    last = lines[-1]
    return last if len(last) <= longest else last[: longest - 1] + "…"


class ProgressPrinter(tune.Callback):
    """One line per epoch of every trial and one per finished trial, with time estimates.

    ``plan`` maps every trial of the grid (``trial_name``) to its number of epochs. The estimate
    of the time left assumes the remaining epochs take as long as those seen so far, run
    ``concurrency`` trials at a time.
    """

    def __init__(
        self, plan: dict[str, int], concurrency: int, printer: Callable[[str], None] | None = None
    ) -> None:
        self.plan = plan
        self.concurrency = max(1, concurrency)
        self._printer = printer  # None: print(), looked up at call time (Tune pickles callbacks)
        self.started = time.monotonic()
        self.epoch_seconds: dict[str, list[float]] = {}
        self.epochs_done: dict[str, int] = {}
        self.finished = 0

    def printer(self, line: str) -> None:
        (self._printer or print)(line)

    @staticmethod
    def _name(trial: Any) -> str:
        params = trial.config.get("trial")
        return title_of(params) if params else trial.trial_id

    def _prefix(self) -> str:
        return f"[{self.finished}/{len(self.plan)} done, {_clock(time.monotonic() - self.started)} elapsed]"

    def time_left(self, name: str) -> tuple[float, float]:
        """Seconds left for trial ``name`` and for the whole grid."""
        own = self.epoch_seconds.get(name) or [0.0]
        trial_left = sum(own) / len(own) * (self.plan.get(name, 0) - self.epochs_done.get(name, 0))
        seen = [s for values in self.epoch_seconds.values() for s in values]
        mean = sum(seen) / max(1, len(seen))
        remaining = sum(max(0, total - self.epochs_done.get(n, 0)) for n, total in self.plan.items())
        return max(0.0, trial_left), mean * remaining / self.concurrency

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.printer(f"{self._prefix()} start {self._name(trial)}{_before_first_epoch(trial.config)}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial that failed and will run again (a lost node, a killed process, a full disk): say
        so, why, and from where, instead of a minute of Ray's own log lines."""
        name = self._name(trial)
        done = self.epochs_done.get(name, 0)
        every = int(_config(trial.config).get("train", {}).get("checkpoint_every", 1))
        start = done - done % every if every else 0
        self.printer(
            f"{self._prefix()} {name} stopped after epoch {done} ({failure(trial)}); restarting "
            f"it from epoch {start}" + ("" if every else " (train.checkpoint_every=0: no checkpoints)")
        )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        name = self._name(trial)
        if result.get("warnings"):
            self.printer(f"{self._prefix()} warning from {name}: {result['warnings']}")
        if result.get("diverged"):
            self.printer(
                f"{self._prefix()} {name} DIVERGED (non-finite weights): see its MLflow run's mgn.failure tag"
            )
        if "loss" not in result:
            return
        self.epochs_done[name] = int(result.get("epoch", 0))
        self.epoch_seconds.setdefault(name, []).append(float(result.get("epoch_seconds", 0.0)))
        trial_left, grid_left = self.time_left(name)
        scores = f" | R1 {result[keys.R1]:.1f} mAP {result[keys.MAP]:.1f}" if keys.MAP in result else ""
        self.printer(
            f"{self._prefix()} {name}: epoch {self.epochs_done[name]}/{self.plan.get(name, '?')} "
            f"loss {result['loss']:.3f} {result.get('images_per_second', 0):.0f} img/s{scores} "
            f"| left: trial {_clock(trial_left)}, grid ~{_clock(grid_left)}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        name = self._name(trial)
        self.epochs_done[name] = self.plan.get(name, 0)
        result = trial.last_result or {}
        scores = f": R1 {result[keys.R1]:.1f} mAP {result[keys.MAP]:.1f}" if keys.MAP in result else ""
        self.printer(f"{self._prefix()} finished {name}{scores}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.printer(f"{self._prefix()} FAILED {self._name(trial)}: see {trial.path}")
