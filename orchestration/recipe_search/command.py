"""The command line of ``experiments/recipe_search.py``: bad input fails before Ray is imported."""

from __future__ import annotations

import argparse
from pathlib import Path

from mgn.recipe_search import SEARCHES
from orchestration.recipe_search.plan import EXPERIMENT, SCRIPT, resumed_study, search_folder, study
from orchestration.recipe_search.study import SearchStudy
from orchestration.study.command import Prepared, open_storage, run_command
from orchestration.study.options import add_run_options, run_options
from orchestration.study.preflight import preflight


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
    p.add_argument("--data-root", help="folder holding Market-1501 (layouts in docs/datasets.md)")
    add_run_options(p, EXPERIMENT, "the report and the recipe file are written", "recipe search")
    return p


def _changes_study(args: argparse.Namespace) -> bool:
    return bool(args.overrides) or any(
        getattr(args, f) is not None for f in ("profile", "config", "data_root")
    )


def prepare(args: argparse.Namespace, command: str) -> Prepared:
    """The study checked before compute (or resumed from its folder): the one pre-flight on what its
    trials read, the validation split of the training identities (the test set is read after the choice)."""
    options = run_options(args)  # a search runs its trials as a grid does, without logging models
    search = study(args)
    folder, state = search_folder(open_storage(args), search, args.resume)
    if state is not None:
        search = resumed_study(search, state, _changes_study(args), folder)
    preflight({"validation": search.validating(search.base)}, "the recipe search")
    print(f"recipe search around {search.base.profile.value}: {search.trials} trials")
    return Prepared(SearchStudy(search), folder, state, options)


def main(argv: list[str] | None = None) -> int:
    return run_command(parser(), SCRIPT, argv, prepare)
