"""Tests for learner/algorithms/sppo.py: the SPPO square loss and its token-level adapter."""

import pytest
import torch

from learner.algorithms.base import SequenceInputs
from learner.algorithms.sppo import SPEC, SPPOConfig, sequence_loss, sppo_loss

NAN = float("nan")


def test_hand_computed():
    policy = torch.tensor([-3.0, -5.0], requires_grad=True)
    old = torch.tensor([-3.5, -5.0])
    p = torch.tensor([0.75, 0.25])
    loss, metrics = sppo_loss(policy, old, p, eta=2.0)
    # target = 2 * (P - 1/2) = [0.5, -0.5]; log ratio = [-3 - -3.5, 0] = [0.5, 0]
    # loss = [(0.5 - 0.5)^2, (0 + 0.5)^2] = [0, 0.25]
    torch.testing.assert_close(loss, torch.tensor([0.0, 0.25]))
    assert metrics == pytest.approx(
        {
            "learner/sppo/loss": 0.125,
            "learner/sppo/log_ratio": 0.25,
            "learner/sppo/target": 0.0,
            "learner/sppo/win_probability": 0.5,
        }
    )
    loss.sum().backward()
    # 2 (log ratio - target) = [0, 1]: the loser (P < 1/2) is pushed down
    torch.testing.assert_close(policy.grad, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("seed", range(3))
def test_matches_naive_loops(seed):
    g = torch.Generator().manual_seed(seed)
    eta = [0.5, 2.0, 1000.0][seed]
    policy, old = (-torch.rand(6, generator=g, dtype=torch.float64) * 30 for _ in range(2))
    p = torch.rand(6, generator=g, dtype=torch.float64)
    loss, _ = sppo_loss(policy, old, p, eta)
    expected = [(policy[i].item() - old[i].item() - eta * (p[i].item() - 0.5)) ** 2 for i in range(6)]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_adapter_reduces_tokens_and_ignores_garbage(reduction):
    # row 0: tokens [-1, -2] (sum -3, mean -1.5), old [-1, -1] (sum -2, mean -1); row 1: one token
    logprobs = torch.tensor([[-1.0, -2.0, NAN], [NAN, -0.5, NAN]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, NAN], [NAN, -0.5, NAN]])
    mask = torch.tensor([[True, True, False], [False, True, False]])
    p = torch.tensor([0.25, 1.0])
    inputs = SequenceInputs(logprobs, old, None, None, targets=p, mask=mask)
    loss, _ = sequence_loss(inputs, SPPOConfig(eta=1.0, logprob_reduction=reduction))
    # target = [-0.25, 0.5]; log ratio: sum [-1, 0], mean [-0.5, 0]
    # sum: [(-1 + 0.25)^2, (0 - 0.5)^2] = [0.5625, 0.25]; mean: [(-0.5 + 0.25)^2, 0.25] = [0.0625, 0.25]
    torch.testing.assert_close(loss, torch.tensor([0.5625, 0.25] if reduction == "sum" else [0.0625, 0.25]))
    loss.sum().backward()
    assert torch.isfinite(logprobs.grad).all() and (logprobs.grad[~mask] == 0).all()


def test_on_policy_first_epoch_target_only():
    # logp = logp_t (first pass of a step): loss = (eta (P - 1/2))^2
    policy = torch.tensor([-4.0, -2.0])
    loss, _ = sppo_loss(policy, policy.clone(), torch.tensor([1.0, 0.5]), eta=3.0)
    torch.testing.assert_close(loss, torch.tensor([2.25, 0.0]))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(old_logprobs=torch.zeros(3)), r"old_logprobs has shape \(3,\), expected \(2,\)"),
        (dict(win_probability=torch.tensor([0.5, 1.5])), r"win_probability must be in \[0, 1\]"),
        (dict(win_probability=torch.tensor([0.5, NAN])), r"win_probability must be in \[0, 1\]"),
        (dict(policy_logprobs=torch.zeros(2, 2)), r"non-empty \[N\]"),
        (dict(eta=0.0), r"eta must be > 0"),
    ],
)
def test_bad_inputs_raise(change, match):
    kwargs = dict(policy_logprobs=torch.zeros(2), old_logprobs=torch.zeros(2), win_probability=torch.ones(2), eta=1.0)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        sppo_loss(**kwargs)


def test_adapter_needs_old_logprobs_and_spec():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"sppo needs SequenceInputs.old_logprobs"):
        sequence_loss(SequenceInputs(torch.zeros(2, 3), None, None, None, torch.ones(2), mask), SPPOConfig())
    assert (SPEC.name, SPEC.family, SPEC.config_section) == ("sppo", "sequence", "sppo")
    assert (SPEC.advantage, SPEC.target) == (None, "win_probability")
    assert not SPEC.needs_reference and SPEC.needs_old_logprobs and not SPEC.needs_values
