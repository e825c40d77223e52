"""A validation split carved from the training identities, so that choices are never made on the test set.

``data.validation_ids = N`` holds out N training identities and turns them into a query / gallery
protocol drawn as Market-1501's test protocol is: for each held-out identity, one image per camera
is a query and its other images are the gallery (so every query has a match from another camera).
The network trains on the remaining identities; the test split is dropped from the data set, so
nothing downstream can read it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mgn.data.records import DatasetError, ImageRecord, ReidDataset

SPLIT_SEED = 0  # the held-out identities and queries do not depend on the training seed


def hold_out(dataset: ReidDataset, num_ids: int, min_train_ids: int) -> ReidDataset:
    """``dataset`` with its test protocol replaced by ``num_ids`` held-out training identities.

    Train pids are relabelled 0..C-1 over the identities left; held-out pids are 1..N (0 and -1
    keep their meaning of distractor and junk in evaluation).
    """
    by_id: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in dataset.train:
        by_id[record.pid].append(record)
    eligible = sorted(pid for pid, records in by_id.items() if len({r.camid for r in records}) >= 2)
    if num_ids > len(eligible):
        raise DatasetError(
            f"data.validation_ids={num_ids}: {dataset.name} has {len(eligible)} training identities seen by two "
            f"cameras or more (a query needs a match from another camera); hold out at most {len(eligible)}"
        )
    left = len(by_id) - num_ids
    if left < min_train_ids:
        raise DatasetError(
            f"data.validation_ids={num_ids} leaves {left} training identities, fewer than data.p={min_train_ids} "
            f"identities per batch: hold out fewer"
        )
    rng = np.random.default_rng(SPLIT_SEED)
    held = sorted(rng.choice(eligible, size=num_ids, replace=False).tolist())
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for new_pid, pid in enumerate(held, start=1):
        by_camera: dict[int, list[ImageRecord]] = defaultdict(list)
        for record in by_id[pid]:
            by_camera[record.camid].append(record)
        for camid in sorted(by_camera):
            records = by_camera[camid]
            chosen = int(rng.integers(len(records)))
            for i, record in enumerate(records):
                (query if i == chosen else gallery).append(ImageRecord(record.path, new_pid, camid))
    kept = sorted(set(by_id) - set(held))
    relabel = {pid: i for i, pid in enumerate(kept)}
    train = [ImageRecord(r.path, relabel[r.pid], r.camid) for r in dataset.train if r.pid in relabel]
    return ReidDataset(f"{dataset.name} (validation: {num_ids} training ids held out)", train, query, gallery)
