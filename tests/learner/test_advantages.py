"""Tests for learner/advantages.py: KL-penalised rewards, GAE, whitening, group / leave-one-out."""

import math

import pytest
import torch

from learner.advantages import (
    check_contiguous,
    gae,
    group_normalised,
    kl_penalised_rewards,
    leave_one_out,
    masked_moments,
    mean_var,
    whiten,
)
from tests.learner.engine_helpers import ragged_mask

NAN = float("nan")


def garbage_outside(x, mask):
    """NaN wherever the mask is off: results must not change."""
    return torch.where(mask, x, torch.full_like(x, NAN))


# ---------------------------------------------------------------- kl_penalised_rewards
def test_kl_penalised_rewards_hand_computed():
    scores = torch.tensor([3.0, -20.0, 5.0])
    logprobs = torch.tensor([[-1.0, -2.0, NAN], [NAN, -1.0, -1.0], [NAN, NAN, NAN]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, 7.0], [NAN, -1.0, -3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, True, False], [False, True, True], [False, False, False]])
    rewards = kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1, clip=10.0)
    # row 0: k1 = [-1 - -1.5, -2 - -1] = [0.5, -1] -> -0.1 k1 = [-0.05, 0.1]; score 3 on position 1
    # row 1: k1 = [0, -1 - -3 = 2] -> [0, -0.2]; score clamp(-20, -10, 10) = -10 on position 2
    # row 2: nothing masked -> all zeros, the score is dropped
    expected = torch.tensor([[-0.05, 3.1, 0.0], [0.0, 0.0, -10.2], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected)
    unclipped = kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1, clip=None)
    torch.testing.assert_close(unclipped[1, 2], torch.tensor(-20.2))


@pytest.mark.parametrize("seed", range(3))
def test_kl_penalised_rewards_matches_naive_loops(seed):
    n, t = 6, 7
    g = torch.Generator().manual_seed(seed)
    mask = ragged_mask(n, t, seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64) * 8
    logprobs = -torch.rand(n, t, generator=g, dtype=torch.float64) * 5
    ref_logprobs = -torch.rand(n, t, generator=g, dtype=torch.float64) * 5
    out = kl_penalised_rewards(scores, garbage_outside(logprobs, mask), ref_logprobs, mask, kl_coef=0.05, clip=4.0)
    expected = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        positions = [j for j in range(t) if mask[i, j]]
        for j in positions:
            expected[i, j] = -0.05 * (logprobs[i, j] - ref_logprobs[i, j])
        if positions:
            expected[i, positions[-1]] += min(max(float(scores[i]), -4.0), 4.0)
    torch.testing.assert_close(out, expected)


def test_kl_penalised_rewards_bad_shapes():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"scores has shape \(3,\), expected \(2,\)"):
        kl_penalised_rewards(torch.zeros(3), torch.zeros(2, 3), torch.zeros(2, 3), mask, 0.1, None)
    with pytest.raises(ValueError, match=r"ref_logprobs has shape \(2, 4\)"):
        kl_penalised_rewards(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 4), mask, 0.1, None)
    with pytest.raises(ValueError, match=r"clip must be > 0"):
        kl_penalised_rewards(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 3), mask, 0.1, 0.0)


# ---------------------------------------------------------------- GAE
def test_gae_hand_computed_three_token_response():
    # positions: 0 = prompt, 1..3 = response, 4 = padding (garbage everywhere off the mask)
    mask = torch.tensor([[False, True, True, True, False], [False] * 5])
    rewards = torch.tensor([[NAN, 0.1, -0.2, 1.0, NAN], [NAN] * 5])
    values = torch.tensor([[NAN, 0.5, 0.4, 0.6, NAN], [NAN] * 5])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # t = 3 (last): delta = 1.0 + 1 * 0 (terminal) - 0.6 = 0.4;   A = 0.4
    # t = 2:        delta = -0.2 + 0.6 - 0.4 = 0.0;               A = 0.0 + 0.95 * 0.4  = 0.38
    # t = 1:        delta = 0.1 + 0.4 - 0.5 = 0.0;                A = 0.0 + 0.95 * 0.38 = 0.361
    # returns = A + V = [0.361 + 0.5, 0.38 + 0.4, 0.4 + 0.6] = [0.861, 0.78, 1.0]
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 0.361, 0.38, 0.4, 0.0], [0.0] * 5]))
    torch.testing.assert_close(returns, torch.tensor([[0.0, 0.861, 0.78, 1.0, 0.0], [0.0] * 5]))


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    # lam = gamma = 1: A_t = sum_{s >= t} r_s - V_t (the Monte Carlo return)
    mask = torch.ones(1, 3, dtype=torch.bool)
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, -1.0, 2.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[6.0 - 0.5, 5.0 + 1.0, 3.0 - 2.0]]))
    torch.testing.assert_close(returns, torch.tensor([[6.0, 5.0, 3.0]]))


def naive_gae(rewards, values, mask, gamma, lam):
    """One row at a time over its response positions only."""
    n, t = rewards.shape
    advantages = torch.zeros(n, t, dtype=rewards.dtype)
    returns = torch.zeros(n, t, dtype=rewards.dtype)
    for i in range(n):
        positions = [j for j in range(t) if mask[i, j]]
        running = 0.0
        for k in reversed(range(len(positions))):
            j = positions[k]
            next_value = float(values[i, positions[k + 1]]) if k + 1 < len(positions) else 0.0
            delta = float(rewards[i, j]) + gamma * next_value - float(values[i, j])
            running = delta + gamma * lam * running
            advantages[i, j] = running
            returns[i, j] = running + float(values[i, j])
    return advantages, returns


@pytest.mark.parametrize(("seed", "gamma", "lam"), [(0, 1.0, 0.95), (1, 0.9, 0.8), (2, 1.0, 0.0), (3, 0.5, 1.0)])
def test_gae_matches_naive_loops_on_ragged_masks(seed, gamma, lam):
    n, t = 7, 9
    g = torch.Generator().manual_seed(seed)
    mask = ragged_mask(n, t, seed)
    rewards = torch.randn(n, t, generator=g, dtype=torch.float64)
    values = torch.randn(n, t, generator=g, dtype=torch.float64)
    advantages, returns = gae(garbage_outside(rewards, mask), garbage_outside(values, mask), mask, gamma, lam)
    expected_adv, expected_ret = naive_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, expected_adv)
    torch.testing.assert_close(returns, expected_ret)


def test_gae_rejects_gaps_in_the_mask():
    mask = torch.tensor([[True, True, False], [True, False, True]])
    with pytest.raises(ValueError, match=r"contiguous in each row; rows \[1\] have gaps"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), mask, 1.0, 0.95)
    check_contiguous(torch.tensor([[False, True, True], [False, False, False]]))  # fine


# ---------------------------------------------------------------- whitening
def test_whiten_hand_computed_and_moments():
    x = torch.tensor([[1.0, 2.0, NAN], [3.0, 100.0, NAN]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # masked values 1, 2, 3: mean 2, population variance ((1)^2 + 0 + 1^2) / 3 = 2/3
    s = 1 / math.sqrt(2 / 3)
    expected = torch.tensor([[-s, 0.0, 0.0], [s, 0.0, 0.0]])
    torch.testing.assert_close(whiten(x, mask, eps=0.0), expected)
    assert masked_moments(x, mask) == (6.0, 14.0, 3)  # sum 1 + 2 + 3; squares 1 + 4 + 9
    mean, var = mean_var(6.0, 14.0, 3)  # 14 / 3 - 2^2 = 2/3
    assert mean == 2.0 and var == pytest.approx(2 / 3)
    torch.testing.assert_close(whiten(x, mask, mean=mean, var=var, eps=0.0), expected)


def test_whiten_from_summed_moments_equals_whole_batch():
    # two "ranks" all-reduce their moments: same result as whitening the concatenation
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3 + 1
    mask = ragged_mask(6, 5, seed=4)
    halves = [(x[:3], mask[:3]), (x[3:], mask[3:])]
    moments = [masked_moments(a, m) for a, m in halves]
    mean, var = mean_var(*(sum(parts) for parts in zip(*moments)))
    per_rank = torch.cat([whiten(a, m, mean=mean, var=var) for a, m in halves])
    torch.testing.assert_close(per_rank, whiten(x, mask))
    ours = whiten(x, mask)[mask]
    assert abs(float(ours.mean())) < 1e-12 and float(ours.var(unbiased=False)) == pytest.approx(1.0, rel=1e-6)


def test_whiten_edge_cases():
    empty = torch.zeros(2, 3, dtype=torch.bool)
    torch.testing.assert_close(whiten(torch.full((2, 3), NAN), empty), torch.zeros(2, 3))
    assert masked_moments(torch.ones(2, 3), empty) == (0.0, 0.0, 0) and mean_var(0.0, 0.0, 0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="both mean and var"):
        whiten(torch.ones(2, 3), empty, mean=1.0)


# ---------------------------------------------------------------- group / leave-one-out
def test_group_normalised_hand_computed():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    # row 0: mean 2, sample std sqrt((1 + 0 + 1) / (3 - 1)) = 1 -> (r - 2) / (1 + 1e-4)
    # row 1: all equal -> std 0 -> advantages 0
    expected = torch.tensor([[-1 / 1.0001, 0.0, 1 / 1.0001], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(group_normalised(rewards, eps=1e-4), expected)


def test_leave_one_out_hand_computed():
    # [1, 2, 3]: 1 - (2 + 3)/2 = -1.5; 2 - (1 + 3)/2 = 0; 3 - (1 + 2)/2 = 1.5
    # [0, 4] (K = 2): each against the other: -4, 4
    torch.testing.assert_close(leave_one_out(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[-1.5, 0.0, 1.5]]))
    torch.testing.assert_close(leave_one_out(torch.tensor([[0.0, 4.0]])), torch.tensor([[-4.0, 4.0]]))


@pytest.mark.parametrize("seed", range(3))
def test_group_estimators_match_naive_loops(seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(4, 5, generator=g, dtype=torch.float64) * 2
    norm = torch.zeros_like(rewards)
    loo = torch.zeros_like(rewards)
    for i, row in enumerate(rewards.tolist()):
        k = len(row)
        mean = sum(row) / k
        std = math.sqrt(sum((r - mean) ** 2 for r in row) / (k - 1))
        for j, r in enumerate(row):
            norm[i, j] = (r - mean) / (std + 1e-4)
            loo[i, j] = r - sum(row[m] for m in range(k) if m != j) / (k - 1)
    torch.testing.assert_close(group_normalised(rewards, eps=1e-4), norm)
    torch.testing.assert_close(leave_one_out(rewards), loo)
    torch.testing.assert_close(leave_one_out(rewards).sum(-1), torch.zeros(4, dtype=torch.float64))
    # RLOO is GRPO's centring scaled by K / (K - 1)
    torch.testing.assert_close(leave_one_out(rewards), (rewards - rewards.mean(-1, keepdim=True)) * 5 / 4)


@pytest.mark.parametrize("shape", [(3, 1), (4,), (2, 3, 2)])
def test_group_estimators_need_k_at_least_two(shape):
    with pytest.raises(ValueError, match=r"\[G, K\] with K >= 2"):
        group_normalised(torch.zeros(shape), eps=1e-4)
    with pytest.raises(ValueError, match=r"\[G, K\] with K >= 2"):
        leave_one_out(torch.zeros(shape))


def test_truncated_importance_weights_hand_computed():
    from learner.advantages import truncated_importance_weights

    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    sampler = torch.tensor([[-1.5, -1.0, -3.0], [float("nan"), -1.0, -1.0]])
    mask = torch.tensor([[True, True, True], [False, True, False]])
    w = truncated_importance_weights(logprobs, sampler, mask, clip=2.0)
    expected = torch.tensor([[math.exp(0.5), math.exp(-1.0), 2.0], [1.0, 1.0, 1.0]])  # e^2.5 truncated to 2
    assert torch.allclose(w, expected)
    with pytest.raises(ValueError, match="clip must be > 0"):
        truncated_importance_weights(logprobs, sampler, mask, clip=0.0)


# ---------------------------------------------------------------- a zero KL weight reads no reference
def _estimator_inputs(ref, seed=0, k=4, groups=3, t=7):
    from learner.advantages import AdvantageInputs

    g = torch.Generator().manual_seed(seed)
    n = k * groups
    mask = ragged_mask(n, t, seed)
    mask[0, 2:5] = True  # ragged_mask leaves row 0 empty
    old = torch.randn(n, t, generator=g)
    return AdvantageInputs(torch.randn(n, generator=g), old, ref, torch.randn(n, t, generator=g), mask, k, lambda xs: xs)


@pytest.mark.parametrize("name", ["gae", "leave_one_out"])
def test_estimators_at_kl_zero_give_the_same_advantages_without_a_reference(name):
    """At kl_coef 0 the learner runs no reference pass: ref_logprobs=None must give exactly what
    any reference gives (the KL term is multiplied by 0), and any reference must not matter."""
    from dataclasses import replace

    from learner.advantages import ESTIMATORS
    from learner.algorithms.ppo import PPOConfig
    from learner.algorithms.rloo import RLOOConfig

    cfg = PPOConfig(kl_coef=0.0) if name == "gae" else RLOOConfig(kl_coef=0.0)
    without = _estimator_inputs(None)
    adv, returns, metrics = ESTIMATORS[name](without, cfg)
    for seed in (1, 2):
        ref = torch.randn(without.mask.shape, generator=torch.Generator().manual_seed(seed)) * 3
        adv_ref, returns_ref, metrics_ref = ESTIMATORS[name](replace(without, ref_logprobs=ref), cfg)
        torch.testing.assert_close(adv, adv_ref, rtol=0, atol=0)
        torch.testing.assert_close(returns, returns_ref, rtol=0, atol=0)
        assert metrics == metrics_ref
    # nor do the old logprobs, read only for the KL term: the learner skips their pass without a reference
    adv_no_old, returns_no_old, _ = ESTIMATORS[name](replace(without, old_logprobs=None), cfg)
    torch.testing.assert_close(adv, adv_no_old, rtol=0, atol=0)
    torch.testing.assert_close(returns, returns_no_old, rtol=0, atol=0)
    assert adv.abs().sum() > 0  # not trivially zero
    # and a positive weight with a reference does change them (the comparison can fail)
    positive = PPOConfig(kl_coef=0.5) if name == "gae" else RLOOConfig(kl_coef=0.5)
    shifted, _, _ = ESTIMATORS[name](replace(without, ref_logprobs=ref), positive)
    assert (shifted - adv).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["gae", "leave_one_out"])
def test_estimators_with_a_positive_kl_and_no_reference_name_the_field(name):
    from dataclasses import replace

    from learner.advantages import ESTIMATORS
    from learner.algorithms.ppo import PPOConfig
    from learner.algorithms.rloo import RLOOConfig

    cfg = PPOConfig(kl_coef=0.05) if name == "gae" else RLOOConfig(kl_coef=0.05)
    with pytest.raises(ValueError, match=rf"the '{name}' advantage estimator: kl_coef=0.05 > 0 needs ref_logprobs"):
        ESTIMATORS[name](_estimator_inputs(None), cfg)
    # and with a reference, the KL term needs the old logprobs
    inputs = _estimator_inputs(torch.zeros(_estimator_inputs(None).mask.shape))
    with pytest.raises(ValueError, match=rf"the '{name}' advantage estimator needs old logprobs"):
        ESTIMATORS[name](replace(inputs, old_logprobs=None), cfg)


def test_kl_penalised_rewards_without_a_reference():
    """None is the judged score on the last token only, as a zero weight on any reference; > 0 refuses it."""
    mask = torch.tensor([[False, True, True], [True, True, False]])
    scores, logprobs = torch.tensor([3.0, -20.0]), torch.randn(2, 3)
    expected = torch.tensor([[0.0, 0.0, 3.0], [0.0, -10.0, 0.0]])
    torch.testing.assert_close(kl_penalised_rewards(scores, logprobs, None, mask, 0.0, 10.0), expected)
    torch.testing.assert_close(kl_penalised_rewards(scores, logprobs, torch.randn(2, 3), mask, 0.0, 10.0), expected)
    with pytest.raises(ValueError, match=r"kl_penalised_rewards: kl_coef=0.1 > 0 needs ref_logprobs"):
        kl_penalised_rewards(scores, logprobs, None, mask, 0.1, 10.0)
    torch.testing.assert_close(kl_penalised_rewards(scores, None, None, mask, 0.0, 10.0), expected)  # not read
    with pytest.raises(ValueError, match=r"the KL term needs logprobs"):
        kl_penalised_rewards(scores, None, torch.randn(2, 3), mask, 0.1, 10.0)
