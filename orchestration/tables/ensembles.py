"""Ensemble rows (Table 5's "G+P2+P3 (Single)"): concatenated features of independently trained
networks, evaluated after their trials finish and recorded on the parent run (``keys.ensemble``)."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from mgn.evaluation import FeatureSet, evaluate_features, keys
from orchestration.runtime.naming import slug
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import ENSEMBLE_KIND, LIST_ORDER_TAG, Tracker, list_order, source_tags
from orchestration.runtime.trial_files import TrialFiles
from orchestration.tables.planning import Plan
from orchestration.tables.spec import Ensemble

# Where a member's files are: (row, seed) -> its TrialFiles (a grid's folder, or a sweep's table).
MemberFiles = Callable[[str, int], TrialFiles]


def _ensembles(plan: Plan) -> list[Ensemble]:
    """The table's ensembles whose members this invocation trains."""
    return [e for e in plan.spec.ensembles if all(m in plan.rows for m in e.members)]


def _record_as_a_run(
    tracker: Tracker, plan: Plan, parent_run_id: str, row: Ensemble, seed: int, metrics: dict[str, float]
) -> None:
    """The ensemble as a child run of its own, so that the runs list shows it beside its members
    (found again, not duplicated, when a grid is published twice)."""
    last_member = max(plan.rows.index(m) for m in row.members)
    run_id = tracker.child(
        tracker.parent(parent_run_id).experiment_id,
        parent_run_id,
        f"ensemble-{slug(row.name)}-seed{seed}",
        f"{row.name} seed{seed} (ensemble: {' + '.join(row.members)})",
        {
            "kind": ENSEMBLE_KIND,
            "row": row.name,
            "seed": str(seed),
            "members": " + ".join(row.members),
            LIST_ORDER_TAG: list_order(plan.spec.key, last_member, "e"),
        },  # right after its last member  # fmt: skip
        system=source_tags(
            plan.spec.script,
            f"{row.name}, seed {seed}: the concatenated test features of {' + '.join(row.members)}, evaluated "
            "once they trained (no training of its own)",
        ),
    )
    # At the members' last epoch: the point sits where their curves end, not alone at step 0; once,
    # however often the grid is published.
    step = plan.configs[(row.members[0], seed)].train.epochs
    if tracker.last_step(run_id, keys.MAP) < step:
        tracker.log_metrics(run_id, metrics, step=step)
    tracker.finish(run_id)


def showcase_rows(plan: Plan) -> tuple[str, ...]:
    """The table's showcase row (its figures' network) when the plan trains it: logged as an MLflow
    Model by default."""
    return tuple(row for row in plan.rows if row == plan.spec.figures.showcase)


def feature_rows(plan: Plan) -> tuple[str, ...]:
    """Rows whose trials must keep their test features."""
    return tuple(sorted({m for row in _ensembles(plan) for m in row.members}))


def load_features(stored: Storage) -> tuple[FeatureSet, FeatureSet]:
    with tempfile.TemporaryDirectory() as folder:
        data = torch.load(stored.download(Path(folder) / stored.name), weights_only=True)

    def split(name: str) -> FeatureSet:
        return FeatureSet(
            data[f"{name}/features"], data[f"{name}/pids"].numpy(), data[f"{name}/camids"].numpy()
        )

    return split("query"), split("gallery")


def evaluate_ensembles(
    plan: Plan, files: MemberFiles, tracker: Tracker, parent_run_id: str, log: Callable[[str], None] = print
) -> None:
    """Each ensemble of the plan, per seed, from its members' kept features (``files(row, seed)``)."""
    for row in _ensembles(plan):
        for seed in plan.seeds:
            paths = [files(member, seed).features for member in row.members]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                log(f"{row.name} seed{seed}: skipped, member features missing ({', '.join(missing)})")
                continue
            parts = [load_features(p) for p in paths]
            evaluation = plan.configs[(row.members[0], seed)].eval
            query = FeatureSet.concat([q for q, _ in parts]).select(normalize=evaluation.normalize)
            gallery = FeatureSet.concat([g for _, g in parts]).select(normalize=evaluation.normalize)
            result = evaluate_features(query, gallery, evaluation.metric, evaluation.max_rank)
            metrics = keys.prefixed(result.summary(), functools.partial(keys.ensemble, slug(row.name), seed))
            tracker.log_metrics(parent_run_id, metrics, step=0)  # what the table reads
            _record_as_a_run(tracker, plan, parent_run_id, row, seed, result.summary())
            log(f"{row.name} seed{seed}: R1 {result.summary()[keys.R1]:.1f} mAP {100 * result.mAP:.1f} "
                f"({query.features.shape[1]}-d: {' + '.join(row.members)})")  # fmt: skip
