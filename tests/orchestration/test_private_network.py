"""A local run that nothing outside the machine can reach: Ray 2.60 binds its GCS, raylets and workers
to every interface and has no option to bind them to loopback alone, so docs/running.md runs the main
job in a network namespace of its own (``unshare -rn``: no root needed) whose only interface is
loopback. The real script, as documented, end to end."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.orchestration.conftest import grid_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RECIPE = "unshare -rn sh -c 'ip link set lo up && exec {command}'"  # docs/running.md, word for word


def _namespaces_allowed() -> str | None:
    """Why the recipe cannot run on this machine; None when it can."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "unshare (util-linux) or ip (iproute2) is not installed"
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    return (
        f"this kernel refuses unprivileged user namespaces ({probe.stderr.strip()})"
        if probe.returncode
        else None
    )


def test_the_main_job_runs_in_a_network_namespace_with_loopback_alone(workspace, tmp_path):
    if reason := _namespaces_allowed():
        pytest.skip(reason)
    assert (
        RECIPE.format(command="python experiments/ablation_table5.py")
        in (ROOT / "docs/running.md").read_text()
    )
    links = tmp_path / "links"
    args = grid_args(workspace, rows=("ResNet-50+TP",))
    command = f"{shlex.quote(sys.executable)} experiments/ablation_table5.py {shlex.join(args)}"
    recipe = RECIPE.format(command=command).replace("&& exec", f"&& ip -o link show > {links} && exec")
    run = subprocess.run(["sh", "-c", recipe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The namespace's only interface is loopback, up: Ray's ports exist there and nowhere else.
    (link,) = links.read_text().splitlines()
    assert link.split(":")[1].strip() == "lo" and "UP" in link
    assert "finished ResNet-50+TP seed0" in run.stdout
    assert list(Path(workspace["results"]).glob("table5-subset-resnet-50-tp-*.md"))
