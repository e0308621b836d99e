"""Tests for learner/algorithms/ppo.py: PPO-clip policy loss, clipped value loss, the adapter."""

import math

import pytest
import torch

from learner.algorithms.base import SequenceInputs
from learner.algorithms.ppo import SPEC, PPOConfig, clipped_policy_loss, sequence_loss, value_loss
from tests.learner.engine_helpers import ragged_mask

NAN = float("nan")


def hand_tokens():
    # ratio = exp(logprobs - old) = [1.5, 0.5, 1.0] on the 3 masked tokens; position 3 is padding (NaN)
    logprobs = torch.tensor([[math.log(1.5) - 1, math.log(0.5) - 2, -0.7, NAN]])
    old = torch.tensor([[-1.0, -2.0, -0.7, NAN]])
    advantages = torch.tensor([[2.0, 1.0, -1.0, NAN]])
    mask = torch.tensor([[True, True, True, False]])
    return logprobs, old, advantages, mask


def test_clipped_policy_loss_hand_computed():
    logprobs, old, advantages, mask = hand_tokens()
    logprobs.requires_grad_(True)
    loss, ratio = clipped_policy_loss(logprobs, old, advantages, mask, clip_eps=0.2)
    # token 0: A = 2,  r = 1.5: max(-3, -2 * clip(1.5) = -2.4) = -2.4   (clipped: no gradient)
    # token 1: A = 1,  r = 0.5: max(-0.5, -1 * clip(0.5) = -0.8) = -0.5 (unclipped: gradient -A r = -0.5)
    # token 2: A = -1, r = 1:   max(1, 1) = 1                           (gradient -A r = 1)
    torch.testing.assert_close(loss, torch.tensor([[-2.4, -0.5, 1.0, 0.0]]))
    torch.testing.assert_close(ratio, torch.tensor([[1.5, 0.5, 1.0, 1.0]]))
    loss.sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -0.5, 1.0, 0.0]]))


def test_adapter_hand_computed_metrics():
    logprobs, old, advantages, mask = hand_tokens()
    inputs = SequenceInputs(logprobs, old, None, advantages, targets=torch.zeros(1), mask=mask)
    loss, metrics = sequence_loss(inputs, PPOConfig(clip_eps=0.2))
    # token mean over the 3 response tokens: (-2.4 - 0.5 + 1) / 3 = -0.633333
    torch.testing.assert_close(loss, torch.tensor([-1.9 / 3]))
    # approx_kl = mean(r - 1 - log r) = [0.5 - 0.405465, -0.5 + 0.693147, 0] / 3 = (0.094535 + 0.193147) / 3
    assert metrics == pytest.approx(
        {
            "learner/ppo/loss": -1.9 / 3,
            "learner/ppo/clip_fraction": 1 / 3,  # token 0 only (A > 0, r > 1.2); token 1 is not clipped
            "learner/ppo/ratio": 1.0,  # (1.5 + 0.5 + 1) / 3
            "learner/ppo/approx_kl": (0.5 - math.log(1.5) - 0.5 - math.log(0.5)) / 3,
            "learner/ppo/advantages": 2 / 3,  # (2 + 1 - 1) / 3
        }
    )
    assert all(isinstance(v, float) for v in metrics.values())


def naive_policy_loss(logprobs, old, advantages, mask, eps):
    """Per-sequence token mean of the clipped loss, one token at a time."""
    out = []
    for i in range(len(mask)):
        terms = []
        for t in range(len(mask[i])):
            if mask[i][t]:
                r = math.exp(logprobs[i][t] - old[i][t])
                a = advantages[i][t]
                terms.append(max(-a * r, -a * min(max(r, 1 - eps), 1 + eps)))
        out.append(sum(terms) / len(terms) if terms else 0.0)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_adapter_matches_naive_loops_with_garbage_outside_the_mask(seed):
    n, t = 6, 8
    g = torch.Generator().manual_seed(seed)
    mask = ragged_mask(n, t, seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    logprobs = old + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.3
    advantages = torch.randn(n, t, generator=g, dtype=torch.float64)
    expected = naive_policy_loss(logprobs.tolist(), old.tolist(), advantages.tolist(), mask.tolist(), 0.2)
    nan = torch.full_like(old, NAN)
    garbage = [torch.where(mask, x, nan) for x in (logprobs, old, advantages)]
    leaf = garbage[0].clone().requires_grad_(True)
    inputs = SequenceInputs(leaf, garbage[1], None, garbage[2], targets=torch.zeros(n), mask=mask)
    loss, metrics = sequence_loss(inputs, PPOConfig(clip_eps=0.2))
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    assert loss[0] == 0.0  # the empty row
    loss.sum().backward()
    assert torch.isfinite(leaf.grad).all() and (leaf.grad[~mask] == 0).all()
    assert all(math.isfinite(v) for v in metrics.values())


def test_zero_advantage_gives_zero_loss_and_gradient():
    g = torch.Generator().manual_seed(3)
    logprobs = (-torch.rand(3, 5, generator=g)).requires_grad_(True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    loss, _ = clipped_policy_loss(logprobs, logprobs.detach() - 0.5, torch.zeros(3, 5), mask, 0.2)
    assert (loss == 0).all()
    loss.sum().backward()
    assert (logprobs.grad == 0).all()


@pytest.mark.parametrize(("advantage", "log_ratio"), [(1.0, math.log(1.5)), (-1.0, math.log(0.5))])
def test_clipped_branch_has_zero_gradient(advantage, log_ratio):
    # A > 0 with r > 1 + eps, or A < 0 with r < 1 - eps: the policy already moved enough
    logprobs = torch.full((1, 2), -1.0 + log_ratio, requires_grad=True)
    loss, _ = clipped_policy_loss(
        logprobs, torch.full((1, 2), -1.0), torch.full((1, 2), advantage), torch.ones(1, 2, dtype=torch.bool), clip_eps=0.2
    )
    loss.sum().backward()
    assert (logprobs.grad == 0).all()
    # -A * clip(r) = -1 * 1.2 = -1.2 or 1 * 0.8 = 0.8
    torch.testing.assert_close(loss, torch.full((1, 2), -1.2 if advantage > 0 else 0.8))


def test_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.0, NAN]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, NAN]])
    returns = torch.tensor([[2.0, 0.45, NAN]])
    mask = torch.tensor([[True, True, False]])
    loss = value_loss(values, old, returns, mask, clip=0.2)
    # token 0: V - old = 0.5 -> clipped to 0.2: V_c = 0.7; max((1 - 2)^2 = 1, (0.7 - 2)^2 = 1.69) / 2 = 0.845
    # token 1: V - old = -0.5 -> V_c = 0.3; max((0 - 0.45)^2 = 0.2025, (0.3 - 0.45)^2 = 0.0225) / 2 = 0.10125
    torch.testing.assert_close(loss, torch.tensor([[0.845, 0.10125, 0.0]]))
    loss.sum().backward()
    # token 0 takes the clipped branch (constant in V): gradient 0; token 1: V - R = -0.45
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.45, 0.0]]))


@pytest.mark.parametrize("seed", range(2))
def test_value_loss_matches_naive_loops(seed):
    g = torch.Generator().manual_seed(seed)
    n, t, clip = 4, 6, 0.2
    mask = ragged_mask(n, t, seed)
    values, old, returns = (torch.randn(n, t, generator=g, dtype=torch.float64) for _ in range(3))
    out = value_loss(values, old, returns, mask, clip)
    expected = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        for j in range(t):
            if mask[i, j]:
                v, o, r = float(values[i, j]), float(old[i, j]), float(returns[i, j])
                v_clipped = o + min(max(v - o, -clip), clip)
                expected[i, j] = 0.5 * max((v - r) ** 2, (v_clipped - r) ** 2)
    torch.testing.assert_close(out, expected)


def test_bad_inputs_and_spec():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"old_logprobs has shape \(2, 4\), expected \(2, 3\)"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3), mask, 0.2)
    with pytest.raises(ValueError, match="clip_eps must be > 0"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), mask, 0.0)
    with pytest.raises(ValueError, match=r"returns has shape"):
        value_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), mask, 0.2)
    with pytest.raises(ValueError, match=r"ppo needs SequenceInputs.advantages"):
        no_advantages = SequenceInputs(torch.zeros(2, 3), torch.zeros(2, 3), None, None, torch.zeros(2), mask)
        sequence_loss(no_advantages, PPOConfig())
    assert (SPEC.name, SPEC.family, SPEC.config_section, SPEC.advantage) == ("ppo", "sequence", "ppo", "gae")
    assert SPEC.needs_reference and SPEC.needs_old_logprobs and SPEC.needs_values and SPEC.needs_rewards
    assert SPEC.sequence_loss is sequence_loss and SPEC.target == "reward"
