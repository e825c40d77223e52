import numpy as np
import pytest

from mgn.data import DatasetError, PKBatchSampler


def _pids(num_ids=12, per_id=(2, 5, 8)):
    rng = np.random.default_rng(0)
    return [pid for pid in range(num_ids) for _ in range(rng.choice(per_id))]


def test_every_batch_is_p_identities_times_k_images():
    pids = _pids()
    sampler = PKBatchSampler(pids, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        labels = [pids[i] for i in batch]
        assert len(batch) == 12 and len(set(labels)) == 4
        assert all(labels.count(label) == 3 for label in set(labels))


def test_ids_with_few_images_are_resampled_with_replacement():
    pids = [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]  # ids 0 and 3 have one image
    batch = next(iter(PKBatchSampler(pids, p=4, k=4, seed=0)))
    assert batch.count(0) == 4 and batch.count(9) == 4


def test_ranks_get_disjoint_identities_and_images_and_equal_lengths():
    pids = _pids(num_ids=20)
    samplers = [PKBatchSampler(pids, p=3, k=2, rank=r, world_size=3, seed=7) for r in range(3)]
    for epoch in range(3):
        for s in samplers:
            s.set_epoch(epoch)
        shares = [[i for batch in s for i in batch] for s in samplers]
        ids = [{pids[i] for i in share} for share in shares]
        assert not ids[0] & ids[1] and not ids[1] & ids[2] and not ids[0] & ids[2]
        assert not set(shares[0]) & set(shares[1])
        assert len({len(list(s)) for s in samplers}) == 1  # matched collectives under DDP


def test_same_seed_and_epoch_give_the_same_order():
    pids = _pids()
    a, b = PKBatchSampler(pids, p=4, k=2, seed=3), PKBatchSampler(pids, p=4, k=2, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKBatchSampler(pids, p=4, k=2, seed=4)) != list(PKBatchSampler(pids, p=4, k=2, seed=3))


def test_most_images_are_seen_each_epoch():
    pids = [pid for pid in range(32) for _ in range(8)]
    seen = {i for batch in PKBatchSampler(pids, p=8, k=4, seed=0) for i in batch}
    assert len(seen) >= 0.8 * len(pids)  # the last chunks cannot always fill P distinct ids


def test_p_larger_than_the_data_can_give():
    with pytest.raises(
        DatasetError, match=r"P=16 identities per batch, but the training set has 12 identities"
    ):
        PKBatchSampler(_pids(), p=16, k=4)
    with pytest.raises(DatasetError, match=r"\(3 per rank with 4 workers\)"):
        PKBatchSampler(_pids(), p=4, k=4, world_size=4)


def test_k_larger_than_an_identity_without_replacement():
    with pytest.raises(DatasetError, match="without replacement, but .* identities have fewer"):
        PKBatchSampler(_pids(), p=4, k=4, with_replacement=False)
