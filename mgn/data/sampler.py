"""The P x K identity sampler (§4.1): every batch holds P identities with K images each.

Rank-aware without ``DistributedSampler``: each epoch the identities are shuffled with the shared
seed and dealt round-robin to the ranks, so every rank draws from its own disjoint identities (and
hence images). Each rank then cuts each of its identities' shuffled images into chunks of K (an
identity with fewer than K images is resampled with replacement) and fills batches with one chunk
from each of P distinct identities, until fewer than P identities have chunks left: every image is
seen about once per epoch. All ranks yield the same number of batches (the smallest share), so the
collective calls of DDP and ``ray.train.report`` stay matched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mgn.data.records import DatasetError


class PKBatchSampler(Sampler[list[int]]):
    """Yields lists of P*K dataset indices; deterministic for (seed, epoch, rank, world_size).

    Example::

        sampler = PKBatchSampler(train_pids, p=16, k=4, rank=rank, world_size=world_size, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for images, pids, camids in loader: ...
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        with_replacement: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        self._by_pid = {pid: np.asarray(indices) for pid, indices in sorted(by_pid.items())}
        self.p, self.k = p, k
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        per_rank = len(self._by_pid) // world_size
        if per_rank < p:
            raise DatasetError(
                f"P={p} identities per batch, but the training set has {len(self._by_pid)} identities"
                + (f" ({per_rank} per rank with {world_size} workers)" if world_size > 1 else "")
                + f": lower data.p to at most {per_rank}, use fewer workers, or use more data"
            )
        if not with_replacement:
            short = [pid for pid, indices in self._by_pid.items() if len(indices) < k]
            if short:
                raise DatasetError(
                    f"K={k} images per identity without replacement, but {len(short)} identities have fewer "
                    f"(e.g. id {short[0]} has {len(self._by_pid[short[0]])}): lower data.k or set "
                    f"data.sample_with_replacement=true"
                )
        if len(self) == 0:
            raise DatasetError(
                f"the training set cannot fill a single {p}x{k} batch per rank: lower data.p or data.k"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, rank: int) -> list[list[int]]:
        ids = np.random.default_rng([self.seed, self.epoch]).permutation(list(self._by_pid))
        rng = np.random.default_rng([self.seed, self.epoch, rank])
        chunks: dict[int, list[np.ndarray]] = {}
        for pid in ids[rank :: self.world_size]:
            indices = self._by_pid[int(pid)]
            if len(indices) < self.k:
                indices = rng.choice(indices, size=self.k, replace=True)
            else:
                indices = rng.permutation(indices)
            chunks[int(pid)] = [indices[i : i + self.k] for i in range(0, len(indices) - self.k + 1, self.k)]
        batches = []
        available = list(chunks)
        while len(available) >= self.p:
            chosen = [available[i] for i in rng.choice(len(available), size=self.p, replace=False)]
            batches.append([int(i) for pid in chosen for i in chunks[pid].pop()])
            available = [pid for pid in available if chunks[pid]]
        return batches

    def __len__(self) -> int:
        return min(len(self._batches(r)) for r in range(self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.rank)
        yield from batches[: len(self)]
