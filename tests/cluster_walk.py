"""Walk docs/cluster.md's set-up on this machine as a new user would: its bash block, run as written.

Only what cannot exist here is substituted (host names and ports, the data folder, the GPU, a
paper-sized workload), and a one-box rehearsal adds what the docs ask of one (each Ray node its own
``--temp-dir``) and what a walk that must stop only what it started needs (``--block``, free ports,
its own ``HOME`` for Ray's token file). What the docs assume exists is started first: an
S3-compatible store (moto), PostgreSQL with a role ``mlflow``, a data set in Market-1501's folder.

Not part of the suite (minutes, servers, two Ray nodes): run ``python tests/cluster_walk.py``. It
prints every command as run and exits 0 when every step worked and the job's records are where the
docs say; a command of the docs the walk does not know fails it (``tests/test_cluster_walk.py`` checks
that in the fast tier, so the docs and the walk cannot drift apart).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.orchestration.conftest import TINY_SETS  # noqa: E402
from tests.servers import free_port, object_store, postgres  # noqa: E402

DOCS = ROOT / "docs" / "cluster.md"
# The workload: the paper sweep's Table 2 on the tiny synthetic set, smoke profile (a CPU, minutes).
WORKLOAD = [
    "--profile",
    "smoke",
    "--tables",
    "table2",
    "--rows",
    "MGN",
    *(f"--set {shlex.quote(s)}" for s in TINY_SETS),
]


def cluster_block(markdown: str) -> list[str]:
    """The commands of the page's first ``bash`` block: continuation lines joined, comments dropped."""
    block = re.search(r"```bash\n(.*?)```", markdown, re.S)
    if block is None:
        raise SystemExit(f"{DOCS}: no ```bash block")
    joined = block.group(1).replace("\\\n", " ")
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines())
    return [re.sub(r"\s+", " ", line) for line in lines if line and not line.startswith("#")]


@dataclass(frozen=True)
class Place:
    """Where the walk's stand-ins listen, and its folder."""

    folder: Path
    node_ip: str  # this machine's interface address: the head's --node-ip-address
    gcs: int
    dashboard: int
    mlflow: int
    agents: tuple[int, int]  # each node's dashboard agent (Ray's fixed 52365 would collide)
    client: int  # the head's Ray Client server (fixed 10001 otherwise)


@dataclass(frozen=True)
class Step:
    command: str
    background: str | None = None  # a server: started in its own session, named here
    then: str = ""  # shell that waits for it to answer


def rewrite(command: str, place: Place) -> Step:
    """One command of the docs, as run here. An unknown one stops the walk: teach it here."""
    subs = {"db.internal": "127.0.0.1", "10.0.0.5": "127.0.0.1", "mlflow.internal": "localhost",
            ":5000": f":{place.mlflow}", "--port 5000": f"--port {place.mlflow}", "10.0.0.1:6379": f"{place.node_ip}:{place.gcs}",
            "10.0.0.1": place.node_ip, "127.0.0.1:8265": f"127.0.0.1:{place.dashboard}"}  # fmt: skip
    for old, new in subs.items():
        command = command.replace(old, new)
    first = command.split()[0]
    if command.startswith("export AWS_ACCESS_KEY_ID=..."):
        return Step(
            "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
        )
    plain = ("python -m orchestration.datasets upload", "ray get-auth-token")
    if first in ("aws", "createdb", "export", ".") or command.startswith(plain):
        return Step(command.replace(" /data ", f" {place.folder / 'data'} "))
    if "mlflow server" in command:
        return Step(command, "mlflow-server", f"wait_port {place.mlflow}")
    if command.startswith("ray start --head"):
        own = (f" --block --temp-dir {place.folder / 'h'} --port {place.gcs} --dashboard-port {place.dashboard}"
               f" --dashboard-agent-listen-port {place.agents[0]} --ray-client-server-port {place.client}")  # fmt: skip
        return Step(command + own, "ray-head", f"wait_port {place.dashboard}")
    if command.startswith("ray start --address"):
        own = f" --block --temp-dir {place.folder / 'w'} --dashboard-agent-listen-port {place.agents[1]}"
        return Step(command + own, "ray-worker", f"wait_nodes 2 {place.gcs}")
    if command.startswith("python -m orchestration.submit"):
        job = command.replace(" --gpu", "")  # no GPU here
        return Step(
            f"{job} {' '.join(WORKLOAD)}".replace(
                " --wait ", f" --wait --fetch-into {place.folder / 'fetched'} "
            )
        )
    raise SystemExit(f"docs/cluster.md has a command the walk does not know: {command!r}; teach {__file__}")


PREAMBLE = """set -euo pipefail
cd {root}
wait_port() {{ for _ in $(seq 360); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.5; done
  echo "nothing listens on port $1" >&2; return 1; }}
wait_nodes() {{ for _ in $(seq 180); do [ "$(ray list nodes --address 127.0.0.1:$2 --filter state=ALIVE 2>/dev/null | grep -c ALIVE)" -ge "$1" ] && return 0; sleep 1; done
  echo "fewer than $1 Ray nodes alive" >&2; return 1; }}
export HOME={folder} AWS_ENDPOINT_URL={endpoint} PGPORT={pgport}
"""


def script(steps: list[Step], place: Place, endpoint: str, pgport: int) -> str:
    """The walk as one bash script: servers in their own sessions (their PIDs in ``pids``)."""
    lines = [PREAMBLE.format(root=ROOT, folder=place.folder, endpoint=endpoint, pgport=pgport)]
    for number, step in enumerate(steps):
        lines.append(f"echo {shlex.quote('$ ' + step.command)}")
        if step.background is None:
            lines.append(step.command)
            continue
        server = place.folder / f"{number}-{step.background}.sh"
        server.write_text(step.command + "\n")
        lines.append(
            f"setsid bash {server} > {place.folder}/{step.background}.log 2>&1 & echo $! >> {place.folder}/pids"
        )
        lines.append(step.then)
    return "\n".join(lines) + "\n"


def stop_servers(folder: Path) -> None:
    """SIGTERM to each server's session (``ray start --block`` then stops its own node), then SIGKILL."""
    pids = folder / "pids"
    for pid in map(int, pids.read_text().split()) if pids.exists() else []:
        for sig, wait in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            if _gone_within(pid, wait):
                break


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether the process group ``pid`` has ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def check_records(place: Place, tracking: str, store_keys) -> list[str]:
    """What the docs promise once the job is done: tables fetched here, runs on the server carrying
    the commit they were submitted from, checkpoints and artifacts in their buckets. Failures, by name."""
    from mlflow.tracking import MlflowClient

    from orchestration.runtime.tracking import git_commit

    problems = []
    fetched = sorted(p.name for p in (place.folder / "fetched").glob("*.md"))
    if "table2.md" not in fetched:
        problems.append(f"table2.md not fetched (fetched: {fetched})")
    commit = git_commit().removesuffix("-dirty")  # what the submitter records
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("MGN paper")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    trials = [r for r in runs if "mgn.fingerprint" in r.data.tags]
    if not trials or any(r.info.status != "FINISHED" for r in trials):
        problems.append(f"trial runs: {[(r.data.tags.get('mgn.row'), r.info.status) for r in trials]}")
    if any(not r.data.tags.get("mgn.git_commit", "").startswith(commit) for r in runs):
        problems.append(
            f"runs not at commit {commit}: {sorted({r.data.tags.get('mgn.git_commit') for r in runs})}"
        )
    if not any(k.endswith("/done.json") for k in store_keys("reid-grids")):
        problems.append("no done marker in s3://reid-grids")
    if not any(k.endswith("cmc.csv") for k in store_keys("reid-mlflow")):
        problems.append("no artifacts in s3://reid-mlflow")
    return problems


def interface_address() -> str:
    """The address other nodes would reach this one at (the head's --node-ip-address); loopback
    on a machine without a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # chooses the interface a route would use; sends nothing
        except OSError:
            return "127.0.0.1"
        return probe.getsockname()[0]


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="mgn-walk-"))  # short: Ray's socket paths
    code = 1
    try:
        code = walk(folder)
        return code
    finally:
        if code == 0:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"the servers' logs and the walk's script are kept in {folder}")


def walk(folder: Path) -> int:
    """Start what the docs assume, run their block, check the records; the exit code."""
    os.environ["MGN_CACHE"] = str(folder / "cache")
    from tests.orchestration.test_datasets import data_root

    data_root(folder / "data")
    ip = interface_address()
    place = Place(folder, ip, free_port(), free_port(), free_port(), (free_port(), free_port()), free_port())
    with object_store(folder) as store, postgres(superuser="mlflow", database=None) as database:
        pgport = int(database.rsplit(":", 1)[1].split("/")[0])
        steps = [rewrite(command, place) for command in cluster_block(DOCS.read_text())]
        (folder / "walk.sh").write_text(script(steps, place, store.endpoint, pgport))
        try:
            run = subprocess.run(
                ["bash", str(folder / "walk.sh")], env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
            print(f"walk: {len(steps)} commands of docs/cluster.md, exit {run.returncode}")
            if run.returncode != 0:
                return 1
            problems = check_records(place, f"http://127.0.0.1:{place.mlflow}", store.keys)
            print("\n".join(f"PROBLEM: {p}" for p in problems) or "every record is where the docs say")
            return 1 if problems else 0
        finally:
            stop_servers(folder)  # the walk's servers, before the store and the database they write to


if __name__ == "__main__":
    sys.exit(main())
