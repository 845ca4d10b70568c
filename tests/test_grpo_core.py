"""The GRPO algorithm core against hand computations (advantages, clipped PPO loss and its gradient, k3 KL,
global token-mean aggregation, diagnostics)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from posttrain.grpo.core import LossStats, group_advantages, grpo_loss, k3_kl, ppo_token_loss
from worldmodels.errors import ConfigError, NumericalError

EPS = 1e-4


def test_group_scale_matches_hand_computation():
    rewards = [[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]]
    adv, train = group_advantages(np.array(rewards), scale="group", eps=EPS, clip=None)
    for g, row in enumerate(rewards):
        mean, std = statistics.mean(row), statistics.stdev(row)  # unbiased, as torch.std
        for i, r in enumerate(row):
            assert adv[g, i] == pytest.approx((r - mean) / (std + EPS), abs=1e-12)
    assert train.all()
    assert np.allclose(adv.sum(axis=1), 0.0)


def test_batch_scale_divides_by_the_std_of_all_rewards():
    rewards = [[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]]
    adv, _ = group_advantages(np.array(rewards), scale="batch", eps=EPS, clip=None)
    std = statistics.stdev([r for row in rewards for r in row])
    for g, row in enumerate(rewards):
        mean = statistics.mean(row)
        for i, r in enumerate(row):
            assert adv[g, i] == pytest.approx((r - mean) / (std + EPS), abs=1e-12)


def test_none_scale_only_centres():
    adv, _ = group_advantages(np.array([[1.0, 2.0, 4.0]]), scale="none", clip=None)
    assert adv.tolist() == [[1 - 7 / 3, 2 - 7 / 3, 4 - 7 / 3]]


def test_zero_std_groups_get_zero_advantage_and_are_skipped():
    adv, train = group_advantages(np.array([[0.5, 0.5, 0.5], [0.0, 1.0, 0.5]]), scale="group")
    assert adv[0].tolist() == [0.0, 0.0, 0.0]
    assert train.tolist() == [[False, False, False], [True, True, True]]
    # batch scaling does not revive a flat group either
    adv, train = group_advantages(np.array([[2.0, 2.0], [0.0, 1.0]]), scale="batch")
    assert adv[0].tolist() == [0.0, 0.0] and train[0].tolist() == [False, False]


def test_advantages_are_clipped():
    adv, _ = group_advantages(np.array([[0.0, 10.0]]), scale="none", clip=2.0)
    assert adv.tolist() == [[-2.0, 2.0]]
    # one outlier in a group of 31: (10 - 10/31) / stdev > 5 before the clip
    row = [0.0] * 30 + [10.0]
    raw = (10.0 - statistics.mean(row)) / (statistics.stdev(row) + EPS)
    assert raw > 5
    adv, _ = group_advantages(np.array([row]), scale="group", clip=5.0)
    assert adv[0, -1] == 5.0
    assert adv[0, 0] == pytest.approx((0.0 - statistics.mean(row)) / (statistics.stdev(row) + EPS))


def test_advantage_errors():
    with pytest.raises(ConfigError, match="scale"):
        group_advantages(np.zeros((2, 3)), scale="global")
    with pytest.raises(ConfigError, match="group_size >= 2"):
        group_advantages(np.zeros((2, 1)))
    with pytest.raises(ConfigError, match="shape"):
        group_advantages(np.zeros(6))
    with pytest.raises(NumericalError, match="group 1, member 2"):
        group_advantages(np.array([[0.0, 1.0, 2.0], [0.0, 1.0, np.nan]]))


# -- PPO loss ---------------------------------------------------------------------------------------------------------

EPS_LOW, EPS_HIGH = 0.1, 0.3
# (log ratio, advantage): inside the range; above 1 + eps_high with A > 0 (clipped) and A < 0 (not clipped);
# below 1 - eps_low with A < 0 (clipped) and A > 0 (not clipped); at exactly 1.
CASES = [(0.05, 1.5), (math.log(1.5), 2.0), (math.log(1.5), -1.0), (math.log(0.8), -0.5), (math.log(0.8), 3.0), (0.0, -2.0)]


def _hand_loss_and_grad(delta: float, a: float) -> tuple[float, float]:
    r = math.exp(delta)
    unclipped = -a * r
    clipped = -a * min(max(r, 1 - EPS_LOW), 1 + EPS_HIGH)
    if unclipped >= clipped:
        return unclipped, -a * r  # d(-a e^delta)/d logp
    return clipped, 0.0


def test_ppo_token_loss_and_gradient_match_hand_computation():
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5, -0.7], dtype=torch.float64)
    delta = torch.tensor([d for d, _ in CASES], dtype=torch.float64)
    adv = torch.tensor([a for _, a in CASES], dtype=torch.float64)
    logp = (old + delta).requires_grad_(True)
    loss, ratio = ppo_token_loss(logp, old, adv, eps_low=EPS_LOW, eps_high=EPS_HIGH)
    loss.sum().backward()
    for i, (d, a) in enumerate(CASES):
        value, grad = _hand_loss_and_grad(d, a)
        assert loss[i].item() == pytest.approx(value, abs=1e-12)
        assert logp.grad[i].item() == pytest.approx(grad, abs=1e-12)
        assert ratio[i].item() == pytest.approx(math.exp(d), abs=1e-12)
    # the clip sides that are active: index 1 (high, A > 0) and index 3 (low, A < 0)
    assert logp.grad[1] == 0 and logp.grad[3] == 0 and logp.grad[2] != 0 and logp.grad[4] != 0


def test_k3_kl_matches_its_formula():
    logp = torch.tensor([-1.0, -2.0, -0.3])
    ref = torch.tensor([-1.0, -1.5, -0.9])
    kl = k3_kl(logp, ref)
    for i in range(3):
        d = ref[i].item() - logp[i].item()
        assert kl[i].item() == pytest.approx(math.exp(d) - d - 1, abs=1e-6)
    assert kl[0].item() == 0.0 and (kl >= 0).all()


def test_grpo_loss_with_kl_and_mask_matches_hand_computation():
    beta = 0.05
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.5, -0.7]], dtype=torch.float64)
    delta = torch.tensor([[0.05, math.log(1.5), 0.2], [math.log(0.8), -0.4, 0.0]], dtype=torch.float64)
    ref = old + torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.0, -0.1]], dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    logp = (old + delta).requires_grad_(True)
    total = 7.0  # tokens of the whole accumulated batch (this micro-batch holds 5)
    loss, stats = grpo_loss(logp, old, adv, mask, total_tokens=total, eps_low=EPS_LOW, eps_high=EPS_HIGH, beta=beta,
                            ref_logp=ref)  # fmt: skip
    loss.backward()
    expected_loss, kl_sum, ratios, low, high = 0.0, 0.0, [], 0, 0
    for b in range(2):
        for t in range(3):
            d, a, k = delta[b, t].item(), adv[b].item(), ref[b, t].item() - (old[b, t].item() + delta[b, t].item())
            pg, pg_grad = _hand_loss_and_grad(d, a)
            kl, kl_grad = math.exp(k) - k - 1, 1 - math.exp(k)  # d kl / d logp
            if mask[b, t]:
                expected_loss += pg + beta * kl
                kl_sum += kl
                ratios.append(math.exp(d))
                low += math.exp(d) < 1 - EPS_LOW and a < 0
                high += math.exp(d) > 1 + EPS_HIGH and a > 0
                assert logp.grad[b, t].item() == pytest.approx((pg_grad + beta * kl_grad) / total, abs=1e-12)
            else:
                assert logp.grad[b, t].item() == 0.0
    assert loss.item() == pytest.approx(expected_loss / total, abs=1e-12)
    assert stats.tokens == 5
    assert stats.kl == pytest.approx(kl_sum, abs=1e-9)
    assert stats.ratio_min == pytest.approx(min(ratios)) and stats.ratio_max == pytest.approx(max(ratios))
    # clipped: (0, 1) on the high side (r = 1.5, A > 0); (1, 0) and (1, 1) on the low side (r < 0.9, A < 0)
    assert (stats.clip_high, stats.clip_low) == (high, low) == (1, 2)
    deltas = [delta[b, t].item() for b in range(2) for t in range(3) if mask[b, t]]
    assert stats.approx_kl == pytest.approx(0.5 * sum(d * d for d in deltas), abs=1e-12)


def test_global_token_mean_over_micro_batches_equals_one_big_batch():
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=gen, dtype=torch.float64) * 3
    logp = (old + 0.3 * torch.randn(4, 6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.2], dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    loss, _ = grpo_loss(logp, old, adv, mask, total_tokens=24)
    (full,) = torch.autograd.grad(loss, logp)
    parts = []
    for rows in (slice(0, 1), slice(1, 4)):
        part_loss, _ = grpo_loss(logp[rows], old[rows], adv[rows], mask[rows], total_tokens=24)
        parts.append(torch.autograd.grad(part_loss, logp)[0])
    assert torch.allclose(parts[0] + parts[1], full, atol=1e-15)


def test_ratio_one_gives_the_plain_policy_gradient():
    old = torch.tensor([[-1.0, -2.0]])
    logp = old.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, old, torch.tensor([0.7]), torch.ones(1, 2, dtype=torch.bool), total_tokens=2)
    loss.backward()
    assert torch.equal(logp.grad, torch.full((1, 2), -0.7 / 2))
    assert stats.ratio_min == 1.0 and stats.ratio_max == 1.0 and stats.clip_low == stats.clip_high == 0


def test_loss_stats_reduce_and_means():
    a = LossStats(tokens=2, pg_loss=1.0, ratio=2.0, ratio_min=0.9, ratio_max=1.1, entropy=4.0)
    b = LossStats(tokens=2, pg_loss=3.0, ratio=2.2, ratio_min=0.8, ratio_max=1.0, entropy=2.0)
    a.add(b)
    round_trip = LossStats.from_vector(a.as_vector(), a.ratio_min, a.ratio_max)
    means = round_trip.means()
    assert means["pg_loss"] == 1.0 and means["entropy"] == 1.5 and means["ratio_mean"] == pytest.approx(1.05)
    assert means["ratio_min"] == 0.8 and means["ratio_max"] == 1.1


def test_grpo_loss_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="must match"):
        grpo_loss(x, torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool), total_tokens=6)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(x, x, torch.zeros(2), torch.ones(2, 3, dtype=torch.bool), total_tokens=6, beta=0.1)
    with pytest.raises(NumericalError, match="GRPO loss"):
        grpo_loss(torch.full((2, 3), float("nan")), x, torch.ones(2), torch.ones(2, 3, dtype=torch.bool), total_tokens=6)
