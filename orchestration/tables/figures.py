"""Pictures of a trial (MLflow artifacts) and of a table (``results/figures/``), from the store.

Each trial logs ``rank_list.png`` (four queries and their top-10), ``attention.png`` (its
branches' activation maps on those queries) and ``attention_maps.npz`` (the raw maps, so that
tables can put networks side by side). Each table gets ``<table>_cmc.png`` (one curve per row),
``<table>_rank_list.png`` and ``<table>_attention.png`` (MGN's branches, beside the plain ResNet
for Table 5), and Table 5 ``table5_bars.png`` (R1 and mAP per row, error bars over seeds).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mgn.data.loading import eval_loader
from mgn.data.records import ReidDataset
from mgn.evaluation import pairwise_distance
from mgn.evaluation.protocol import Evaluation
from mgn.model import MGN
from mgn.visualize import (
    attention_figure,
    attention_maps,
    bar_figure,
    cmc_figure,
    denormalize,
    rank_list_figure,
    save,
)
from orchestration.runtime.tracking import ChildRun, Tracker
from orchestration.runtime.trial_files import (
    ATTENTION_ARTIFACT,
    ATTENTION_MAPS_ARTIFACT,
    CMC_ARTIFACT,
    RANK_LIST_ARTIFACT,
)

if TYPE_CHECKING:
    from orchestration.tables.render import TableData
    from orchestration.tables.statistics import CellStatistics

SHOWN_QUERIES = 4


def _shown_queries(dataset: ReidDataset) -> list[int]:
    """The first queries of distinct identities that have a match in another camera."""
    chosen, seen = [], set()
    for index, query in enumerate(dataset.query):
        has_match = any(g.pid == query.pid and g.camid != query.camid for g in dataset.gallery)
        if has_match and query.pid not in seen:
            chosen.append(index)
            seen.add(query.pid)
        if len(chosen) == SHOWN_QUERIES:
            break
    return chosen


def trial_pictures(
    model: MGN, dataset: ReidDataset, evaluation: Evaluation, config, out: Path, title: str
) -> list[Path]:
    """Rank list and attention maps of a trained network; returns the files written in ``out``."""
    chosen = _shown_queries(dataset)
    queries = [dataset.query[i] for i in chosen]
    distances = pairwise_distance(evaluation.query.features[chosen], evaluation.gallery.features)
    files = [
        save(rank_list_figure(queries, dataset.gallery, distances, title=title), out / RANK_LIST_ARTIFACT)
    ]
    images = torch.cat([batch for batch, _, _ in eval_loader(queries, config.data)])
    maps = attention_maps(model.cpu(), images)
    pixels = denormalize(images)
    files.append(save(attention_figure(pixels, maps, title=title), out / ATTENTION_ARTIFACT))
    arrays: dict[str, Any] = {"images": pixels, "names": np.array(list(maps))}
    arrays |= {f"map_{i}": m for i, m in enumerate(maps.values())}
    np.savez(out / ATTENTION_MAPS_ARTIFACT, **arrays)
    files.append(out / ATTENTION_MAPS_ARTIFACT)
    return files


def table_figures(data: TableData, tracker: Tracker, results_dir: Path, stem: str, title: str) -> list[Path]:
    """Figures of a table, from its child runs' artifacts and the table's rows, written as
    ``figures/<stem>_*.png``; ``title`` (``PaperTable.heading``) heads them."""
    spec, figures = data.spec, results_dir / "figures"
    written = []
    finished = [run for run in data.runs if run.finished]
    with tempfile.TemporaryDirectory() as tmp:
        curves: dict[str, list[np.ndarray]] = {}
        for run in finished:
            path = tracker.download(run.run_id, CMC_ARTIFACT, tmp)
            if path is not None:
                curves.setdefault(run.row, []).append(np.loadtxt(path, delimiter=",", skiprows=1)[:, 1])
                path.unlink()
        if curves:
            # In the table's row order, so the legend reads like the table.
            order = {row.name: i for i, row in enumerate(data.rows)}
            mean_curves = {
                row: np.mean(curves[row], axis=0)
                for row in sorted(curves, key=lambda r: order.get(r, len(order)))
            }
            written.append(
                save(
                    cmc_figure(mean_curves, f"{title} (CMC, mean over seeds)"),
                    figures / f"{stem}_cmc.png",
                )
            )
        showcase = _first_seed(finished, spec.figures.showcase)
        if showcase is not None:
            path = tracker.download(showcase.run_id, RANK_LIST_ARTIFACT, tmp)
            if path is not None:
                written.append(Path(shutil.copy(path, figures / f"{stem}_rank_list.png")))
            maps = _attention(tracker, finished, showcase, spec.figures.baseline, tmp)
            if maps is not None:
                written.append(
                    save(
                        attention_figure(*maps, title=f"{title}: activation maps"),
                        figures / f"{stem}_attention.png",
                    )
                )
    if spec.figures.bars:
        written.append(save(_bars(data, title), figures / f"{stem}_bars.png"))
    return written


def _bars(data: TableData, title: str):
    """Our rows that have the last bar column, each bar column's mean with its 95% interval (or its
    std over seeds where a row has no per-query values)."""
    bars = data.spec.figures.bars
    rows = [row for row in data.ours if row.cells[bars[-1]].values]
    values = {m: [row.cells[m].mean for row in rows] for m in bars}
    errors: dict[str, list[float] | list[list[float]]]
    if all(any(row.cells[m].stats is not None for row in data.ours) for m in bars):  # 95% bootstrap intervals
        bounds = {m: [_interval(row.cells[m].stats) for row in rows] for m in bars}
        errors = {
            m: [[mean - low for mean, (low, _) in zip(values[m], bounds[m], strict=True)],
                [high - mean for mean, (_, high) in zip(values[m], bounds[m], strict=True)]]
            for m in bars
        }  # fmt: skip
        spread = "95% bootstrap interval"
    else:
        errors = {m: [row.cells[m].std for row in rows] for m in bars}
        spread = "± std over seeds"
    return bar_figure([row.name for row in rows], values, errors, f"{title} (mean, {spread})")


def _interval(stats: CellStatistics | None) -> tuple[float, float]:
    """A cell's 95% interval (NaN, drawn as no bar, for a row without per-query values)."""
    return (stats.interval.low, stats.interval.high) if stats else (np.nan, np.nan)


def _first_seed(runs: list[ChildRun], row: str) -> ChildRun | None:
    """The run of ``row`` with the lowest seed (any run when ``row`` has none)."""
    chosen = [run for run in runs if run.row == row] or runs
    return min(chosen, key=lambda run: run.seed, default=None)


def _attention(
    tracker: Tracker, runs: list[ChildRun], showcase: ChildRun, baseline: str | None, tmp: str
) -> tuple[np.ndarray, dict] | None:
    """The showcase run's branch maps, with the baseline network's beside them when the table has it."""
    path = tracker.download(showcase.run_id, ATTENTION_MAPS_ARTIFACT, tmp)
    if path is None:
        return None
    with np.load(path) as data:
        images = data["images"]
        maps = {str(n): data[f"map_{i}"] for i, n in enumerate(data["names"])}
    other = _first_seed([run for run in runs if run.row == baseline], baseline) if baseline else None
    if baseline and other is not None:
        found = tracker.download(other.run_id, ATTENTION_MAPS_ARTIFACT, f"{tmp}/baseline")
        if found is not None:
            with np.load(found) as data:
                maps = {baseline: data["map_0"], **maps}
    return images, maps
