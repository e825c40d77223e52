"""The validation split: held-out training identities, drawn like the test protocol; no test image."""

from dataclasses import replace

import pytest

from mgn.data import load_dataset
from mgn.data.loading import read_dataset
from mgn.data.records import DatasetError
from mgn.training import fit
from tests.conftest import tiny_config


def _config(num_ids: int, p: int = 2):
    config = tiny_config()
    return replace(config, data=replace(config.data, validation_ids=num_ids, p=p))


def test_held_out_identities_are_disjoint_from_training_and_no_test_image_is_read():
    full = read_dataset(tiny_config().data)
    split = read_dataset(_config(3).data)
    train_paths = {r.path for r in full.train}
    held = {r.path for r in split.query + split.gallery}
    assert held <= train_paths  # carved from the training images only: nothing of the test set
    assert held.isdisjoint(r.path for r in split.train)
    assert held | {r.path for r in split.train} == train_paths
    assert sorted({r.pid for r in split.train}) == list(range(full.num_train_ids - 3))  # relabelled
    assert sorted({r.pid for r in split.query}) == [1, 2, 3] and not split.multi_query


def test_queries_follow_the_test_protocol():
    split = read_dataset(_config(3).data)
    seen = set()
    for query in split.query:
        assert (query.pid, query.camid) not in seen  # one query per identity and camera
        seen.add((query.pid, query.camid))
        assert any(g.pid == query.pid and g.camid != query.camid for g in split.gallery)  # a real match
    assert {q.path for q in split.query}.isdisjoint(g.path for g in split.gallery)
    cameras = {pid: {r.camid for r in split.query + split.gallery if r.pid == pid} for pid in (1, 2, 3)}
    assert seen == {(pid, cam) for pid, cams in cameras.items() for cam in cams}  # every camera has its query
    assert read_dataset(_config(3).data) == split  # the same split every time


def test_holding_out_too_many_identities_is_refused():
    with pytest.raises(DatasetError, match="leaves 2 training identities, fewer than data.p=4"):
        read_dataset(_config(6, p=4).data)
    with pytest.raises(DatasetError, match="hold out at most 8"):
        read_dataset(_config(9).data)


def test_training_with_a_validation_split_evaluates_on_it():
    config = _config(3)
    dataset = load_dataset(config.data)
    result = fit(replace(config, train=replace(config.train, epochs=1)), dataset)
    assert len(result.evaluation.query.pids) == len(dataset.query)
    assert set(result.evaluation.gallery.pids) == {1, 2, 3}
