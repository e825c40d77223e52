"""Every picture, drawn from a tiny trained model: the right size, and not blank."""

import numpy as np
import pytest
import torch
from PIL import Image

from mgn.data import load_dataset
from mgn.data.loading import eval_loader
from mgn.evaluation import pairwise_distance
from mgn.training import fit
from mgn.visualize import (
    attention_figure,
    attention_maps,
    bar_figure,
    cmc_figure,
    denormalize,
    rank_list_figure,
    save,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained():
    config = tiny_config()
    dataset = load_dataset(config.data)
    return fit(config, dataset), dataset, config


def _looks_drawn(path, min_size=(300, 200), min_ink=0.05) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.shape[1] >= min_size[0] and pixels.shape[0] >= min_size[1]
    assert pixels.std() > 20, "the picture is (almost) uniform"
    assert (pixels.mean(axis=2) < 230).mean() > min_ink, "the picture is (almost) all white"
    return pixels


def _count(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return int((np.abs(pixels - np.array(rgb)).max(axis=2) < tolerance).sum())


def test_rank_list_frames_matches_green_and_the_rest_red(trained, tmp_path):
    result, dataset, _ = trained
    queries = dataset.query[:3]
    distances = pairwise_distance(result.evaluation.query.features[:3], result.evaluation.gallery.features)
    pixels = _looks_drawn(
        save(rank_list_figure(queries, dataset.gallery, distances, top_k=10), tmp_path / "ranks.png"),
        (800, 400),
    )
    green = (pixels[..., 1] > 130) & (pixels[..., 0] < 60) & (pixels[..., 2] < 90)
    red = (pixels[..., 0] > 190) & (pixels[..., 1] < 80) & (pixels[..., 2] < 70)
    assert red.sum() > 100  # every query has wrong answers in its top 10 on this tiny set
    correct_in_top10 = sum(
        any(
            dataset.gallery[i].pid == q.pid for i in np.argsort(d)[:10] if dataset.gallery[i].camid != q.camid
        )
        for q, d in zip(queries, distances, strict=True)
    )
    assert (green.sum() > 100) == (correct_in_top10 > 0)


def test_attention_maps_of_every_branch(trained, tmp_path):
    result, dataset, config = trained
    images = next(iter(eval_loader(dataset.query[:2], config.data)))[0]
    maps = attention_maps(result.model, images)
    assert list(maps) == ["Global", "Part-2", "Part-3"]
    for heat in maps.values():
        assert (
            heat.shape == (2, config.data.height, config.data.width)
            and heat.min() >= 0
            and heat.max() == pytest.approx(1)
        )
    assert not np.allclose(maps["Global"], maps["Part-3"])  # branches look at different things
    _looks_drawn(save(attention_figure(denormalize(images), maps), tmp_path / "attention.png"), (250, 250))


def test_cmc_curves_and_bar_chart(tmp_path):
    curves = {"MGN": np.linspace(0.4, 1.0, 50), "ResNet-50": np.linspace(0.2, 0.9, 50)}
    pixels = _looks_drawn(save(cmc_figure(curves), tmp_path / "cmc.png"), min_ink=0.02)
    assert _count(pixels, (31, 119, 180)) > 300 and _count(pixels, (255, 127, 14)) > 300  # both curves drawn
    bars = bar_figure(
        ["ResNet-50", "MGN"], {"R1": [40.0, 50.0], "mAP": [30.0, 45.0]}, {"R1": [1.0, 2.0], "mAP": [0.5, 1.5]}
    )
    _looks_drawn(save(bars, tmp_path / "bars.png"))


def test_pictures_do_not_change_the_model(trained):
    result, dataset, config = trained
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    images = next(iter(eval_loader(dataset.query[:1], config.data)))[0]
    attention_maps(result.model, images)
    assert all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())
