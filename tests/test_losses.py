import pytest
import torch
import torch.nn.functional as F

from mgn.config import LossConfig, Reduction
from mgn.losses import batch_hard_triplet_loss, mgn_loss
from mgn.model import MGNOutput


def brute_force_triplet(features: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 2 of the paper by explicit loops (mean over anchors)."""
    losses = []
    for a in range(len(features)):
        positives = [
            torch.dist(features[a], features[p]) for p in range(len(features)) if targets[p] == targets[a]
        ]
        negatives = [
            torch.dist(features[a], features[n]) for n in range(len(features)) if targets[n] != targets[a]
        ]
        losses.append(torch.clamp(margin + max(positives) - min(negatives), min=0))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("seed", range(5))
def test_batch_hard_triplet_equals_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    p, k, d = 4, 3, 8
    features = torch.randn(p * k, d, generator=generator) * (0.3 + seed)
    targets = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=generator)]
    for margin in (0.0, 1.2, 5.0):
        assert batch_hard_triplet_loss(features, targets, margin) == pytest.approx(
            brute_force_triplet(features, targets, margin).item(), rel=1e-5, abs=1e-6
        )


def test_triplet_gradient_is_finite_with_duplicate_features():
    features = torch.ones(4, 3, requires_grad=True)  # zero distances everywhere
    batch_hard_triplet_loss(features, torch.tensor([0, 0, 1, 1]), 1.2).backward()
    assert torch.isfinite(features.grad).all()


def _outputs(num_branches: int = 3, num_parts: int = 5, classes: int = 3, batch: int = 6) -> MGNOutput:
    torch.manual_seed(0)

    def t(dim: int) -> torch.Tensor:
        return torch.randn(batch, dim, requires_grad=True)

    return MGNOutput(
        pooled_globals=[t(16) for _ in range(num_branches)],
        embedded_globals=[t(8) for _ in range(num_branches)],
        embedded_parts=[t(8) for _ in range(num_parts)],
        global_logits=[t(classes) for _ in range(num_branches)],
        part_logits=[t(classes) for _ in range(num_parts)],
    )


def test_loss_is_the_weighted_sum_or_mean_of_its_terms():
    out, targets = _outputs(), torch.tensor([0, 0, 1, 1, 2, 2])
    ce = [F.cross_entropy(x, targets) for x in out.global_logits + out.part_logits]
    tp = [batch_hard_triplet_loss(f, targets, 1.2) for f in out.embedded_globals]
    paper = mgn_loss(out, targets, LossConfig())
    assert paper.total.item() == pytest.approx((sum(ce) + sum(tp)).item(), rel=1e-6)
    community = mgn_loss(
        out,
        targets,
        LossConfig(triplet_weight=2.0, softmax_reduction=Reduction.MEAN, triplet_reduction=Reduction.MEAN),
    )
    assert community.total.item() == pytest.approx((sum(ce) / 8 + 2 * sum(tp) / 3).item(), rel=1e-6)


def test_without_triplet_the_reduced_globals_get_no_triplet_gradient():
    out, targets = _outputs(), torch.tensor([0, 0, 1, 1, 2, 2])
    losses = mgn_loss(out, targets, LossConfig(triplet_weight=0.0))
    assert losses.triplet.item() == 0
    losses.total.backward()
    assert all(f.grad is None for f in out.embedded_globals)
    assert all(x.grad is not None for x in out.global_logits + out.part_logits)


def _loss_variants() -> list[tuple[str, object]]:
    """Every Table 5 network, and the configurations whose losses leave layers without gradient."""
    from dataclasses import replace

    from mgn.recipes import smoke
    from mgn.table5 import trained_rows

    base = smoke()
    variants = [(row.name, row.config(base)) for row in trained_rows()]
    variants.append(("MGN, triplet_weight=0", replace(base, loss=replace(base.loss, triplet_weight=0.0))))
    variants.append(("MGN, softmax_weight=0", replace(base, loss=replace(base.loss, softmax_weight=0.0))))
    return variants


@pytest.mark.parametrize(("name", "config"), _loss_variants(), ids=[n for n, _ in _loss_variants()])
def test_parameters_without_loss_are_exactly_those_autograd_never_reaches(name, config):
    from dataclasses import replace

    from mgn.config import Init
    from mgn.losses import parameters_without_loss
    from mgn.model import MGN

    model = MGN(replace(config.model, init=Init.RANDOM), num_classes=4)
    images, targets = torch.randn(8, 3, 64, 32), torch.arange(4).repeat_interleave(2)
    mgn_loss(model(images), targets, config.loss).total.backward()
    reached_none = sorted(n for n, p in model.named_parameters() if p.grad is None)
    assert sorted(parameters_without_loss(model, config.loss)) == reached_none
    if name == "MGN, triplet_weight=0":  # the case that crashed multi-worker trials
        assert reached_none and all(".reductions.0." in n for n in reached_none)


def test_losses_ignore_an_enclosing_bf16_autocast():
    """Batch-hard mining on bf16 distances (~3 significant digits) against a margin of 1.2 would be noise."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(16, 256, generator=generator) * 3
    targets = torch.arange(8).repeat_interleave(2)
    fp32 = batch_hard_triplet_loss(features, targets, 1.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = batch_hard_triplet_loss(features, targets, 1.2)
        assert (features @ features.T).dtype == torch.bfloat16  # the autocast is real
    assert under_autocast.dtype == torch.float32
    assert abs(under_autocast.item() - fp32.item()) <= 1e-6 * max(1.0, abs(fp32.item()))
    out = _outputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = mgn_loss(out, torch.tensor([0, 0, 1, 1, 2, 2]), LossConfig()).total
    assert total.item() == pytest.approx(
        mgn_loss(out, torch.tensor([0, 0, 1, 1, 2, 2]), LossConfig()).total.item(), rel=1e-6
    )


def test_bf16_outputs_are_lifted_to_fp32_before_the_losses():
    out = _outputs()
    low = MGNOutput(*([t.detach().bfloat16() for t in getattr(out, f)] for f in out.__dataclass_fields__))
    assert mgn_loss(low, torch.tensor([0, 0, 1, 1, 2, 2]), LossConfig()).total.dtype == torch.float32
