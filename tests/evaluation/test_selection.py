"""The grouped selections of re-ranking's distance pass against torch.topk on the whole matrix."""

import pytest
import torch
from threadpoolctl import threadpool_info

from mgn.evaluation.distance import product_runner
from mgn.evaluation.selection import down_to_bound, smallest


def _values(rows: int, width: int, seed: int, *, ties: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: ties everywhere, also at the k-th place
        return torch.randint(0, 6, (rows, width), generator=generator).float()
    return torch.rand(rows, width, generator=generator)


@pytest.mark.parametrize(
    ("rows", "width", "k", "group", "ties"),
    [
        (7, 1000, 5, 32, False),  # 1,000 = 31 groups of 32 + a short one of 8
        (7, 1024, 5, 32, False),
        (5, 900, 10, 8, True),
        (3, 40, 5, 32, False),  # too narrow for groups: plain topk
        (4, 300, 30, 4, True),
    ],
)
def test_smallest_equals_topk(rows, width, k, group, ties):
    values = _values(rows, width, seed=width + k, ties=ties)
    chosen, columns = smallest(values, k, group)
    expected = torch.topk(values, k, dim=1, largest=False).values
    torch.testing.assert_close(chosen.sort(dim=1).values, expected.sort(dim=1).values, rtol=0, atol=0)
    assert torch.equal(values.gather(1, columns), chosen)  # the columns hold those values
    assert all(len(set(row.tolist())) == k for row in columns)  # no column twice


def test_smallest_reads_down_columns_of_a_strided_view():
    strip = _values(64, 500, seed=3)
    below = strip[:, 100:]  # a view of the strip, as the distance pass reads it
    chosen, rows = smallest(below.T, 6, 8)
    expected = torch.topk(below, 6, dim=0, largest=False).values.T
    torch.testing.assert_close(chosen.sort(dim=1).values, expected.sort(dim=1).values, rtol=0, atol=0)
    assert torch.equal(below.T.gather(1, rows), chosen)


def _merged(existing: torch.Tensor, extra: torch.Tensor, k: int) -> torch.Tensor:
    """Per column, the k smallest of the existing table (W, k) and the extra entries (R, W)."""
    return torch.topk(torch.cat([existing, extra.T], dim=1), k, dim=1, largest=False).values


@pytest.mark.parametrize(
    ("case", "rows", "group"),
    [
        ("no bound yet", 203, 8),  # 203 rows: a short last group
        ("bounds from rows above", 256, 8),
        ("hub rows nearer than everything above", 256, 8),
        ("fewer groups than k", 40, 8),
        ("ties", 128, 4),
    ],
)
def test_down_to_bound_finds_every_entry_the_tables_need(case, rows, group):
    k, width = 12, 300
    values = _values(rows, width, seed=rows, ties=case == "ties")
    existing = torch.full((width, k), torch.inf)
    if case != "no bound yet":
        above = _values(400, width, seed=1, ties=case == "ties")
        existing = torch.topk(above, k, dim=0, largest=False).values.T  # sorted: the k-th is last
    if case.startswith("hub"):
        values = values * 0.001  # every new row beats every column's k nearest so far
    column, row, value = down_to_bound(values, existing[:, -1], k, group)
    assert torch.equal(values[row, column], value)
    order = column * rows + row
    assert torch.equal(order, order.sort().values)  # by column, then row
    found = torch.full((rows, width), torch.inf)
    found[row, column] = value
    torch.testing.assert_close(_merged(existing, found, k), _merged(existing, values, k), rtol=0, atol=0)
    if case.startswith("hub"):  # tightened: about k groups a column, not every row
        assert len(value) <= width * k * group


def test_product_runner_runs_every_task_and_gives_the_blas_threads_back():
    before = [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]
    done = []
    with product_runner(torch.device("cpu")) as run:
        run([lambda i=i: done.append(i) for i in range(10)])
        assert sorted(done) == list(range(10))
        with pytest.raises(ZeroDivisionError):  # a failing task fails the run
            run([lambda: 1 / 0])
    assert [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()] == before
