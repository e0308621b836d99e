"""Tests for learner/algorithms/grpo.py: PPO-clip plus k3 KL in the loss on group advantages."""

import math

import pytest
import torch

from learner.advantages import group_normalised
from learner.algorithms.base import SequenceInputs
from learner.algorithms.grpo import SPEC, GRPOConfig, grpo_token_loss, sequence_loss
from learner.algorithms.ppo import clipped_policy_loss

NAN = float("nan")


def test_hand_computed():
    # ratio 1 (logprobs = old), A = 1 on both tokens: clipped term -1 each
    # k3 with d = ref - logp = [ln 2, 0]: [2 - ln 2 - 1, 0] = [0.306853, 0]; kl_coef 0.1
    # per token: [-1 + 0.0306853, -1]; per sequence (token mean): -0.98465735
    logprobs = torch.tensor([[-1.0, -2.0, NAN]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0, NAN]])
    ref = torch.tensor([[-1.0 + math.log(2.0), -2.0, NAN]])
    mask = torch.tensor([[True, True, False]])
    inputs = SequenceInputs(logprobs, old, ref, torch.tensor([[1.0, 1.0, NAN]]), torch.zeros(1), mask)
    loss, metrics = sequence_loss(inputs, GRPOConfig(kl_coef=0.1, clip_eps=0.2))
    k3 = 1.0 - math.log(2.0)
    torch.testing.assert_close(loss, torch.tensor([(-1 + 0.1 * k3 - 1) / 2]))
    assert metrics["learner/grpo/kl"] == pytest.approx(k3 / 2)
    assert metrics["learner/grpo/advantages"] == 1.0 and metrics["learner/grpo/clip_fraction"] == 0.0
    loss.sum().backward()
    # d/dlogp: clipped term -A r = -1; k3 term kl_coef (1 - exp(d)) = 0.1 * (1 - 2) = -0.1 on token 0; / 2 tokens
    torch.testing.assert_close(logprobs.grad, torch.tensor([[(-1 - 0.1) / 2, -1 / 2, 0.0]]))


@pytest.mark.parametrize("seed", range(3))
def test_matches_naive_loops(seed):
    g = torch.Generator().manual_seed(seed)
    n, t, eps, beta = 5, 6, 0.2, 0.04
    mask = torch.rand(n, t, generator=g) > 0.3
    mask[0] = False
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    logprobs = old + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.3
    ref = old + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(n, 1, generator=g, dtype=torch.float64).expand(n, t)  # constant per sequence
    nan = torch.full_like(old, NAN)
    inputs = SequenceInputs(*(torch.where(mask, x, nan) for x in (logprobs, old, ref, adv)), targets=torch.zeros(n), mask=mask)
    loss, _ = sequence_loss(inputs, GRPOConfig(kl_coef=beta, clip_eps=eps))
    expected = []
    for i in range(n):
        terms = []
        for j in range(t):
            if mask[i, j]:
                r = math.exp(logprobs[i, j] - old[i, j])
                a = float(adv[i, j])
                d = float(ref[i, j] - logprobs[i, j])
                terms.append(max(-a * r, -a * min(max(r, 1 - eps), 1 + eps)) + beta * (math.exp(d) - d - 1))
        expected.append(sum(terms) / len(terms) if terms else 0.0)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_zero_kl_coef_is_ppo_clip_and_needs_no_reference():
    g = torch.Generator().manual_seed(4)
    logprobs, old, adv = (torch.randn(3, 4, generator=g) for _ in range(3))
    mask = torch.ones(3, 4, dtype=torch.bool)
    per_token, ratio, kl = grpo_token_loss(logprobs, old, None, adv, mask, clip_eps=0.2, kl_coef=0.0)
    expected, expected_ratio = clipped_policy_loss(logprobs, old, adv, mask, 0.2)
    torch.testing.assert_close(per_token, expected, rtol=0, atol=0)
    assert (kl == 0).all()
    with pytest.raises(ValueError, match=r"kl_coef=0.1 > 0 needs ref_logprobs"):
        grpo_token_loss(logprobs, old, None, adv, mask, clip_eps=0.2, kl_coef=0.1)


def test_group_advantages_at_ratio_one_give_minus_a_per_sequence():
    # two prompts x K = 2: rewards [[1, 3], [0, 0]] -> A = [[-1, 1], [0, 0]] / (sqrt(2) + 1e-4)
    rewards = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    a = group_normalised(rewards, eps=1e-4).reshape(4, 1).expand(4, 3)
    logprobs = torch.full((4, 3), -1.0, requires_grad=True)
    mask = torch.ones(4, 3, dtype=torch.bool)
    inputs = SequenceInputs(logprobs, logprobs.detach(), logprobs.detach(), a, rewards.flatten(), mask)
    loss, _ = sequence_loss(inputs, GRPOConfig())
    s = math.sqrt(2.0) + 1e-4  # sample std of [1, 3] is sqrt(2)
    torch.testing.assert_close(loss, torch.tensor([1 / s, -1 / s, 0.0, 0.0]))


def test_spec():
    assert (SPEC.name, SPEC.family, SPEC.config_section, SPEC.advantage) == ("grpo", "sequence", "grpo", "group")
    assert SPEC.needs_reference and SPEC.needs_old_logprobs and SPEC.needs_rewards and not SPEC.needs_values
    assert SPEC.sequence_loss is sequence_loss
