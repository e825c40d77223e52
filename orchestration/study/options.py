"""The run options every study's command line shares: where its trials run, where results go, how
failures are handled. ``add_run_options`` declares them once; ``RunOptions`` is their typed form."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mgn.errors import UsageError
from orchestration.runtime.tracking import PROJECT_ROOT


@dataclass(frozen=True)
class RunOptions:
    """How a study runs on the cluster and where its results go (``orchestration.study.driver``)."""

    experiment_name: str  # MLflow experiment
    results_dir: Path
    address: str | None = None  # a running Ray cluster; None: start one here
    num_cpus: int | None = None  # size of a Ray instance started here
    max_failures: int = 2
    max_concurrent: int | None = None
    log_checkpoint: bool = False
    register: bool = False  # register each trial's logged model under its table row's name
    shared_storage: bool = False  # a local storage path that every node mounts (NFS)
    placement_timeout_s: float = 300.0  # how long a cluster given by --address may take to fit a trial

    def __post_init__(self) -> None:
        if self.max_failures < 0:
            raise UsageError(
                f"--max-failures {self.max_failures}: must be >= 0 (a deterministic error would be retried forever)"
            )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UsageError(
                f"--max-concurrent {self.max_concurrent}: must be >= 1 (or left out: as many as fit)"
            )
        if self.placement_timeout_s < 0:
            raise UsageError(f"--placement-timeout {self.placement_timeout_s:g}: must be >= 0 seconds")


def add_run_options(p: argparse.ArgumentParser, experiment_name: str, written: str, study: str) -> None:
    """Where trials run and their results go, and ``--resume``: the options of every study's command."""
    p.add_argument("--address", help="a running Ray cluster (default: start one on this machine)")
    p.add_argument(
        "--storage-path",
        default=str(PROJECT_ROOT / "ray_results"),
        metavar="PATH_OR_URI",
        help="where trials, checkpoints and features go: a local folder (default ./ray_results) or an "
        "object store every node reaches (s3://bucket/prefix; endpoint and credentials from the "
        "environment)",
    )
    p.add_argument("--shared-storage", action="store_true",
                   help="the local --storage-path is a shared filesystem (NFS) mounted at the same path on every "
                        "node; without it a multi-node cluster needs an object-store URI")  # fmt: skip
    p.add_argument(
        "--tracking-uri", help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    p.add_argument("--experiment-name", default=experiment_name, help="MLflow experiment")
    p.add_argument("--results-dir", type=Path, default=PROJECT_ROOT / "results", help=f"where {written}")
    p.add_argument(
        "--max-failures", type=int, default=2, help="restarts of a failing trial before it is given up"
    )
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--placement-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --address: how long to wait for a node that can hold a trial (an autoscaler "
                        "adding one) before giving up with a message")  # fmt: skip
    p.add_argument("--num-cpus", type=int, help=argparse.SUPPRESS)  # size of a local Ray instance (tests)
    p.add_argument("--resume", nargs="?", const="latest", metavar="FOLDER",
                   help=f"continue an interrupted {study} (the latest, or the named folder) without rerunning "
                        "finished trials")  # fmt: skip


def run_options(args: argparse.Namespace, log_checkpoint: bool = False, register: bool = False) -> RunOptions:
    """The ``add_run_options`` of a parsed command line, checked."""
    return RunOptions(
        experiment_name=args.experiment_name,
        results_dir=args.results_dir,
        address=args.address,
        num_cpus=args.num_cpus,
        max_failures=args.max_failures,
        max_concurrent=args.max_concurrent,
        log_checkpoint=log_checkpoint,
        register=register,
        shared_storage=args.shared_storage,
        placement_timeout_s=args.placement_timeout,
    )
