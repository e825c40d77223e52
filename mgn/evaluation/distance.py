"""Query x gallery distances from features, computed block by block."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from mgn.config import Metric


def as_features(features: np.ndarray | Tensor, *, keep_device: bool = False) -> Tensor:
    """(N, D) float32 tensor on the CPU, or with ``keep_device`` where it is (no copy when already one)."""
    tensor = torch.as_tensor(features).detach()
    if tensor.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(tensor.shape)}")
    return tensor.to(device=tensor.device if keep_device else "cpu", dtype=torch.float32)


def squared_norms(features: Tensor) -> Tensor:
    norms: Tensor = torch.linalg.vecdot(features, features)  # no (N, D) temporary, unlike pow(2).sum
    return norms


def distance_block(
    query: Tensor, gallery: Tensor, metric: Metric, gallery_sq: Tensor | None = None
) -> Tensor:
    """(Qc, D) x (G, D) -> (Qc, G) distances that rank like ``metric``.

    Euclidean returns *squared* distances ||q||^2 + ||g||^2 - 2 q.g: the same order as the
    Euclidean distance, without a square root that could merge nearby values. Cosine returns
    1 - cos(q, g).
    """
    if metric is Metric.COSINE:
        query = torch.nn.functional.normalize(query, dim=1)
        gallery = torch.nn.functional.normalize(gallery, dim=1)
        return torch.addmm(torch.ones((), dtype=query.dtype), query, gallery.T, alpha=-1.0)
    if gallery_sq is None:
        gallery_sq = squared_norms(gallery)
    dist = torch.addmm(gallery_sq[None, :], query, gallery.T, alpha=-2.0)  # one fused BLAS call
    return dist.add_(squared_norms(query)[:, None])


# The CPU's products go through NumPy's BLAS: 1.2-1.4x faster than torch's on the strips of
# re-ranking's distance pass on our machines, and it computes ``products(a, a)`` as one triangle
# (syrk) mirrored. Tests set this to False to run the GPU's code path (torch throughout) on the CPU.
NUMPY_ON_CPU = True


def _through_numpy(device: torch.device) -> bool:
    return device.type == "cpu" and NUMPY_ON_CPU


def products(a: Tensor, b: Tensor) -> Tensor:
    """(A, D) x (B, D) -> (A, B) inner products, on the inputs' device (``NUMPY_ON_CPU``)."""
    if _through_numpy(a.device):
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy().T))
    return a @ b.T


Task = Callable[[], None]
ProductRunner = Callable[[Sequence[Task]], None]


@contextmanager
def product_runner(device: torch.device) -> Iterator[ProductRunner]:
    """A function that runs a list of product tasks and returns when all are done.

    On the CPU the tasks run in ``torch.get_num_threads()`` Python threads, each with one BLAS
    thread (NumPy's BLAS releases the GIL), as fast as one product with that many BLAS threads.
    The reason: after each product OpenBLAS's worker threads spin for about 0.1 s waiting for the
    next one (2^28 cycles by default), and the torch operations that read the product meanwhile
    get half the cores; re-ranking's pass alternates products and torch selection 25 times on
    Market-1501. Python threads waiting on a queue sleep instead. On a GPU the tasks simply run.
    """
    if not _through_numpy(device):

        def run_in_order(tasks: Sequence[Task]) -> None:
            for task in tasks:
                task()

        yield run_in_order
        return
    with ThreadPoolExecutor(torch.get_num_threads()) as pool, threadpool_limits(1, user_api="blas"):

        def run(tasks: Sequence[Task]) -> None:
            for future in [pool.submit(task) for task in tasks]:
                future.result()

        yield run


def product_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    """out (A, B) <- a (A, D) x b (B, D)^T, written in place (``out`` may be a strided view of a wider
    buffer: BLAS writes it with its row stride, no temporary)."""
    if _through_numpy(a.device):
        np.matmul(a.numpy(), b.numpy().T, out=out.numpy())
    else:
        torch.matmul(a, b.T, out=out)


def query_blocks(num_queries: int, block: int) -> Iterator[slice]:
    for start in range(0, num_queries, block):
        yield slice(start, min(start + block, num_queries))


def pairwise_distance(
    query: np.ndarray | Tensor, gallery: np.ndarray | Tensor, metric: Metric = Metric.EUCLIDEAN
) -> np.ndarray:
    """The full (Q, G) distance matrix: Euclidean (not squared) or cosine. For small sets and plots;
    evaluation uses ``evaluate_features``, which never holds the whole matrix."""
    query, gallery = as_features(query), as_features(gallery)
    dist = distance_block(query, gallery, metric)
    return (dist.clamp_(min=0).sqrt_() if metric is Metric.EUCLIDEAN else dist).numpy()
