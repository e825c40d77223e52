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

from mgn.evaluation.distance import as_features, query_blocks, squared_norms


def _nearest(
    features: Tensor, num_query: int, cache_size: int, block: int
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Stream the (N, N) normalised squared distances once.

    Returns the ``cache_size`` nearest neighbours of every row (indices and distances, nearest
    first, (N, T)) and the query x gallery block of the normalised distances (Q, N-Q).
    """
    n = features.shape[0]
    sq = squared_norms(features)
    top_idx = torch.empty((n, cache_size), dtype=torch.int64)
    top_val = torch.empty((n, cache_size), dtype=torch.float32)
    query_gallery = np.empty((num_query, n - num_query), dtype=np.float32)
    for rows in query_blocks(n, block):
        d2 = (
            torch.addmm(sq[None, :], features[rows], features.T, alpha=-2.0)
            .add_(sq[rows, None])
            .clamp_(min=0)
        )
        # The float path of the published code fed Euclidean distances: it squares them itself.
        d2.sqrt_().square_()
        # Row-normalised, as the published code; a zero row (all features identical) stays zero.
        d2.div_(d2.amax(dim=1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny))
        top_val[rows], top_idx[rows] = torch.topk(d2, cache_size, dim=1, largest=False, sorted=True)
        if rows.start < num_query:
            stop = min(rows.stop, num_query)
            query_gallery[rows.start : stop] = d2[: stop - rows.start, num_query:].numpy()
    return top_idx, top_val, query_gallery


def _reciprocal(neighbours: Tensor) -> Tensor:
    """(N, k+1) nearest-first neighbours -> (N, k+1) mask: j is a neighbour of i and i of j."""
    n = neighbours.shape[0]
    back = neighbours[neighbours]  # (N, k+1, k+1): the neighbours of each neighbour
    return (back == torch.arange(n)[:, None, None]).any(dim=2)


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


def _lookup(features: Tensor, top_idx: Tensor, top_val: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Normalised distances of pairs (rows[p], cols[p]): from the neighbour cache, else computed."""
    n, width = top_idx.shape
    order = torch.argsort(top_idx, dim=1)
    cache_keys = (torch.arange(n)[:, None] * n + top_idx.gather(1, order)).flatten()  # sorted globally
    cache_vals = top_val.gather(1, order).flatten()
    keys = rows * n + cols
    position = torch.searchsorted(cache_keys, keys).clamp(max=cache_keys.numel() - 1)
    hit = cache_keys[position] == keys
    values = torch.where(hit, cache_vals[position], torch.zeros(()))
    miss = (~hit).nonzero().squeeze(1)
    if miss.numel():  # outside the cache: compute exactly, normalised by the row maximum
        diff = features[rows[miss]] - features[cols[miss]]
        row_max = _row_max(features, torch.unique(rows[miss]))
        values[miss] = diff.pow(2).sum(dim=1) / row_max[rows[miss]]
    return values


def _row_max(features: Tensor, rows: Tensor) -> Tensor:
    """Maximum squared distance of the given rows to every feature, as an (N,) lookup."""
    out = torch.zeros(features.shape[0])
    sq = squared_norms(features)
    for chunk in rows.split(1024):
        d2 = torch.addmm(sq[None, :], features[chunk], features.T, alpha=-2.0).add_(sq[chunk, None])
        out[chunk] = d2.amax(dim=1).clamp_(min=torch.finfo(torch.float32).tiny)
    return out


def re_rank(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    cache_size: int | None = None,
    block: int = 1024,
) -> np.ndarray:
    """Re-ranked (Q, G) distance: (1 - lambda) * Jaccard(k-reciprocal) + lambda * original.

    Args:
        query_features: (Q, D); gallery_features: (G, D).
        k1, k2, lambda_value: as in the paper (20, 6, 0.3).
        cache_size: neighbours kept per row from the single distance pass (default 5 * (k1 + 1));
            expansion members outside it are computed exactly, so it changes speed, not results.
        block: rows per block of the distance pass (memory: block x (Q+G) floats, twice).

    Returns:
        (Q, G) float32 distances, smaller = closer.
    """
    query, gallery = as_features(query_features), as_features(gallery_features)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features are {query.shape[1]}-d, gallery features {gallery.shape[1]}-d")
    if k1 < 1 or k2 < 1:
        raise ValueError("k1 and k2 must be >= 1")
    features = torch.cat([query, gallery])
    n, num_query = features.shape[0], query.shape[0]
    cache = min(n, max(cache_size or 5 * (k1 + 1), k1 + 1, k2))
    top_idx, top_val, original = _nearest(features, num_query, cache, block)

    # V: for each image, the Gaussian-weighted (exp(-d)) memberships of its expanded k-reciprocal set.
    members, mask = _expanded_sets(top_idx, k1, block)
    rows = torch.arange(n)[:, None].expand_as(members)[mask]
    cols = members[mask]
    weights = torch.exp(-_lookup(features, top_idx, top_val, rows, cols))
    weights = weights / torch.zeros(n).index_add_(0, rows, weights)[rows]
    v = sp.csr_matrix((weights.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n))
    if k2 != 1:  # local query expansion: average V over the k2 nearest neighbours
        nearest = top_idx[:, :k2].numpy()
        average = sp.csr_matrix(
            (np.full(nearest.size, 1.0 / k2), (np.repeat(np.arange(n), k2), nearest.ravel())), shape=(n, n)
        )
        v = (average @ v).tocsr()

    # Jaccard distance 1 - s / (2 - s), s(i, j) = sum_k min(V[i, k], V[j, k]) over shared k.
    v_query = v[:num_query]
    v_gallery = v[num_query:].tocsc()
    final = np.empty((num_query, n - num_query), dtype=np.float32)
    for block_rows in query_blocks(num_query, max(1, block // 4)):
        part = v_query[block_rows].tocoo()
        starts, stops = v_gallery.indptr[part.col], v_gallery.indptr[part.col + 1]
        lengths = stops - starts
        pair = np.repeat(np.arange(part.nnz), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        gallery_index = v_gallery.indices[starts[pair] + within]
        shared = np.minimum(part.data[pair], v_gallery.data[starts[pair] + within])
        width = n - num_query
        cells = part.row[pair] * width + gallery_index
        s = np.bincount(cells, weights=shared, minlength=(block_rows.stop - block_rows.start) * width)
        s = s.reshape(-1, width)
        jaccard = 1.0 - s / (2.0 - s)
        final[block_rows] = (1 - lambda_value) * jaccard + lambda_value * original[block_rows]
    return final
