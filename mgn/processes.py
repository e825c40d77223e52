"""Whether a process of this machine still runs: how a left-over file (a staging folder, a driver's
lock) is known to be its dead writer's, and safe to take over."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """``pid`` runs on this machine (another user's process counts: it cannot be signalled, yet runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
