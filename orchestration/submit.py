"""Submit an experiment script to a running Ray cluster as a Ray job.

    python -m orchestration.submit --address http://127.0.0.1:8265 \\
        --storage-path /shared/ray_results --tracking-uri http://mlflow.internal:5000 \\
        -- experiments/duke_table3.py --data-root /shared/datasets

The job ships the project's code as its ``working_dir`` (``mgn/``, ``orchestration/``,
``experiments/``, ``pyproject.toml`` and files the command names; never credential-shaped files, which
are listed as left out; the size is printed), the commit it was submitted from, and the environment
the workers need, and runs the script on the cluster,
where ``ray.init()`` joins that cluster. ``--storage-path`` must be a folder every node sees (NFS)
or a URI; ``--tracking-uri`` should be a tracking server (SQLite files do not travel between
nodes). With ``--wait`` the job's log is printed and the exit code is the job's.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from orchestration.runtime.tracking import (
    GIT_COMMIT_ENV,
    PROJECT_ROOT,
    Tracker,
    git_commit,
    redact,
    split_credentials,
)

# What a job runs: the packages, the experiment scripts and the project file; nothing else of the
# folder (a .env, keys, stores, data) leaves this machine.
JOB_CODE = ("mgn", "orchestration", "experiments")
JOB_FILES = ("pyproject.toml",)
# Never uploaded, wherever they are: credential-shaped names, caches, stores.
CREDENTIAL_SHAPED = (".env", ".env.*", ".netrc", ".pgpass", "id_rsa*", "id_ed25519*", "id_ecdsa*", "*.pem", "*.key",
                     "*.p12", "credentials", "credentials.json", "*.token", "auth_token")  # fmt: skip
SKIPPED = ("__pycache__", "*.pyc", "mlflow.db*", "*.egg-info")


@dataclass(frozen=True)
class JobFiles:
    """What a job uploads (paths relative to the project) and what was left out as credential-shaped."""

    files: tuple[str, ...]
    refused: tuple[str, ...]
    size: int

    def summary(self) -> str:
        left = f"; left out as credential-shaped: {', '.join(self.refused)}" if self.refused else ""
        return f"uploading {len(self.files)} files ({self.size / 1e6:.1f} MB): {', '.join(JOB_CODE + JOB_FILES)}{left}"


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def job_files(root: Path, script: list[str]) -> JobFiles:
    """The project's code and the files the command names (``--config my.yaml`` inside the project)."""
    named = [
        root / a
        for a in script
        if (root / a).is_file() and (root / a).resolve().is_relative_to(root.resolve())
    ]
    candidates = [p for folder in JOB_CODE for p in sorted((root / folder).rglob("*"))]
    candidates += [root / name for name in JOB_FILES] + named
    kept: list[Path] = []
    refused: list[Path] = []
    for path in candidates:
        parts = path.relative_to(root).parts
        if not path.is_file() or any(_matches(part, SKIPPED) for part in parts):
            continue
        (refused if any(_matches(part, CREDENTIAL_SHAPED) for part in parts) else kept).append(path)
    unique = sorted({p.relative_to(root).as_posix() for p in kept})
    return JobFiles(tuple(unique), tuple(sorted({p.relative_to(root).as_posix() for p in refused})),
                    sum((root / f).stat().st_size for f in unique))  # fmt: skip


def stage(root: Path, files: JobFiles, folder: Path) -> Path:
    """A copy of exactly ``files``: the job's working_dir."""
    for name in files.files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return folder


def runtime_env(tracking_uri: str | None, extra_env: dict[str, str], working_dir: Path) -> dict:
    env_vars = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "PYTHONUNBUFFERED": "1", **extra_env}
    # The job's copy has no .git: the commit (and whether the tree was dirty) goes with it.
    env_vars.setdefault(GIT_COMMIT_ENV, git_commit())
    if tracking_uri:
        env_vars["MLFLOW_TRACKING_URI"] = tracking_uri
    return {"working_dir": str(working_dir), "env_vars": env_vars}


def entrypoint(python: str, script: list[str], storage_path: str | None) -> str:
    if not script or not script[0].endswith(".py"):
        raise ValueError(
            "give the script and its arguments after --, e.g. -- experiments/duke_table3.py --data-root /data"
        )
    if not (PROJECT_ROOT / script[0]).is_file():
        raise ValueError(f"{script[0]} is not a script of this project ({PROJECT_ROOT})")
    args = list(script)
    if storage_path and "--storage-path" not in args:
        args += ["--storage-path", storage_path]
    return " ".join([python, *(shlex.quote(a) for a in args)])


def _use_token_auth_when_a_token_exists() -> None:
    """Ray 2.60 clusters use token authentication; the job client must too when a token is at hand
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``). Ray's own helper decides,
    and unlike setting ``RAY_AUTH_MODE`` by hand it also refreshes the mode Ray cached if this
    process imported Ray before (a notebook, a test session). An explicit ``RAY_AUTH_MODE`` wins.
    The helper is private in 2.60; a Ray without it has no token authentication to set up."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--address", required=True, help="the cluster's dashboard, e.g. http://127.0.0.1:8265"
    )
    parser.add_argument("--storage-path", help="grid storage every node sees (NFS folder or URI)")
    parser.add_argument("--tracking-uri", help="MLflow tracking server for the job's runs")
    parser.add_argument(
        "--python", default="python", help="interpreter on the cluster (default: python on its PATH)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the job"
    )
    parser.add_argument("--wait", action="store_true", help="follow the job's log until it ends")
    parser.add_argument(
        "--timeout", type=float, default=24 * 3600, help="with --wait: give up after this many seconds"
    )
    parser.add_argument(
        "--fetch-into", type=Path, default=PROJECT_ROOT / "results",
        help="with --wait: where the job's published tables and figures are copied from MLflow (default results/)",
    )  # fmt: skip
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- script.py [its arguments]")
    return parser


def follow(client, job_id: str, timeout_s: float, address: str = "<dashboard>") -> int:
    """Print the job's log as it grows until it ends (exit 0 when it succeeded) or ``timeout_s`` passes.
    A dashboard that goes away is one line saying how to reattach (the job itself goes on)."""
    from ray.job_submission import JobStatus

    deadline, printed = time.monotonic() + timeout_s, 0
    while True:
        try:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
        except (ConnectionError, OSError, requests.exceptions.RequestException) as error:
            print(
                f"error: lost the job server at {address} while following {job_id} ({type(error).__name__}); the job "
                f"may still run. Reattach with: ray job logs --address {address} --follow {job_id}",
                file=sys.stderr,
            )
            return 1
        print(logs[printed:], end="")
        printed = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            print(f"job {job_id}: {status.value}")
            return 0 if status == JobStatus.SUCCEEDED else 1
        if time.monotonic() > deadline:
            print(f"job {job_id} still {status.value} after {timeout_s:.0f} s", file=sys.stderr)
            return 1
        time.sleep(2)


AGENT_WAIT_S = 60.0  # a fresh head's job agent can take this long to answer under load
_NO_AGENT = "No available agent to submit job"  # Ray's words (it raises a plain RuntimeError)


def submit_when_the_agent_answers(
    client, entrypoint: str, environment: dict, wait_s: float = AGENT_WAIT_S, poll_s: float = 2.0
) -> str:
    """Submit the job, waiting (bounded) while the head's job agent is not ready yet; returns its id.
    ``TimeoutError`` says what to check when it never answers."""
    deadline, said = time.monotonic() + wait_s, False
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=environment)
        except RuntimeError as error:
            if _NO_AGENT not in str(error):
                raise
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the cluster's job agent did not answer within {wait_s:.0f} s. Check the head with `ray status` "
                    "and its dashboard_agent.log (in the head's Ray session folder), then submit again"
                ) from None
            if not said:
                print(
                    "waiting for the cluster's job agent (a fresh head can take a minute)...", file=sys.stderr
                )
                said = True
            time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    try:
        command = entrypoint(args.python, script, args.storage_path)
        extra = dict(item.split("=", 1) for item in args.env)
        if args.tracking_uri and split_credentials(args.tracking_uri)[1]:
            bare, credentials = split_credentials(args.tracking_uri)
            raise ValueError(
                f"--tracking-uri {redact(args.tracking_uri)} carries credentials, which Ray would write to its logs on "
                f"every node: set {' and '.join(credentials)} where `ray start` runs and pass --tracking-uri {bare}"
            )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _use_token_auth_when_a_token_exists()
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
    except Exception as error:  # connection refused, bad address, auth
        print(f"error: cannot reach the Ray job server at {args.address}: {error}", file=sys.stderr)
        return 2
    files = job_files(PROJECT_ROOT, script)
    print(files.summary())
    try:
        with tempfile.TemporaryDirectory(prefix="mgn-job-") as folder:  # Ray packs it during submit_job
            environment = runtime_env(args.tracking_uri, extra, stage(PROJECT_ROOT, files, Path(folder)))
            job_id = submit_when_the_agent_answers(client, command, environment)
    except TimeoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"submitted {job_id}: {redact(command)}\nfollow it with: ray job logs --address {args.address} --follow {job_id}"
    )
    if not args.wait:
        return 0
    code = follow(client, job_id, args.timeout, args.address)
    if code == 0:
        fetch_results(client.get_job_logs(job_id), args.tracking_uri, args.fetch_into)
    return code


# The line every study prints when it starts (orchestration.study.driver.run_study).
PARENT_LINE = re.compile(r"MLflow: experiment '(?P<experiment>[^']*)', parent run (?P<run>[0-9a-f]{32})")


def fetch_results(log: str, tracking_uri: str | None, into: Path) -> list[Path]:
    """A finished job's tables and figures, which it wrote in its working folder on the head (gone
    with the cluster), copied here from the MLflow runs that hold them; or where they are."""
    found = PARENT_LINE.search(log)
    if found is None:
        return []
    where = f"MLflow experiment '{found['experiment']}', parent run {found['run']}"
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        print(f"the job's tables are in results/ of its working folder on the head and in {where} (its artifacts); "
              "give --tracking-uri to have them copied here")  # fmt: skip
        return []
    try:
        written = _download_results(Tracker(uri), found["run"], into)
    except Exception as error:  # the store does not answer from here: say where the tables are
        print(f"could not copy the job's tables from {redact(uri)} ({type(error).__name__}: {error}); they are in "
              f"{where}", file=sys.stderr)  # fmt: skip
        return []
    print(f"copied {len(written)} result files from {where} into {into}: {', '.join(p.name for p in written)}")
    return written


def _download_results(tracker: Tracker, parent_run_id: str, into: Path) -> list[Path]:
    written = []
    for run_id, path in tracker.result_files(parent_run_id):
        with tempfile.TemporaryDirectory(prefix="mgn-fetch-") as folder:
            downloaded = tracker.download(run_id, path, folder)
            if downloaded is None:
                continue
            target = into / path  # figures/ keeps its folder, as in results/
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(downloaded, target)
            written.append(target)
    return written


if __name__ == "__main__":
    sys.exit(main())
