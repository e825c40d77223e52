"""The P x K identity sampler (§4.1): every global batch holds P identities with K images each.

``p`` and ``k`` describe the *global* batch, whatever the number of workers: the paper trained one
batch of P=16 x K=4 = 64 images on two GPUs. The batches of an epoch are drawn once, from the
shared seed alone, exactly as one process draws them: the identities are shuffled, each
identity's shuffled images are cut into chunks of K (an identity with fewer than K images is
resampled with replacement), and batches take one chunk from each of P distinct identities until
fewer than P identities have chunks left, so every image is seen about once per epoch. Then each
of W ranks takes its P/W whole identities of every batch (rank r the r-th slice of the batch's
identities). So the union of the ranks' batches at each step is the single-process batch, the
epoch has the same number of steps for any W, and every rank yields the same number of batches
(the collective calls of DDP and ``ray.train.report`` stay matched).

Each image comes with the seed of its augmentation (``mgn.data.augment.draw_seed``), drawn from its
step and position in the global batch, so the ranks' images are augmented as one process's are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from torch.utils.data import Sampler

from mgn.data.augment import draw_seed
from mgn.data.records import DatasetError


class Sample(NamedTuple):
    """One image of a training batch: its index in the training records and its augmentation seed."""

    record: int
    draw: int


class PKBatchSampler(Sampler[list[Sample]]):
    """Yields this rank's share (P/W identities x K images) of every global P x K batch.

    Deterministic for (seed, epoch); the global batches do not depend on ``world_size``.

    Example::

        sampler = PKBatchSampler(train_pids, p=16, k=4, rank=rank, world_size=world_size, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for images, pids, camids in loader: ...  # (16 / world_size) * 4 images per rank

    Items are ``Sample(record, draw)``: the dataset reads image ``record`` and augments it with ``draw``.
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
        identity_epochs: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if p % world_size:
            raise DatasetError(
                f"P={p} identities per global batch cannot be split into {world_size} workers' whole "
                f"identities: make data.p a multiple of the number of workers (e.g. data.p="
                f"{max(world_size, p - p % world_size)}) or use a number of workers that divides {p}"
            )
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        self._by_pid = {pid: np.asarray(indices) for pid, indices in sorted(by_pid.items())}
        self.p, self.k = p, k
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.identity_epochs = identity_epochs
        self.epoch = 0
        self._drawn: tuple[int, list[list[int]]] | None = None  # (epoch, global batches)
        if len(self._by_pid) < p:
            raise DatasetError(
                f"P={p} identities per batch, but the training set has {len(self._by_pid)} identities: "
                f"lower data.p to at most {len(self._by_pid)}, or use more data"
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
            raise DatasetError(f"the training set cannot fill a single {p}x{k} batch: lower data.p or data.k")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """The epoch's P x K batches as one process draws them (identity by identity, K images each)."""
        if self._drawn is not None and self._drawn[0] == self.epoch:
            return self._drawn[1]
        ids = np.random.default_rng([self.seed, self.epoch]).permutation(list(self._by_pid))
        rng = np.random.default_rng([self.seed, self.epoch, 0])
        chunks: dict[int, list[np.ndarray]] = {}
        for pid in ids:
            indices = self._by_pid[int(pid)]
            if len(indices) < self.k:
                indices = rng.choice(indices, size=self.k, replace=True)
            else:
                indices = rng.permutation(indices)
            chunks[int(pid)] = [indices[i : i + self.k] for i in range(0, len(indices) - self.k + 1, self.k)]
            if self.identity_epochs:
                chunks[int(pid)] = chunks[int(pid)][:1]
        batches = []
        available = list(chunks)
        while len(available) >= self.p:
            chosen = [available[i] for i in rng.choice(len(available), size=self.p, replace=False)]
            batches.append([int(i) for pid in chosen for i in chunks[pid].pop()])
            available = [pid for pid in available if chunks[pid]]
        self._drawn = (self.epoch, batches)
        return batches

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self) -> Iterator[list[Sample]]:
        share = self.p // self.world_size * self.k  # P/W whole identities of K images each
        positions = range(self.rank * share, (self.rank + 1) * share)
        for step, batch in enumerate(self.global_batches()):
            yield [Sample(batch[i], draw_seed(self.seed, self.epoch, step, i)) for i in positions]
