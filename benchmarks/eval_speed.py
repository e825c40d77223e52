"""Evaluation at Market-1501 scale: time and peak memory of each stage, against references run here.

A deterministic synthetic problem of Market-1501's test size: 3,368 queries, 15,913 gallery images
(13,120 of 750 test identities + 2,793 distractors), 6 cameras, 2,048-d features in which images of
one identity share a component. Stages, each with its reference measured in the same run:

1. ``evaluate_rank`` on a given distance matrix vs a straightforward per-query NumPy loop (stable
   sort of each row; the MATLAB protocol written plainly) and vs a bare ``np.argsort`` of the
   matrix. Targets: >= 100x the loop, <= 0.5x the argsort, identical results.
2. Features -> CMC/mAP/mINP end to end (``evaluate_features``) vs the bare query x gallery matrix
   product. Targets: <= 1.5x the product, peak memory < 1.5 GiB beyond the features.
3. Re-ranking of all 3,368 + 15,913 images vs a literal port of the published algorithm, both at
   full size. Targets: peak < 3 GiB, >= 3x faster, equal outputs.

Peak memory is measured in a fresh process per stage (``ru_maxrss`` of a spawned child), minus
that child's memory before the stage. Run: ``python benchmarks/eval_speed.py`` (add ``--skip-port``
to leave out the literal re-ranking port, which takes minutes and ~10 GiB).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgn.evaluation import FeatureSet, evaluate_features, evaluate_rank, re_rank  # noqa: E402
from tests.evaluation.published_reranking import published_re_ranking  # noqa: E402
from tests.evaluation.reference_rank import per_query_reference  # noqa: E402

NUM_QUERY, NUM_GALLERY, NUM_IDS, NUM_DISTRACTORS, DIM, CAMERAS = 3368, 15913, 750, 2793, 2048, 6
GIB = 1024**3


def problem(seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
    """Features with an identity component (strength chosen for a Market-like mAP of ~0.8)."""
    rng = np.random.default_rng(seed)
    identity = rng.standard_normal((NUM_IDS + 1, DIM), dtype=np.float32)
    q_pids = np.repeat(np.arange(1, NUM_IDS + 1), -(-NUM_QUERY // NUM_IDS))[:NUM_QUERY]
    g_pids = np.concatenate(
        [rng.integers(1, NUM_IDS + 1, NUM_GALLERY - NUM_DISTRACTORS), np.zeros(NUM_DISTRACTORS, np.int64)]
    )

    def features(pids: np.ndarray) -> torch.Tensor:
        noise = rng.standard_normal((len(pids), DIM), dtype=np.float32)
        return torch.from_numpy(np.where(pids[:, None] > 0, 0.45 * identity[pids], 0) + noise)

    query = FeatureSet(features(q_pids), q_pids, rng.integers(0, CAMERAS, NUM_QUERY))
    gallery = FeatureSet(features(g_pids), g_pids, rng.integers(0, CAMERAS, NUM_GALLERY))
    return query, gallery


def distances(query: FeatureSet, gallery: FeatureSet) -> np.ndarray:
    q, g = query.features, gallery.features
    return torch.addmm(g.pow(2).sum(1)[None], q, g.T, alpha=-2.0).add_(q.pow(2).sum(1)[:, None]).numpy()


def _status(field: str) -> float:
    """A memory field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    """Linux: make the peak resident size (VmHWM) start again from the current size."""
    Path("/proc/self/clear_refs").write_text("5")


def _euclidean(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    d2 = torch.addmm(b.pow(2).sum(1)[None], a, b.T, alpha=-2.0).add_(a.pow(2).sum(1)[:, None]).clamp_(min=0)
    return d2.sqrt_().numpy()


def _child(stage: str, queue: mp.Queue) -> None:
    query, gallery = problem()
    _reset_peak()
    baseline = _status("VmRSS")
    began = time.perf_counter()
    if stage == "matmul":
        out = query.features @ gallery.features.T
        value = float(out[0, 0])
    elif stage == "features":
        value = evaluate_features(query, gallery).mAP
    elif stage == "rerank":
        value = re_rank(query.features, gallery.features)
    elif stage == "port":
        # Fed the same Euclidean distances re_rank computes (the square root of its squared
        # distances; the port squares them back), so that both start from identical numbers.
        q, g = query.features, gallery.features
        value = published_re_ranking(_euclidean(q, g), _euclidean(q, q), _euclidean(g, g))
    else:
        raise ValueError(stage)
    seconds = time.perf_counter() - began
    if isinstance(value, np.ndarray):
        np.save(Path(f"/tmp/mgn-bench-{stage}.npy"), value)
        value = float(np.mean(value))
    queue.put((seconds, (_status("VmHWM") - baseline) / GIB, value))


def isolated(stage: str) -> tuple[float, float, float]:
    """(seconds, peak GiB beyond the inputs, a value) of ``stage`` in a fresh process."""
    context = mp.get_context("spawn")  # fork after torch started its threads can deadlock
    queue = context.Queue()
    process = context.Process(target=_child, args=(stage, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def best_of(n: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--skip-port", action="store_true", help="skip the literal re-ranking port (minutes, ~10 GiB)"
    )
    args = parser.parse_args()
    print(
        f"torch threads: {torch.get_num_threads()}; problem: {NUM_QUERY} queries x {NUM_GALLERY} gallery, {DIM}-d"
    )
    query, gallery = problem()
    dist = distances(query, gallery)
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)

    print("\n1. evaluate_rank on a given distance matrix")
    t_rank, ours = best_of(5, lambda: evaluate_rank(dist, *labels))
    t_sort, _ = best_of(1, lambda: np.argsort(dist, axis=1))
    t_loop, reference = best_of(1, lambda: per_query_reference(dist, *labels))
    same = (
        np.array_equal(ours.cmc, reference[0])
        and abs(ours.mAP - reference[1]) < 1e-12
        and abs(ours.mINP - reference[3]) < 1e-12
    )
    print(
        f"   evaluate_rank      {t_rank * 1000:8.1f} ms   mAP {ours.mAP:.6f} mINP {ours.mINP:.6f} R1 {ours.cmc[0]:.4f}"
    )
    print(
        f"   per-query loop     {t_loop * 1000:8.1f} ms   -> evaluate_rank is {t_loop / t_rank:6.1f}x faster (target >= 100x)"
    )
    print(
        f"   bare np.argsort    {t_sort * 1000:8.1f} ms   -> evaluate_rank takes {t_rank / t_sort:5.3f}x of it (target <= 0.5)"
    )
    print(f"   identical results: {same}")
    dist = None  # free 214 MB before the next stages

    print("\n2. features -> CMC/mAP/mINP (blocks of 512 queries), fresh process each")
    t_mm, mem_mm, _ = isolated("matmul")
    t_feat, mem_feat, mean_ap = isolated("features")
    print(f"   bare Q x G matmul  {t_mm:8.2f} s    peak +{mem_mm:.2f} GiB")
    print(
        f"   evaluate_features  {t_feat:8.2f} s    peak +{mem_feat:.2f} GiB (target < 1.5)   mAP {mean_ap:.6f} (same as 1: {abs(mean_ap - ours.mAP) < 1e-9})"
    )
    print(f"   ratio to the matmul: {t_feat / t_mm:.2f}x (target <= 1.5x)")

    print("\n3. re-ranking all 19,281 images (k1=20, k2=6, lambda=0.3), fresh process each")
    t_rr, mem_rr, _ = isolated("rerank")
    print(f"   re_rank            {t_rr:8.1f} s    peak +{mem_rr:.2f} GiB (target < 3)")
    if args.skip_port:
        return
    t_port, mem_port, _ = isolated("port")
    ours_rr, port_rr = np.load("/tmp/mgn-bench-rerank.npy"), np.load("/tmp/mgn-bench-port.npy")
    print(f"   published (port)   {t_port:8.1f} s    peak +{mem_port:.2f} GiB")
    difference = np.abs(ours_rr - port_rr)
    print(f"   re_rank is {t_port / t_rr:.1f}x faster (target >= 3x), uses {mem_rr / mem_port:.2f}x the memory; "
          f"max |difference| {difference.max():.2e}, entries differing by > 1e-5: {(difference > 1e-5).sum()} of {difference.size}")  # fmt: skip
    rr, rr_port = evaluate_rank(ours_rr, *labels), evaluate_rank(port_rr, *labels)
    print(f"   after re-ranking: mAP {rr.mAP:.6f} R1 {rr.cmc[0]:.6f} with re_rank, {rr_port.mAP:.6f} / {rr_port.cmc[0]:.6f} "
          f"with the port (before re-ranking: mAP {ours.mAP:.4f} R1 {ours.cmc[0]:.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
