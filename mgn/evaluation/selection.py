"""The k smallest entries of each row of a wide matrix, reading most entries once.

``torch.topk`` on a CPU copies every entry of a row into a (value, index) heap candidate and costs
about 5 cycles an entry; the row's minima over contiguous groups of ``group`` entries cost a
fraction of a cycle (a vectorised reduction), and only the k groups with the smallest minima can
hold the k smallest values. So the k smallest of a (R, W) matrix are found among k x group
gathered entries per row instead of W. Re-ranking's distance pass (``mgn.evaluation.neighbours``)
selects this way from every strip it computes: along its rows and down its columns.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_minima(values: Tensor, group: int, dim: int) -> Tensor:
    """Minima of ``values`` over consecutive groups of ``group`` entries along ``dim`` (0 or 1 of a
    2-d tensor); the last group may be short."""
    length = values.shape[dim]
    whole = length // group * group
    minima: Tensor = values.narrow(dim, 0, whole).unflatten(dim, (-1, group)).amin(dim=dim + 1)
    if whole == length:
        return minima
    rest = values.narrow(dim, whole, length - whole).amin(dim=dim, keepdim=True)
    return torch.cat([minima, rest], dim=dim)


def smallest(values: Tensor, k: int, group: int) -> tuple[Tensor, Tensor]:
    """(R, W) -> the k smallest of each row, (R, k) values and (R, k) column indices, in no
    particular order. Any strides (a transposed view selects down columns).

    The values equal ``torch.topk(values, k, largest=False).values`` as multisets; among equal values
    at the k-th place the chosen columns may differ (as they may between topk implementations).
    Why it is exact: if the i-th smallest value v of a row lay outside the k groups with the
    smallest minima, each of those k groups would hold an entry <= v, so they hold at least i
    entries <= v, and the i-th smallest among them is <= v too.
    """
    rows, width = values.shape
    k = min(k, width)
    if width <= 2 * k * group:  # too narrow to gain: read every entry
        best = torch.topk(values, k, dim=1, largest=False)
        return best.values, best.indices
    minima = group_minima(values, group, dim=1)  # (R, ceil(W / group))
    groups = torch.topk(minima.contiguous(), k, dim=1, largest=False).indices  # (R, k)
    offsets = torch.arange(group, device=values.device)
    columns = (groups[:, :, None] * group + offsets).flatten(1)  # (R, k * group)
    inside = columns < width  # the last group may be short
    candidates = values.gather(1, columns.clamp(max=width - 1)).masked_fill_(~inside, torch.inf)
    best = torch.topk(candidates, k, dim=1, largest=False)
    return best.values, columns.gather(1, best.indices)


def down_to_bound(values: Tensor, bound: Tensor, k: int, group: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every entry of (R, W) ``values`` that can be among the k smallest of its column once joined
    to that column's k smallest so far, whose largest is ``bound`` (W,) (inf: fewer than k so far).

    Returns (columns, rows, values), one per entry, ordered by column then row. Groups of
    ``group`` rows whose minimum exceeds the column's bound are never read again: once a column
    has its k nearest from the strips above, a strip of b rows brings it about k * b / (rows above)
    candidates. Where more than k groups beat the bound (no bound yet, or rows that are nearer to
    the column than everything above, as sorted identities or hub queries are), the bound is first
    tightened to the k-th smallest group minimum, an upper bound of the column's k-th smallest
    entry; so no column reads more than about k groups.
    """
    rows = values.shape[0]
    by_column = group_minima(values, group, dim=0).T  # (W, ceil(R / group)), a view
    crowded = (by_column <= bound[:, None]).sum(dim=1) > k  # never true with at most k groups
    if bool(crowded.any()):
        bound = bound.clone()
        kth = torch.topk(by_column[crowded], k, dim=1, largest=False).values[:, -1]
        bound[crowded] = torch.minimum(bound[crowded], kth)
    hit_columns, hit_groups = (by_column <= bound[:, None]).nonzero(as_tuple=True)  # column-major
    offsets = torch.arange(group, device=values.device)
    row = (hit_groups[:, None] * group + offsets).flatten()
    column = hit_columns.repeat_interleave(group)
    if rows % group:  # the last group is short
        inside = row < rows
        row, column = row[inside], column[inside]
    value = _entries(values, row, column)
    keep = value <= bound[column]
    return column[keep], row[keep], value[keep]


def _entries(values: Tensor, row: Tensor, column: Tensor) -> Tensor:
    """values[row, column] as one flat index into the view's memory (advanced indexing of a strided
    2-d view costs about 10x more)."""
    step = values.stride(0)
    if values.stride(1) != 1:
        return values[row, column]
    flat = values.as_strided(((values.shape[0] - 1) * step + values.shape[1],), (1,))
    return flat[row * step + column]
