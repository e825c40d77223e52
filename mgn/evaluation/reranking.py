"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), without the dense (Q+G)^2 work.

The published algorithm (``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``) takes
plain Euclidean distances and squares them itself; some toolkits feed it squared distances and so
re-rank on the fourth power. We follow the paper and the published code: squared Euclidean
distances, each row divided by its maximum. The result equals the published algorithm fed plain
Euclidean distances (within float32 rounding; ``tests/evaluation/test_reranking.py`` holds a
literal port and checks it).

Where the published code materialises several dense (Q+G)^2 matrices (distances, their full
argsort, V, its query expansion) this module streams the distance matrix once in row blocks,
keeping each row's nearest ``cache_size`` neighbours, its maximum and the query x gallery block;
the k-reciprocal sets and their expansion are built vectorised, V is sparse (scipy CSR), the query
expansion is a sparse product and the Jaccard term accumulates only over shared neighbours.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from mgn.evaluation.distance import as_features, query_blocks
from mgn.evaluation.neighbours import GalleryPass, Neighbours, gallery_pass, neighbours

# Queries per step of the Jaccard stage, so that its pair arrays (positions, overlaps, cells: one per
# query entry x gallery entry sharing a column) and its (rows, G) accumulator stay in the caches. On
# the benchmark's multiple-query problem (110 M pairs, hub columns) 32 rows take 1.2 s where 512 took
# 3.0 s; single query (3.3 M pairs) 0.17 s against 0.3 s. The sums are the same, in the same order.
JACCARD_ROWS = 32
# Pairs per step when distances outside the neighbour tables are computed: (pairs, D) temporaries of
# a few MB are reused by the allocator, where one (misses, D) array of 100 MB is fresh memory whose
# first touch (page faults) cost 0.5 s on the benchmark's 12,726 misses.
MISS_PAIRS = 1024


def _reciprocal(neighbours: Tensor) -> Tensor:
    """(N, k+1) nearest-first neighbours -> (N, k+1) mask: j is a neighbour of i and i of j."""
    n = neighbours.shape[0]
    back = neighbours[neighbours]  # (N, k+1, k+1): the neighbours of each neighbour
    return (back == torch.arange(n, device=neighbours.device)[:, None, None]).any(dim=2)


def _expanded_sets(top_idx: Tensor, k1: int, block: int) -> tuple[Tensor, Tensor]:
    """The k-reciprocal sets R(i, k1), expanded by R(c, k1/2) of members c that overlap them by
    more than 2/3 (the published rule). Returns (N, W) member indices, -1 padded, and a mask."""
    n = top_idx.shape[0]
    half = int(round(k1 / 2))  # numpy's around() rounds halves to even, as Python's round()
    r1 = top_idx[:, : k1 + 1]
    in_r1 = _reciprocal(r1)  # (N, k1+1)
    rh = top_idx[:, : half + 1]
    half_sets = torch.where(_reciprocal(rh), rh, -1)  # (N, half+1): R(c, k1/2), -1 padded
    half_sizes = (half_sets >= 0).sum(dim=1)
    members, masks = [], []
    for rows in query_blocks(n, block):
        own = torch.where(in_r1[rows], r1[rows], -2)  # (B, k1+1); -2 never matches a -1 pad
        candidate_sets = half_sets[r1[rows]]  # (B, k1+1, half+1): R(c, k1/2) for every c in R(i, k1)
        overlap = (
            (candidate_sets[..., None] == own[:, None, None, :]).any(dim=3) & (candidate_sets >= 0)
        ).sum(dim=2)
        accept = in_r1[rows] & (overlap > 2.0 / 3.0 * half_sizes[r1[rows]])  # (B, k1+1)
        expansion = torch.where(accept[..., None], candidate_sets, -1).flatten(1)
        merged = torch.cat([torch.where(in_r1[rows], r1[rows], -1), expansion], dim=1)
        merged, _ = torch.sort(merged, dim=1)
        unique = merged >= 0
        unique[:, 1:] &= merged[:, 1:] != merged[:, :-1]
        members.append(merged)
        masks.append(unique)
    return torch.cat(members), torch.cat(masks)


def _stacked(query: Tensor, gallery: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of the query and gallery features stacked (query first), without stacking."""
    out = torch.empty((len(index), query.shape[1]), dtype=query.dtype, device=query.device)
    in_query = index < len(query)
    out[in_query] = query[index[in_query]]
    out[~in_query] = gallery[index[~in_query] - len(query)]
    return out


def _exact(query: Tensor, gallery: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Squared distances of pairs of stacked images, MISS_PAIRS at a time (small temporaries)."""
    out = torch.empty(len(rows), dtype=query.dtype, device=rows.device)
    for part in query_blocks(len(rows), MISS_PAIRS):
        difference = _stacked(query, gallery, rows[part]).sub_(_stacked(query, gallery, cols[part]))
        out[part] = difference.pow_(2).sum(dim=1)
    return out


def _lookup(query: Tensor, gallery: Tensor, known: Neighbours, rows: Tensor, cols: Tensor) -> Tensor:
    """Normalised distances of pairs (rows[p], cols[p]) of stacked images: from the neighbour
    tables, else computed."""
    n = known.known_index.shape[0]
    valid = known.known_index >= 0
    row_of = torch.arange(n, device=rows.device)[:, None].expand_as(valid)
    cache_keys, order = torch.sort((row_of * n + known.known_index)[valid])
    cache_vals = known.known_d2[valid][order]
    keys = rows * n + cols
    position = torch.searchsorted(cache_keys, keys).clamp(max=cache_keys.numel() - 1)
    hit = cache_keys[position] == keys
    values = torch.where(
        hit, cache_vals[position], torch.zeros((), dtype=cache_vals.dtype, device=rows.device)
    )
    miss = (~hit).nonzero().squeeze(1)
    if miss.numel():  # outside the tables: computed exactly
        values[miss] = _exact(query, gallery, rows[miss], cols[miss])
    return values / known.row_max.clamp(min=torch.finfo(torch.float32).tiny)[rows]


def _check(query: Tensor, gallery: Tensor, k1: int, k2: int) -> None:
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features are {query.shape[1]}-d, gallery features {gallery.shape[1]}-d")
    if k1 < 1 or k2 < 1:
        raise ValueError("k1 and k2 must be >= 1")
    if query.device != gallery.device:
        raise ValueError(f"query features are on {query.device}, gallery features on {gallery.device}")


def share_gallery(
    gallery_features: np.ndarray | Tensor, k1: int = 20, k2: int = 6, *, cache_size: int | None = None,
    block: int = 2048, images: int | None = None,
) -> GalleryPass:  # fmt: skip
    """The gallery x gallery half of re-ranking's distance work, to pass to several ``re_rank`` calls
    with the same gallery (single and multiple query). ``images``: Q + G when known, the most
    neighbours any image has; the published algorithm's lists past it are the whole ranking, so the
    buffers stop there (a k1 of 100000 asked ~10 GB for a 20-image set)."""
    gallery = as_features(gallery_features, keep_device=True)
    near = max(k1 + 1, k2)
    cache = max(cache_size or 2 * near, near)
    if images is not None:
        near, cache = min(near, images), min(cache, images)
    return gallery_pass(gallery, near, cache, block)


def re_rank(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    cache_size: int | None = None,
    block: int = 2048,
    shared: GalleryPass | None = None,
) -> np.ndarray:
    """Re-ranked (Q, G) distance: (1 - lambda) * Jaccard(k-reciprocal) + lambda * original.

    Args:
        query_features: (Q, D); gallery_features: (G, D), on the CPU or one GPU.
        k1, k2, lambda_value: as in the paper (20, 6, 0.3).
        cache_size: exact distances kept per row from the distance pass (default 2 * (k1 + 1));
            expansion members outside them are computed exactly, so it changes speed, not results.
        block: rows per strip of the distance pass (memory: one block x (Q+G) buffer, beside a
            (Q+G) x (D+2) arrangement of the features for its products).
        shared: ``share_gallery(gallery_features, k1, k2)``, when it was already computed.

    Returns:
        (Q, G) float32 distances, smaller = closer.
    """
    return re_rank_with_distances(
        query_features, gallery_features, k1, k2, lambda_value, cache_size=cache_size, block=block, shared=shared
    )[0]  # fmt: skip


def re_rank_with_distances(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    cache_size: int | None = None,
    block: int = 2048,
    shared: GalleryPass | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``re_rank``, and the (Q, G) squared Euclidean distances it computed on the way (the plain
    ranking's, so that evaluation does not compute them twice)."""
    query, gallery = (
        as_features(query_features, keep_device=True),
        as_features(gallery_features, keep_device=True),
    )
    _check(query, gallery, k1, k2)
    shared = shared or share_gallery(
        gallery, k1, k2, cache_size=cache_size, block=block, images=len(query) + len(gallery)
    )
    known, query_gallery = neighbours(query, shared, block)
    n, num_query = query.shape[0] + shared.gallery.shape[0], query.shape[0]
    original = query_gallery / known.row_max[:num_query, None].clamp(min=torch.finfo(torch.float32).tiny)

    # V: for each image, the Gaussian-weighted (exp(-d)) memberships of its expanded k-reciprocal set.
    members, mask = _expanded_sets(known.near_index, k1, block)
    rows = torch.arange(n, device=members.device)[:, None].expand_as(members)[mask]
    cols = members[mask]
    weights = torch.exp(-_lookup(query, shared.gallery, known, rows, cols))
    weights = (
        weights
        / torch.zeros(n, dtype=weights.dtype, device=weights.device).index_add_(0, rows, weights)[rows]
    ).cpu()
    rows, cols = rows.cpu(), cols.cpu()
    v = sp.csr_matrix((weights.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n))
    if k2 != 1:  # local query expansion: average V over the k2 nearest neighbours
        nearest = known.near_index[:, :k2].cpu().numpy()
        width = nearest.shape[1]  # min(k2, N): past every image the published mean is over all of them
        average = sp.csr_matrix(
            (np.full(nearest.size, 1.0 / width), (np.repeat(np.arange(n), width), nearest.ravel())), shape=(n, n)
        )
        v = (average @ v).tocsr()
    # Jaccard distance 1 - s / (2 - s), s(i, j) = sum_k min(V[i, k], V[j, k]) over shared k; most
    # pairs share nothing (s = 0), so the result starts as lambda * original + (1 - lambda) and only
    # pairs with a shared k are corrected, in place, in blocks of queries.
    final = original.mul_(lambda_value).add_(1 - lambda_value).cpu().numpy()
    v_query = v[:num_query]
    v_gallery = v[num_query:].tocsc()
    width = n - num_query
    for block_rows in query_blocks(num_query, JACCARD_ROWS):
        part = v_query[block_rows].tocoo()
        starts = v_gallery.indptr[part.col]
        lengths = v_gallery.indptr[part.col + 1] - starts
        # Every (query entry, gallery entry) pair sharing a column k, as positions in the gallery's
        # CSC arrays: each query entry's column run, laid end to end.
        position = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        position += np.arange(len(position))
        overlap = np.minimum(np.repeat(part.data, lengths), v_gallery.data[position])
        cells = np.repeat(part.row.astype(np.int64) * width, lengths) + v_gallery.indices[position]
        shared_sum = np.bincount(
            cells, weights=overlap, minlength=(block_rows.stop - block_rows.start) * width
        )
        touched = np.flatnonzero(shared_sum)
        s_touched = shared_sum[touched]
        final[block_rows].reshape(-1)[touched] -= ((1 - lambda_value) * s_touched / (2.0 - s_touched)).astype(
            np.float32
        )
    return final, query_gallery.cpu().numpy()
