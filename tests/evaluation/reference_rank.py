"""A literal per-query evaluation (the Market-1501 MATLAB protocol written plainly), for tests and
the benchmark: sort each row stably, drop junk, read off CMC, step and trapezoid AP, and INP."""

import numpy as np


def per_query_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    cmc_hits = np.zeros(max_rank)
    step, trapezoid, inp = [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        pids, camids = g_pids[order], g_camids[order]
        keep = (pids != -1) & ~((pids == q_pids[i]) & (camids == q_camids[i]))
        matches = pids[keep] == q_pids[i]
        hits = np.flatnonzero(matches) + 1  # 1-based ranks of the correct matches
        if len(hits) == 0:
            continue
        if hits[0] <= max_rank:
            cmc_hits[hits[0] - 1 :] += 1
        j = np.arange(1, len(hits) + 1)
        step.append(np.mean(j / hits))
        before = np.where(hits > 1, (j - 1) / np.maximum(hits - 1, 1), 1.0)
        trapezoid.append(np.mean((before + j / hits) / 2))
        inp.append(len(hits) / hits[-1])
    n = len(step)
    return cmc_hits / n, float(np.mean(step)), float(np.mean(trapezoid)), float(np.mean(inp)), n
