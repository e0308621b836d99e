"""Tests for learner/algorithms/ipo.py: online IPO."""

import pytest
import torch

from learner.algorithms.base import PairInputs
from learner.algorithms.dpo import DPOConfig
from learner.algorithms.ipo import SPEC, ipo_loss, pair_loss
from learner.algorithms.mnpo import mnpo_loss


def two_pairs():
    # pair 0: h_pi = -1 - -3 = 2;  h_ref = -2 - -2.5 = 0.5; h_pi - h_ref = 1.5
    # pair 1: h_pi = -2 - -1 = -1; h_ref = -1 - -1 = 0;     h_pi - h_ref = -1
    return dict(
        policy_chosen=torch.tensor([-1.0, -2.0]),
        policy_rejected=torch.tensor([-3.0, -1.0]),
        ref_chosen=torch.tensor([-2.0, -1.0]),
        ref_rejected=torch.tensor([-2.5, -1.0]),
    )


def random_pairs(b, seed):
    g = torch.Generator().manual_seed(seed)
    names = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")
    return {k: -torch.rand(b, generator=g, dtype=torch.float64) * 20 for k in names}


def test_hand_computed_two_pairs():
    loss, metrics = ipo_loss(**two_pairs(), beta=0.5)
    # target 1 / (2 * 0.5) = 1; loss = [(1.5 - 1)^2, (-1 - 1)^2] = [0.25, 4]
    torch.testing.assert_close(loss, torch.tensor([0.25, 4.0]))
    assert metrics["learner/ipo/loss"] == pytest.approx(2.125)
    assert metrics["learner/ipo/logits"] == pytest.approx(0.25)  # mean of [1.5, -1]
    assert metrics["learner/ipo/target"] == 1.0
    assert metrics["learner/ipo/margin"] == pytest.approx(0.5 * 0.25)  # beta * mean(h_pi - h_ref)
    assert metrics["learner/ipo/accuracy"] == 0.5


@pytest.mark.parametrize("seed", range(4))
def test_matches_naive_loops_on_random_inputs(seed):
    beta = [0.01, 0.1, 0.5, 2.0][seed]
    inputs = random_pairs(8, seed)
    loss, _ = ipo_loss(**inputs, beta=beta)
    pc, pr, rc, rr = (v.tolist() for v in inputs.values())
    expected = [((pc[b] - pr[b]) - (rc[b] - rr[b]) - 1 / (2 * beta)) ** 2 for b in range(8)]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_equals_mnpo_with_ratio_one():
    # MNPO with r = 1 and no opponents is online IPO with eta = beta
    inputs = random_pairs(6, seed=9)
    loss, _ = ipo_loss(**inputs, beta=0.3)
    none = torch.zeros(0, 6, dtype=torch.float64)
    expected, _ = mnpo_loss(
        **inputs,
        opponent_chosen=none,
        opponent_rejected=none,
        opponent_weights=torch.zeros(0, dtype=torch.float64),
        ratio=1.0,
        eta=0.3,
    )
    torch.testing.assert_close(loss, expected)


def test_empty_responses_and_gradient():
    zeros = torch.zeros(2)
    loss, _ = ipo_loss(zeros, zeros.clone(), zeros.clone(), zeros.clone(), beta=0.25)
    torch.testing.assert_close(loss, torch.full((2,), 4.0))  # (0 - 1 / 0.5)^2
    inputs = two_pairs()
    policy_chosen = inputs.pop("policy_chosen").requires_grad_(True)
    ref_chosen = inputs.pop("ref_chosen").requires_grad_(True)
    ipo_loss(policy_chosen, ref_chosen=ref_chosen, **inputs, beta=0.5)[0].sum().backward()
    # 2 (h - target) = [2 (1.5 - 1), 2 (-1 - 1)] = [1, -4]: pair 0 overshoots the target, pair 1 falls short
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([1.0, -4.0]))
    assert ref_chosen.grad is None


def test_bad_beta_and_adapter_and_spec():
    with pytest.raises(ValueError, match="beta must be > 0"):
        ipo_loss(**two_pairs(), beta=-1.0)
    inputs = two_pairs()
    pair = PairInputs(**inputs, opponent_chosen=None, opponent_rejected=None, probability=torch.ones(2))
    torch.testing.assert_close(pair_loss(pair, DPOConfig(beta=0.5))[0], torch.tensor([0.25, 4.0]))
    with pytest.raises(ValueError, match="ipo needs reference logprobs"):
        pair_loss(
            PairInputs(inputs["policy_chosen"], inputs["policy_rejected"], None, None, None, None, torch.ones(2)), DPOConfig()
        )
    assert (SPEC.name, SPEC.family, SPEC.config_section) == ("ipo", "pair", "dpo") and SPEC.needs_reference
