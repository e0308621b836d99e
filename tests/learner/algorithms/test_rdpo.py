"""Tests for learner/algorithms/rdpo.py: robust DPO under a known label flip rate."""

import math

import pytest
import torch

from learner.algorithms.base import PairInputs
from learner.algorithms.dpo import DPOConfig, dpo_loss
from learner.algorithms.rdpo import SPEC, pair_loss, rdpo_loss

LN3 = math.log(3.0)


def random_pairs(b, seed):
    g = torch.Generator().manual_seed(seed)
    names = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")
    return {k: -torch.rand(b, generator=g, dtype=torch.float64) * 20 for k in names}


def swapped(inputs):
    """The same pairs with the labels flipped."""
    return dict(
        policy_chosen=inputs["policy_rejected"],
        policy_rejected=inputs["policy_chosen"],
        ref_chosen=inputs["ref_rejected"],
        ref_rejected=inputs["ref_chosen"],
    )


def test_hand_computed():
    # Delta = 1 * (ln 3 - 0) = ln 3: log sigma(Delta) = log(3/4), log sigma(-Delta) = log(1/4)
    # eps = 0.25: [-(0.75) log(3/4) + 0.25 log(1/4)] / (1 - 0.5) = 1.5 log(4/3) - 0.5 log 4
    #           = 1.5 * 0.287682 - 0.5 * 1.386294 = 0.431523 - 0.693147 = -0.261624 (negative: see docstring)
    zero = torch.zeros(1)
    loss, metrics = rdpo_loss(torch.tensor([LN3]), zero, zero, zero, beta=1.0, flip_rate=0.25)
    torch.testing.assert_close(loss, torch.tensor([1.5 * math.log(4 / 3) - 0.5 * math.log(4)]))
    assert loss.item() == pytest.approx(-0.261624, abs=1e-6)
    assert metrics["learner/rdpo/accuracy"] == 1.0 and metrics["learner/rdpo/margin"] == pytest.approx(LN3)


@pytest.mark.parametrize("seed", range(4))
def test_matches_naive_loops_on_random_inputs(seed):
    beta, eps = [(0.1, 0.0), (0.1, 0.1), (0.5, 0.3), (2.0, 0.49)][seed]
    inputs = random_pairs(8, seed)
    loss, _ = rdpo_loss(**inputs, beta=beta, flip_rate=eps)
    pc, pr, rc, rr = (v.tolist() for v in inputs.values())
    expected = []
    for b in range(8):
        delta = beta * ((pc[b] - pr[b]) - (rc[b] - rr[b]))
        log_sig = -math.log1p(math.exp(-delta))  # log sigma(delta)
        log_sig_neg = -math.log1p(math.exp(delta))  # log sigma(-delta)
        expected.append((-(1 - eps) * log_sig + eps * log_sig_neg) / (1 - 2 * eps))
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_zero_flip_rate_is_dpo():
    inputs = random_pairs(7, seed=5)
    torch.testing.assert_close(rdpo_loss(**inputs, beta=0.2, flip_rate=0.0)[0], dpo_loss(**inputs, beta=0.2)[0], rtol=0, atol=0)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_unbiased_under_label_flips(eps):
    # E over flips (prob eps) of the rDPO loss on the observed labels = DPO loss on the clean labels
    inputs = random_pairs(7, seed=6)
    observed = rdpo_loss(**inputs, beta=0.3, flip_rate=eps)[0]
    flipped = rdpo_loss(**swapped(inputs), beta=0.3, flip_rate=eps)[0]
    expected = (1 - eps) * observed + eps * flipped
    torch.testing.assert_close(expected, dpo_loss(**inputs, beta=0.3)[0])


def test_gradient_sign_at_zero_margin():
    # d loss / d policy_chosen at Delta = 0: beta [-(1 - eps) sigma(0) - eps sigma(0)] / (1 - 2 eps)
    #   = 0.5 * [-0.8 * 0.5 - 0.2 * 0.5] / 0.6 = -0.25 / 0.6 = -0.416667
    policy_chosen = torch.zeros(1, requires_grad=True)
    zero = torch.zeros(1)
    rdpo_loss(policy_chosen, zero, zero, zero, beta=0.5, flip_rate=0.2)[0].sum().backward()
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([-0.25 / 0.6]))


def test_bad_flip_rate_adapter_and_spec():
    inputs = random_pairs(3, seed=1)
    for bad in (0.5, -0.1, 0.7):
        with pytest.raises(ValueError, match=r"flip_rate must be in \[0, 0.5\)"):
            rdpo_loss(**inputs, beta=0.1, flip_rate=bad)
    pair = PairInputs(**inputs, opponent_chosen=None, opponent_rejected=None, probability=torch.ones(3))
    loss, metrics = pair_loss(pair, DPOConfig(beta=0.2, flip_rate=0.15))
    torch.testing.assert_close(loss, rdpo_loss(**inputs, beta=0.2, flip_rate=0.15)[0])
    assert set(metrics) >= {"learner/rdpo/loss", "learner/rdpo/margin", "learner/rdpo/accuracy"}
    assert (SPEC.name, SPEC.family, SPEC.config_section) == ("rdpo", "pair", "dpo") and SPEC.needs_reference
