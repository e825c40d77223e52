"""evaluate_rank: hand-computed fixtures, the original MATLAB code's output, and a literal reference."""

import numpy as np
import pytest
import torch

from mgn.evaluation import evaluate_rank
from tests.conftest import SHARED_DATA
from tests.evaluation.reference_rank import per_query_reference

# Gallery: (pid, cam) per entry. Query 0 is pid 1 seen by camera 0.
G_PIDS = np.array([1, -1, 0, 1, 2, 1])
G_CAMS = np.array([0, 1, 1, 1, 1, 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_junk_distractors_and_skipped_queries_by_hand(dtype):
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # same-camera match (junk), -1 (junk), distractor, hit, miss, hit
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # pid 3: not in the gallery -> skipped
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # pid 2, camera 1: only a same-camera match -> skipped
        ],
        dtype=dtype,
    )
    q_pids, q_cams = np.array([1, 3, 2]), np.array([0, 0, 1])
    step = evaluate_rank(dist, q_pids, G_PIDS, q_cams, G_CAMS, max_rank=10)
    # hits at ranks 2 and 4 among valid entries [distractor, hit, miss, hit]
    assert step.num_queries == 1 and step.num_skipped == 2
    assert step.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert step.mINP == pytest.approx(2 / 4)
    np.testing.assert_array_equal(step.cmc, [0] + [1] * 9)
    trapezoid = evaluate_rank(dist, q_pids, G_PIDS, q_cams, G_CAMS, max_rank=10, ap="trapezoid")
    # MATLAB averages the precision before and at each hit: ((0 + 1/2)/2 + (1/3 + 2/4)/2) / 2 = 1/3
    assert trapezoid.mAP == pytest.approx(1 / 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_are_ordered_by_gallery_index(dtype):
    dist = np.full((1, 6), 0.5, dtype=dtype)
    result = evaluate_rank(dist, np.array([1]), G_PIDS, np.array([3]), G_CAMS, max_rank=10)
    # camera 3: entries 0, 3, 5 are hits; -1 is junk; order 0(hit) 2(distractor) 3(hit) 4(miss) 5(hit)
    assert result.mAP == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert result.mINP == pytest.approx(3 / 5) and result.cmc[0] == 1


def test_a_tie_between_a_match_and_a_wrong_answer():
    dist = np.array([[0.9, 0.9, 0.3, 0.3, 0.3, 0.3]], dtype=np.float32)
    # camera 0 query: entry 0 junk, 1 junk; tie at 0.3: 2 (distractor) 3 (hit) 4 (miss) 5 (hit)
    result = evaluate_rank(dist, np.array([1]), G_PIDS, np.array([0]), G_CAMS, max_rank=10)
    assert result.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_negative_and_signed_zero_distances():
    dist = np.array([[-0.0, 0.0, -1.0, 0.0, -0.0, 2.0]], dtype=np.float32)
    result = evaluate_rank(dist, np.array([1]), G_PIDS, np.array([3]), G_CAMS, max_rank=10)
    cmc, step, _, inp, _ = per_query_reference(dist, np.array([1]), G_PIDS, np.array([3]), G_CAMS, 10)
    assert result.mAP == pytest.approx(step) and result.mINP == pytest.approx(inp)


GOLDEN = SHARED_DATA / "reid_eval_golden_case"


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="../shared/data/reid_eval_golden_case is absent")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_original_matlab_code_golden_case(dtype):
    data = GOLDEN / "data"
    dist = np.loadtxt(data / "query_gallery_distance.txt").astype(dtype)
    labels = [
        np.loadtxt(data / f"{name}.txt", dtype=np.int64)
        for name in ("query_id", "gallery_id", "query_cam", "gallery_cam")
    ]
    cmc = np.loadtxt(GOLDEN / "matlab_version" / "CMC.txt")
    trapezoid = evaluate_rank(dist, *labels, max_rank=100, ap="trapezoid")
    assert round(trapezoid.mAP, 5) == float((GOLDEN / "matlab_version" / "mAP.txt").read_text())  # 0.64034
    np.testing.assert_array_equal(trapezoid.cmc, cmc)  # exactly, every rank 1..100
    step = evaluate_rank(dist, *labels, ap="step")
    assert step.mAP == pytest.approx(0.665188, abs=1e-6)
    again = evaluate_rank(dist, *labels, ap="step")
    assert abs(again.mAP - step.mAP) < 1e-9 and again.mINP == step.mINP


@pytest.mark.parametrize("seed", range(12))
def test_equals_a_literal_per_query_evaluation(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g = rng.integers(1, 30), rng.integers(1, 300)
    g_pids, g_cams = rng.integers(-1, 10, num_g), rng.integers(0, 4, num_g)
    q_pids, q_cams = rng.integers(1, 10, num_q), rng.integers(0, 4, num_q)
    dtype = [np.float32, np.float64][seed % 2]
    # coarse values give many exact ties, fine values almost none
    dist = (rng.integers(0, 8, (num_q, num_g)) if seed % 3 else rng.random((num_q, num_g))).astype(dtype)
    reference = per_query_reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    if reference[-1] == 0:
        with pytest.raises(ValueError, match="no query has a valid match"):
            evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
        return
    result = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    trapezoid = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, ap="trapezoid")
    np.testing.assert_allclose(result.cmc, reference[0], atol=1e-12)
    assert result.mAP == pytest.approx(reference[1], abs=1e-12) and trapezoid.mAP == pytest.approx(
        reference[2], abs=1e-12
    )
    assert result.mINP == pytest.approx(reference[3], abs=1e-12)


def test_accepts_tensors_and_reports_summary():
    dist = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    result = evaluate_rank(
        dist, torch.tensor([1]), torch.tensor(G_PIDS), torch.tensor([0]), torch.tensor(G_CAMS), max_rank=10
    )
    assert result.summary() == pytest.approx(
        {"R1": 0.0, "R5": 100.0, "R10": 100.0, "mAP": 50.0, "mINP": 50.0}
    )


def test_bad_input():
    with pytest.raises(ValueError, match="2-D float"):
        evaluate_rank(np.zeros(6), np.array([1]), G_PIDS, np.array([0]), G_CAMS)
    with pytest.raises(ValueError, match="6 columns, gallery has 5"):
        evaluate_rank(np.zeros((1, 6)), np.array([1]), G_PIDS[:5], np.array([0]), G_CAMS[:5])
    with pytest.raises(ValueError, match="NaN at a correct match"):
        evaluate_rank(np.full((1, 6), np.nan), np.array([1]), G_PIDS, np.array([3]), G_CAMS)
    with pytest.raises(ValueError, match="step' or 'trapezoid"):
        evaluate_rank(np.zeros((1, 6)), np.array([1]), G_PIDS, np.array([3]), G_CAMS, ap="interpolated")


def test_infinite_distances_rank_last():
    dist = np.array([[np.inf, 0.2, 0.3, np.inf, 0.5, 0.1]], dtype=np.float32)
    for dtype in (np.float32, np.float64):
        result = evaluate_rank(dist.astype(dtype), np.array([1]), G_PIDS, np.array([3]), G_CAMS, max_rank=10)
        reference = per_query_reference(dist.astype(dtype), np.array([1]), G_PIDS, np.array([3]), G_CAMS, 10)
        assert result.mAP == pytest.approx(reference[1]) and result.mINP == pytest.approx(reference[3])


def test_non_finite_inputs_are_refused_not_scored():
    dist = np.random.default_rng(0).random((1, 6))
    with pytest.raises(ValueError, match="labels must be integers"):  # used to score R1 100 / mAP 100
        evaluate_rank(dist, np.array([np.nan]), G_PIDS, np.array([3]), G_CAMS)
    far = dist.copy()
    far[0, int(np.flatnonzero(G_PIDS != 1)[0])] = np.nan  # NaN at a non-match used to pass as "far"
    with pytest.raises(ValueError, match="the distance matrix holds NaN"):
        evaluate_rank(far, np.array([1]), G_PIDS, np.array([3]), G_CAMS)
