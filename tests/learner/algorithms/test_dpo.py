"""Tests for learner/algorithms/dpo.py: online DPO and the shared preference margin / metrics."""

import math

import pytest
import torch

from learner.algorithms.base import PairInputs
from learner.algorithms.dpo import SPEC, DPOConfig, dpo_loss, pair_loss, preference_margin

LN3 = math.log(3.0)


def two_pairs():
    # pair 0: h_pi = -1 - -3 = 2;  h_ref = -2 - -2.5 = 0.5; h_pi - h_ref = 1.5
    # pair 1: h_pi = -2 - -1 = -1; h_ref = -1 - -1 = 0;     h_pi - h_ref = -1
    return dict(
        policy_chosen=torch.tensor([-1.0, -2.0]),
        policy_rejected=torch.tensor([-3.0, -1.0]),
        ref_chosen=torch.tensor([-2.0, -1.0]),
        ref_rejected=torch.tensor([-2.5, -1.0]),
    )


def random_pairs(b, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    names = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")
    return {k: -torch.rand(b, generator=g, dtype=dtype) * 20 for k in names}


def naive_dpo(pc, pr, rc, rr, beta):
    return [math.log1p(math.exp(-beta * ((pc[b] - pr[b]) - (rc[b] - rr[b])))) for b in range(len(pc))]


def test_hand_computed_two_pairs():
    loss, metrics = dpo_loss(**two_pairs(), beta=0.5)
    # Delta = 0.5 * [1.5, -1] = [0.75, -0.5]; loss = log(1 + exp(-Delta))
    # pair 0: log(1 + e^-0.75) = log(1.472367) = 0.386871;  pair 1: log(1 + e^0.5) = log(2.648721) = 0.974077
    torch.testing.assert_close(loss, torch.tensor([0.386871, 0.974077]), rtol=0, atol=1e-6)
    assert metrics == pytest.approx(
        {
            "learner/dpo/loss": (0.386871 + 0.974077) / 2,
            "learner/dpo/margin": (0.75 - 0.5) / 2,
            "learner/dpo/accuracy": 0.5,  # only pair 0 has Delta > 0
            "learner/dpo/chosen_rewards": 0.5 * ((-1 - -2) + (-2 - -1)) / 2,  # 0.5 * [1, -1] -> 0
            "learner/dpo/rejected_rewards": 0.5 * ((-3 - -2.5) + (-1 - -1)) / 2,  # 0.5 * [-0.5, 0] -> -0.125
            "learner/dpo/policy_chosen_logprobs": -1.5,
            "learner/dpo/policy_rejected_logprobs": -2.0,
        },
        abs=1e-6,
    )
    assert all(isinstance(v, float) for v in metrics.values())


def test_log3_margin():
    # h_pi = ln 3, h_ref = 0, beta = 1: sigma(ln 3) = 3/4, loss = -log(3/4) = log(4/3) = 0.287682
    loss, _ = dpo_loss(torch.tensor([LN3 - 2]), torch.tensor([-2.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), 1.0)
    torch.testing.assert_close(loss, torch.tensor([math.log(4 / 3)]))


@pytest.mark.parametrize("seed", range(4))
def test_matches_naive_loops_on_random_inputs(seed):
    beta = [0.01, 0.1, 0.5, 2.0][seed]
    inputs = random_pairs(9, seed)
    loss, _ = dpo_loss(**inputs, beta=beta)
    lists = [v.tolist() for v in inputs.values()]
    torch.testing.assert_close(loss, torch.tensor(naive_dpo(*lists, beta), dtype=torch.float64))


def test_preference_margin_is_h_pi_minus_h_ref_with_reference_detached():
    inputs = {k: v.requires_grad_(True) for k, v in two_pairs().items()}
    margin = preference_margin(**inputs)
    torch.testing.assert_close(margin, torch.tensor([1.5, -1.0]))
    margin.sum().backward()
    assert inputs["ref_chosen"].grad is None and inputs["ref_rejected"].grad is None
    torch.testing.assert_close(inputs["policy_chosen"].grad, torch.ones(2))


def test_empty_responses_give_log2():
    # the caller gives empty responses sequence logprob 0: Delta = 0, loss = -log(1/2) = log 2
    zeros = torch.zeros(3)
    loss, metrics = dpo_loss(zeros, zeros.clone(), zeros.clone(), zeros.clone(), beta=0.1)
    torch.testing.assert_close(loss, torch.full((3,), math.log(2.0)))
    assert metrics["learner/dpo/accuracy"] == 0.0 and metrics["learner/dpo/margin"] == 0.0


def test_gradient_increases_chosen_and_decreases_rejected():
    inputs = two_pairs()
    policy_chosen = inputs.pop("policy_chosen").requires_grad_(True)
    policy_rejected = inputs.pop("policy_rejected").requires_grad_(True)
    loss, _ = dpo_loss(policy_chosen, policy_rejected, **inputs, beta=0.5)
    loss.sum().backward()
    # d loss / d policy_chosen = -beta sigma(-Delta) = -0.5 sigma([-0.75, 0.5]) = [-0.5 * 0.320821, -0.5 * 0.622459]
    expected = -0.5 * torch.sigmoid(torch.tensor([-0.75, 0.5]))
    torch.testing.assert_close(policy_chosen.grad, expected)
    torch.testing.assert_close(policy_rejected.grad, -expected)
    assert (policy_chosen.grad < 0).all()  # a descent step raises logp(y_w)
    with torch.no_grad():
        stepped, _ = dpo_loss(policy_chosen + 0.01, policy_rejected, **inputs, beta=0.5)
    assert (stepped < loss.detach()).all()


def test_extreme_margins_are_stable():
    big = torch.tensor([1000.0, -1000.0])
    zero = torch.zeros(2)
    loss, _ = dpo_loss(big, zero, zero, zero, beta=1.0)
    torch.testing.assert_close(loss, torch.tensor([0.0, 1000.0]))


def test_float32_stays_float32():
    loss, _ = dpo_loss(**{k: v.float() for k, v in random_pairs(3, 7).items()}, beta=0.1)
    assert loss.dtype == torch.float32 and loss.shape == (3,)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(policy_rejected=torch.zeros(3)), r"policy_rejected has shape \(3,\), expected \(2,\)"),
        (dict(ref_chosen=torch.zeros(2, 1)), r"ref_chosen has shape \(2, 1\)"),
        (dict(policy_chosen=torch.zeros(0)), r"non-empty \[B\]"),
        (dict(beta=0.0), r"beta must be > 0, got 0.0"),
        (dict(beta=float("nan")), r"beta must be > 0"),
    ],
)
def test_bad_inputs_raise(change, match):
    kwargs = dict(two_pairs(), beta=0.5)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        dpo_loss(**kwargs)


def test_adapter_and_spec():
    inputs = two_pairs()
    pair = PairInputs(**inputs, opponent_chosen=None, opponent_rejected=None, probability=torch.tensor([0.2, 0.9]))
    loss, metrics = pair_loss(pair, DPOConfig(beta=0.5))
    expected, expected_metrics = dpo_loss(**inputs, beta=0.5)  # probability is ignored
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert metrics == expected_metrics
    with pytest.raises(ValueError, match="dpo needs reference logprobs"):
        pair_loss(
            PairInputs(inputs["policy_chosen"], inputs["policy_rejected"], None, None, None, None, torch.ones(2)), DPOConfig()
        )
    assert (SPEC.name, SPEC.family, SPEC.config_section) == ("dpo", "pair", "dpo")
    assert SPEC.needs_reference and not SPEC.needs_opponents and SPEC.pair_loss is pair_loss
