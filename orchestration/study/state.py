"""A study's folder in storage and the state it records, so that ``--resume`` continues the same study
in the same MLflow runs. One state file for every kind of study (a table's grid, the recipe search).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from mgn.errors import UsageError
from orchestration.runtime.storage import Storage

STATE_FILE = "study.json"


@dataclass(frozen=True)
class StudyState:
    """What a study's folder records: which study (``study``: "table5", "recipe_search"), its MLflow
    parent run, the command that started it, and ``plan``: the study's own record of what it runs
    (a table's config, rows and seeds; a search's whole study), which ``--resume`` continues."""

    study: str
    parent_run_id: str
    experiment_id: str
    experiment_name: str
    command: str
    created: str
    plan: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Storage) -> None:
        (folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, folder: Storage) -> StudyState:
        text = (folder / STATE_FILE).read_text()
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as error:  # truncated by a full disk, or hand-edited
            raise UsageError(
                f"--resume {folder.name}: its {STATE_FILE} is not a study's state ({error}); the trials' results "
                f"are still in {folder}/trials. Start the study again without --resume (finished trials of a new "
                "folder train again), or restore the file."
            ) from None


def now() -> str:
    return dt.datetime.now().isoformat()


def study_folder(
    storage: Storage, prefix: str, resume: str | None, what: str
) -> tuple[Storage, StudyState | None]:
    """A new folder ``<prefix>-<time>-<random>`` (unique: two studies started in the same second get
    two), or with ``resume`` the latest (``"latest"``) or named one, with its recorded state."""
    if resume is None:
        return storage / f"{prefix}-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}", None
    if resume == "latest":
        found = [
            g for g in storage.children() if g.name.startswith(f"{prefix}-") and (g / STATE_FILE).exists()
        ]
        folder = found[-1] if found else None
    else:
        folder = storage / resume
    if folder is None or not (folder / STATE_FILE).exists():
        raise UsageError(f"--resume: no {what} ({prefix}-*) to resume in {storage}")
    return folder, StudyState.read(folder)
