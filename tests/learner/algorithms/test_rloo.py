"""Tests for learner/algorithms/rloo.py: PPO-clip on leave-one-out advantages."""

import math

import pytest
import torch

from learner.advantages import leave_one_out
from learner.algorithms.base import SequenceInputs
from learner.algorithms.ppo import clipped_sequence_loss
from learner.algorithms.rloo import SPEC, RLOOConfig, sequence_loss


def test_on_policy_step_is_reinforce_with_leave_one_out_baseline():
    # K = 3 samples of one prompt, rewards [1, 2, 6] -> A = [1 - 4, 2 - 3.5, 6 - 1.5] = [-3, -1.5, 4.5]
    a = leave_one_out(torch.tensor([[1.0, 2.0, 6.0]])).reshape(3, 1)
    torch.testing.assert_close(a.flatten(), torch.tensor([-3.0, -1.5, 4.5]))
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    logprobs = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, float("nan"), 3.0], [-1.0, -1.0, -1.0]], requires_grad=True)
    inputs = SequenceInputs(logprobs, logprobs.detach(), None, a.expand(3, 3), torch.zeros(3), mask)
    loss, metrics = sequence_loss(inputs, RLOOConfig())
    # ratio 1 everywhere: per-token -A, token mean per sequence -A
    torch.testing.assert_close(loss, torch.tensor([3.0, 1.5, -4.5]))
    loss.sum().backward()
    # REINFORCE: d loss_i / d logp_t = -A_i / |y_i| = [1.5, 1.5], [1.5], [-1.5, -1.5, -1.5]
    expected = torch.tensor([[1.5, 1.5, 0.0], [1.5, 0.0, 0.0], [-1.5, -1.5, -1.5]])
    torch.testing.assert_close(logprobs.grad, expected)
    assert metrics["learner/rloo/ratio"] == 1.0 and metrics["learner/rloo/approx_kl"] == 0.0


@pytest.mark.parametrize("seed", range(2))
def test_same_math_as_ppo_clip(seed):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(4, 5, generator=g, dtype=torch.float64)
    logprobs = old + torch.randn(4, 5, generator=g, dtype=torch.float64) * 0.3
    adv = leave_one_out(torch.randn(2, 2, generator=g, dtype=torch.float64)).reshape(4, 1).expand(4, 5)
    mask = torch.rand(4, 5, generator=g) > 0.3
    inputs = SequenceInputs(logprobs, old, None, adv, torch.zeros(4), mask)
    loss, metrics = sequence_loss(inputs, RLOOConfig(clip_eps=0.1))
    expected, ppo_metrics = clipped_sequence_loss(inputs, 0.1, "ppo")
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert metrics == {k.replace("learner/ppo/", "learner/rloo/"): v for k, v in ppo_metrics.items()}
    assert all(math.isfinite(v) for v in metrics.values())


def test_missing_inputs_and_spec():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rloo needs SequenceInputs.old_logprobs"):
        no_old = SequenceInputs(torch.zeros(2, 3), None, None, torch.zeros(2, 3), torch.zeros(2), mask)
        sequence_loss(no_old, RLOOConfig())
    assert (SPEC.name, SPEC.family, SPEC.config_section) == ("rloo", "sequence", "rloo")
    assert SPEC.advantage == "leave_one_out"
    assert SPEC.needs_reference and SPEC.needs_old_logprobs and SPEC.needs_rewards and not SPEC.needs_values
