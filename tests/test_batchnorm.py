"""Ghost batches in one process are the plain batch norm of each group (forward, gradients and
running statistics); cross-rank groups are proven with real gloo workers in
``tests/orchestration/test_worker_count.py``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mgn.batchnorm import GroupBatchNorm, average_running_stats, group_batch_norm
from mgn.config import BatchNormGroups


@pytest.mark.parametrize("shape", [(12, 5, 3, 2), (12, 5)])
def test_ghost_batches_are_the_plain_bn_of_each_group(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    plain = {1: nn.BatchNorm2d, 2: None}.get(len(shape) - 3, nn.BatchNorm1d)(5).double()
    nn.init.normal_(plain.weight), nn.init.normal_(plain.bias)
    ghost = GroupBatchNorm(copy.deepcopy(plain), ghosts=3, ranks=1)
    ours = ghost(x.requires_grad_())
    (ours * torch.arange(ours.numel(), dtype=torch.float64).view_as(ours)).sum().backward()
    ours_grads = x.grad.clone(), ghost.weight.grad.clone(), ghost.bias.grad.clone()

    x.grad = None
    groups = [copy.deepcopy(plain) for _ in range(3)]  # one BN per group, the same start
    theirs = torch.cat([bn(part) for bn, part in zip(groups, x.split(4), strict=True)])
    (theirs * torch.arange(theirs.numel(), dtype=torch.float64).view_as(theirs)).sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_grads[0], x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_grads[1], sum(bn.weight.grad for bn in groups), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_grads[2], sum(bn.bias.grad for bn in groups), rtol=1e-12, atol=1e-12)
    # Running statistics: one update with the mean over the groups = the mean of the groups' updates.
    for name in ("running_mean", "running_var"):
        expected = torch.stack([getattr(bn, name) for bn in groups]).mean(0)
        torch.testing.assert_close(getattr(ghost, name), expected, rtol=1e-12, atol=1e-12)
    assert int(ghost.num_batches_tracked) == 1


def test_conversion_shares_parameters_and_leaves_one_group_per_rank_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)))
    assert group_batch_norm(model, BatchNormGroups(images=32, per_rank=32)) is model
    assert isinstance(model[1], nn.BatchNorm2d)
    weight, running = model[1].weight, model[1].running_mean
    keys = set(model.state_dict())
    converted = group_batch_norm(model, BatchNormGroups(images=32, per_rank=64))
    assert isinstance(converted[1], GroupBatchNorm) and isinstance(converted[2][0], GroupBatchNorm)
    assert converted[1].ghosts == 2 and converted[1].weight is weight and converted[1].running_mean is running
    assert set(converted.state_dict()) == keys  # checkpoints load either way
    converted.eval()
    x = torch.randn(6, 3, 2, 2)
    torch.testing.assert_close(converted[1](x[:, :1].expand(6, 4, 2, 2)), nn.functional.batch_norm(
        x[:, :1].expand(6, 4, 2, 2), running, model[1].running_var, weight, model[1].bias))  # fmt: skip


def test_running_statistics_need_no_averaging_in_one_process():
    norm = nn.BatchNorm1d(3)
    norm(torch.randn(8, 3))
    before = norm.running_mean.clone()
    average_running_stats(norm)
    assert torch.equal(norm.running_mean, before)
