"""Tests for learner/algorithms/osp.py: the SPCE loss of Online Self-Preferring."""

import math

import pytest
import torch

from learner.algorithms.base import PairInputs
from learner.algorithms.dpo import dpo_loss
from learner.algorithms.osp import SPEC, OSPConfig, pair_loss, spce_loss

LN3 = math.log(3.0)


def random_pairs(b, seed):
    g = torch.Generator().manual_seed(seed)
    names = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")
    return {k: -torch.rand(b, generator=g, dtype=torch.float64) * 20 for k in names}


def test_hand_computed_minimum_at_sigma_equal_p():
    # Delta = ln 3 -> sigma(Delta) = 3/4 = p: loss = -(0.75 log 0.75 + 0.25 log 0.25)
    #   = 0.75 * 0.287682 + 0.25 * 1.386294 = 0.215762 + 0.346574 = 0.562335 (the entropy of p), gradient 0
    policy_chosen = torch.tensor([LN3], requires_grad=True)
    zero = torch.zeros(1)
    loss, metrics = spce_loss(policy_chosen, zero, zero, zero, probability=torch.tensor([0.75]), beta=1.0)
    torch.testing.assert_close(loss, torch.tensor([0.5623351]))
    loss.sum().backward()
    # d loss / d Delta = sigma(Delta) - p = 0
    torch.testing.assert_close(policy_chosen.grad, torch.zeros(1))
    assert metrics["learner/osp/probability"] == 0.75 and metrics["learner/osp/accuracy"] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_matches_naive_loops_on_random_inputs(seed):
    beta = [0.01, 0.1, 0.5, 2.0][seed]
    inputs = random_pairs(8, seed)
    p = torch.rand(8, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    loss, _ = spce_loss(**inputs, probability=p, beta=beta)
    pc, pr, rc, rr = (v.tolist() for v in inputs.values())
    expected = []
    for b in range(8):
        delta = beta * ((pc[b] - pr[b]) - (rc[b] - rr[b]))
        expected.append(p[b].item() * math.log1p(math.exp(-delta)) + (1 - p[b].item()) * math.log1p(math.exp(delta)))
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_p_one_is_dpo_and_p_zero_is_dpo_on_the_swapped_pair():
    inputs = random_pairs(7, seed=4)
    ones = torch.ones(7, dtype=torch.float64)
    torch.testing.assert_close(
        spce_loss(**inputs, probability=ones, beta=0.3)[0], dpo_loss(**inputs, beta=0.3)[0], rtol=0, atol=0
    )
    swapped = dict(
        policy_chosen=inputs["policy_rejected"],
        policy_rejected=inputs["policy_chosen"],
        ref_chosen=inputs["ref_rejected"],
        ref_rejected=inputs["ref_chosen"],
    )
    torch.testing.assert_close(spce_loss(**inputs, probability=ones * 0, beta=0.3)[0], dpo_loss(**swapped, beta=0.3)[0])


def test_half_probability_pulls_the_margin_to_zero():
    # p = 1/2: gradient w.r.t. policy_chosen = beta (sigma(Delta) - 1/2), sign of Delta
    policy_chosen = torch.tensor([1.0, -1.0], requires_grad=True)
    zero = torch.zeros(2)
    spce_loss(policy_chosen, zero, zero, zero, probability=torch.full((2,), 0.5), beta=1.0)[0].sum().backward()
    torch.testing.assert_close(policy_chosen.grad, torch.sigmoid(torch.tensor([1.0, -1.0])) - 0.5)
    assert policy_chosen.grad[0] > 0 > policy_chosen.grad[1]


def test_empty_responses_give_log2():
    zero = torch.zeros(3)
    loss, _ = spce_loss(zero, zero, zero, zero, probability=torch.tensor([0.0, 0.3, 1.0]), beta=0.1)
    torch.testing.assert_close(loss, torch.full((3,), math.log(2.0)))


@pytest.mark.parametrize("bad", [[1.2, 0.5], [-0.1, 0.5], [float("nan"), 0.5]])
def test_probability_out_of_range_raises(bad):
    zero = torch.zeros(2)
    with pytest.raises(ValueError, match=r"probability must be in \[0, 1\]"):
        spce_loss(zero, zero, zero, zero, probability=torch.tensor(bad), beta=0.1)
    with pytest.raises(ValueError, match=r"probability has shape \(3,\), expected \(2,\)"):
        spce_loss(zero, zero, zero, zero, probability=torch.ones(3), beta=0.1)


def test_adapter_uses_pairing_probability_and_spec():
    inputs = random_pairs(4, seed=2)
    p = torch.tensor([0.9, 0.6, 0.5, 1.0], dtype=torch.float64)
    pair = PairInputs(**inputs, opponent_chosen=None, opponent_rejected=None, probability=p)
    loss, metrics = pair_loss(pair, OSPConfig(beta=0.2))
    torch.testing.assert_close(loss, spce_loss(**inputs, probability=p, beta=0.2)[0])
    assert metrics["learner/osp/probability"] == pytest.approx(0.75)
    assert (SPEC.name, SPEC.family, SPEC.config_section) == ("osp", "pair", "osp")
    assert SPEC.needs_reference and SPEC.needs_self_judge and SPEC.default_judges == "deploy/judges/self.yaml"
