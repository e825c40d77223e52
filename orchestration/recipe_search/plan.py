"""Planning a recipe search, without Ray: the study from the command line, its folder (new, or resumed
with the study it recorded), its MLflow parent run. ``orchestration.recipe_search.run`` runs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import replace
from pathlib import Path

from mgn.config import DatasetName, Profile
from mgn.config_io import apply_overrides, flatten, from_dict, merged, read_mapping, to_dict
from mgn.errors import UsageError
from mgn.evaluation import keys
from mgn.recipe_search import SEARCHES, SearchConfig
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker, git_commit, redact, source_tags
from orchestration.study.state import StudyState, study_folder

TABLE = "recipe_search"  # the mgn.table tag of its runs and the name of its results files
SCRIPT = "experiments/recipe_search.py"
EXPERIMENT = "MGN recipe search"
SEARCH_STAGE, FINAL_STAGE = "search", "final"  # Tune folders, and the mgn.stage tag of the runs
BASE_ROW, SEARCHED_ROW = "base recipe", "searched recipe"
SEARCH_ROW_PREFIX = "search "  # a search trial's row: "search <Tune trial id>"
METRIC = keys.validation(keys.MAP)  # what the searcher maximises, ASHA judges and the choice takes


def search_row(trial_id: str) -> str:
    return f"{SEARCH_ROW_PREFIX}{trial_id}"


def final_seeds(search: SearchConfig) -> list[int]:
    return [search.base.train.seed + i for i in range(search.final_seeds)]


def study(args: argparse.Namespace) -> SearchConfig:
    """The named study (or --config file), with --data-root and --set applied, validated."""
    profile = Profile(
        args.profile or (Profile.SMOKE.value if args.data_root is None else Profile.PAPER.value)
    )
    if profile not in SEARCHES:
        raise UsageError(
            f"--profile {profile.value}: no named search; choose {', '.join(p.value for p in SEARCHES)}"
        )
    search = SEARCHES[profile]()
    if args.config:  # a partial file is a variant of the named study
        path = Path(args.config)
        search = from_dict(SearchConfig, merged(to_dict(search), read_mapping(path)))
    if args.data_root is not None:
        data = search.base.data
        if data.dataset is DatasetName.SYNTHETIC:
            data = replace(data, dataset=DatasetName.MARKET1501)
        data = replace(data, root=str(Path(args.data_root).absolute()))
        search = replace(search, base=replace(search.base, data=data))
    return apply_overrides(search, args.overrides)


def search_folder(storage: Storage, search: SearchConfig, resume: str | None) -> tuple[Storage, StudyState | None]:
    prefix = f"{TABLE}-{search.base.profile.value}-{search.base.data.dataset.value}"
    return study_folder(storage, prefix, resume, "recipe search")


def resumed_study(search: SearchConfig, state: StudyState, changed: bool, folder: Storage) -> SearchConfig:
    """The study recorded in ``folder``; a command that asks for another one is refused."""
    if state.study != TABLE:
        raise UsageError(f"--resume {folder.name}: that folder is {state.study}'s, not a recipe search's")
    stored = from_dict(SearchConfig, state.plan["search"])
    if changed and stored != search:
        theirs, mine = flatten(stored), flatten(search)
        differences = [f"{k}: the search has {theirs.get(k)}, this command {mine.get(k)}"
                       for k in sorted(set(theirs) | set(mine)) if theirs.get(k) != mine.get(k)]  # fmt: skip
        raise UsageError(
            f"--resume {folder.name}: this command's study differs from the search's:\n  " + "\n  ".join(differences)
            + f"\nResume without --set/--config/--profile/--data-root (it was: {state.command}), or leave out --resume."
        )  # fmt: skip
    return stored


def start_parent(tracker: Tracker, search: SearchConfig, experiment_id: str, command: str, uri: str) -> str:
    base = search.base
    name = f"{base.profile.value} {base.data.dataset.value} {search.trials} trials {dt.datetime.now():%m-%d %H:%M}"
    tags = {
        "kind": "search",
        "table": TABLE,
        "profile": base.profile.value,
        "dataset": base.data.dataset.value,
        "git_commit": git_commit(),
        "command": command,
        "tracking_uri": redact(uri),
    }
    description = (
        f"Recipe search around the {base.profile.value} recipe: {search.trials} trials on {search.validation_ids} "
        f"held-out training identities, then the winner and the base recipe on the test set.\n\n`{command}`"
    )
    run_id = tracker.start_parent(experiment_id, name, tags, source_tags(command, description))
    tracker.log_params(run_id, flatten(search))
    return run_id
