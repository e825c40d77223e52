"""The command line of ``experiments/recipe_search.py``: bad input fails before Ray is imported."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mgn.config import ConfigError
from mgn.data.records import DatasetError
from mgn.recipe_search import SEARCHES
from orchestration.recipe_search.plan import (
    EXPERIMENT,
    SCRIPT,
    check_validation_data,
    new_state,
    resumed_study,
    search_folder,
    study,
)
from orchestration.runtime.storage import Storage, StorageError
from orchestration.runtime.tracking import (
    Tracker,
    TrackingUnavailable,
    check_reachable,
    redact,
    resolve_tracking_uri,
)
from orchestration.study.lock import GridLocked, acquire, release
from orchestration.tables.command import add_run_options, check_results_dir, run_options
from orchestration.tables.planning import UsageError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Search for the training recipe with the best validation mAP (Ray Tune: Optuna's TPE and ASHA), "
        "on training identities held out from training, then train the winner and the base recipe with several "
        "seeds and evaluate both, once, on the test set. Without --data-root: around smoke() on the embedded "
        "synthetic data set (about 12 minutes on 2 cores).",
    )
    p.add_argument("--profile", choices=[p.value for p in SEARCHES],
                   help="the named study (default: smoke without --data-root, else paper)")  # fmt: skip
    p.add_argument("--config", type=Path, help="a YAML file of SearchConfig fields, over the named study")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field of the study, e.g. --set trials=20, --set space.epochs=[8,12], "
                        "--set base.train.epochs=10 (repeatable)")  # fmt: skip
    p.add_argument("--data-root", help="folder holding Market-1501 (see README for layouts)")
    add_run_options(p, EXPERIMENT, "the report and the recipe file are written")
    p.add_argument("--resume", nargs="?", const="latest", metavar="SEARCH",
                   help="continue an interrupted search (the latest, or the named folder) without rerunning finished trials")  # fmt: skip
    return p


def _changes_study(args: argparse.Namespace) -> bool:
    return bool(args.overrides) or any(
        getattr(args, f) is not None for f in ("profile", "config", "data_root")
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = " ".join(
        ["python", SCRIPT, *(shlex.quote(redact(a)) for a in (argv if argv is not None else sys.argv[1:]))]
    )
    try:
        if args.max_failures < 0:
            raise UsageError(f"--max-failures {args.max_failures}: must be >= 0")
        search = study(args)
        storage = Storage.parse(args.storage_path)
        storage.check()
        folder, state = search_folder(storage, search, args.resume)
        if state is not None:
            search = resumed_study(search, state, _changes_study(args), folder)
        data = check_validation_data(search)
        print(f"recipe search around {search.base.profile.value}: {data.summary()}")
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        check_results_dir(args.results_dir)
        lock = acquire(folder)
    except (ConfigError, DatasetError, GridLocked, StorageError, TrackingUnavailable, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from orchestration.recipe_search.run import (
        run_search,  # Ray is imported only once the input is known to be good
    )

    options = run_options(args)  # a search runs its trials as a grid does, without logging models
    try:
        if state is None:
            state = new_state(Tracker(uri), search, args.experiment_name, command, uri)
            state.write(folder)
        return run_search(search, options, uri, folder, state)
    finally:
        release(folder, lock)
