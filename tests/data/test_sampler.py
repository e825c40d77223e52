import numpy as np
import pytest

from mgn.data import DatasetError, PKBatchSampler
from mgn.data.augment import draw_seed


def _pids(num_ids=12, per_id=(2, 5, 8)):
    rng = np.random.default_rng(0)
    return [pid for pid in range(num_ids) for _ in range(rng.choice(per_id))]


def test_every_batch_is_p_identities_times_k_images():
    pids = _pids()
    sampler = PKBatchSampler(pids, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        labels = [pids[i] for i, _ in batch]
        assert len(batch) == 12 and len(set(labels)) == 4
        assert all(labels.count(label) == 3 for label in set(labels))


def test_ids_with_few_images_are_resampled_with_replacement():
    pids = [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]  # ids 0 and 3 have one image
    batch = [i for i, _ in next(iter(PKBatchSampler(pids, p=4, k=4, seed=0)))]
    assert batch.count(0) == 4 and batch.count(9) == 4


@pytest.mark.parametrize("world_size", [2, 3, 6])
def test_the_ranks_batches_at_each_step_are_the_single_process_batch(world_size):
    """P x K is the global batch: W ranks split each step's identities, whole, P/W each, and each
    image comes with the augmentation seed of its global position, not of its rank."""
    pids = _pids(num_ids=20)
    single = PKBatchSampler(pids, p=6, k=2, seed=7)
    ranks = [PKBatchSampler(pids, p=6, k=2, rank=r, world_size=world_size, seed=7) for r in range(world_size)]
    for epoch in range(3):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        steps = list(zip(*(list(r) for r in ranks), strict=True))  # matched collectives under DDP
        assert len(steps) == len(single) == len(list(single))  # epoch length independent of W
        for number, (step, shares) in enumerate(zip(single, steps, strict=True)):
            assert [d for _, d in step] == [draw_seed(7, epoch, number, position) for position in range(12)]
            assert [i for share in shares for i in share] == step  # the union, in rank order, draws too
            ids = [{pids[i] for i, _ in share} for share in shares]
            assert all(
                len(share) == 6 // world_size * 2 and len(s) == 6 // world_size
                for share, s in zip(shares, ids, strict=True)
            )
            assert sum(len(s) for s in ids) == len(set().union(*ids))  # whole identities, disjoint ranks


def test_p_must_split_into_whole_identities_per_rank():
    with pytest.raises(DatasetError, match=r"P=4 .* 3 workers' whole identities: make data.p a multiple"):
        PKBatchSampler(_pids(), p=4, k=2, world_size=3)


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
    seen = {i for batch in PKBatchSampler(pids, p=8, k=4, seed=0) for i, _ in batch}
    assert len(seen) >= 0.8 * len(pids)  # the last chunks cannot always fill P distinct ids


def test_p_larger_than_the_data_can_give():
    with pytest.raises(
        DatasetError, match=r"P=16 identities per batch, but the training set has 12 identities"
    ):
        PKBatchSampler(_pids(), p=16, k=4)
    PKBatchSampler(_pids(), p=12, k=2, world_size=4)  # 12 ids over 4 ranks: 3 each per step, fine


def test_k_larger_than_an_identity_without_replacement():
    with pytest.raises(DatasetError, match="without replacement, but .* identities have fewer"):
        PKBatchSampler(_pids(), p=4, k=4, with_replacement=False)


def test_an_identity_epoch_gives_every_identity_one_chunk_of_k():
    """The public port's epoch: identities / P steps (751 // 16 = 46 on Market-1501) instead of ~all images."""
    pids = [pid for pid in range(751) for _ in range(17)]
    sampler = PKBatchSampler(pids, p=16, k=4, identity_epochs=True, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 751 // 16
    seen = [pids[i] for batch in batches for i, _ in batch]
    assert all(seen.count(pid) == 4 for pid in set(seen)) and len(set(seen)) == 46 * 16
    assert len(PKBatchSampler(pids, p=16, k=4, seed=0)) > 3 * len(batches)  # the image epoch is longer
