"""Tests for learner/algorithms/mnpo.py (TD-MNPO loss and its adapter); the registry is in test_registry.py."""

import pytest
import torch

from learner.algorithms import AlgorithmSpec
from learner.algorithms.base import PairInputs
from learner.algorithms.mnpo import SPEC, MNPOConfig, mnpo_loss, pair_loss
from learner.pairing import PAIRINGS


def naive_mnpo(pc, pr, rc, rr, oc, orj, weights, ratio, eta):
    """Python loops over pairs and opponents; floats in, list of per-pair losses out."""
    losses = []
    for b in range(len(pc)):
        mix = 0.0
        for j in range(len(weights)):
            mix += weights[j] * (oc[j][b] - orj[j][b])
        logits = (pc[b] - pr[b]) - ratio * (rc[b] - rr[b]) - (1 - ratio) * mix
        losses.append((logits - 1 / (2 * eta)) ** 2)
    return losses


def random_inputs(b, m, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: -torch.rand(*shape, generator=g, dtype=dtype) * 20  # noqa: E731
    weights = torch.rand(m, generator=g, dtype=dtype)
    return dict(
        policy_chosen=draw(b),
        policy_rejected=draw(b),
        ref_chosen=draw(b),
        ref_rejected=draw(b),
        opponent_chosen=draw(m, b),
        opponent_rejected=draw(m, b),
        opponent_weights=weights / weights.sum(),
    )


def two_pairs():
    # pair 0: h_pi = -1 - -3 = 2; h_ref = -2 - -2.5 = 0.5; h_1 = -1.5 - -2.5 = 1; h_2 = -2 - -2 = 0
    # pair 1: h_pi = -2 - -1 = -1; h_ref = -1 - -1 = 0;     h_1 = -1 - -2 = 1;     h_2 = -1 - -1 = 0
    return dict(
        policy_chosen=torch.tensor([-1.0, -2.0]),
        policy_rejected=torch.tensor([-3.0, -1.0]),
        ref_chosen=torch.tensor([-2.0, -1.0]),
        ref_rejected=torch.tensor([-2.5, -1.0]),
        opponent_chosen=torch.tensor([[-1.5, -1.0], [-2.0, -1.0]]),
        opponent_rejected=torch.tensor([[-2.5, -2.0], [-2.0, -1.0]]),
        opponent_weights=torch.tensor([0.25, 0.75]),
    )


def test_hand_computed_two_pairs():
    loss, metrics = mnpo_loss(**two_pairs(), ratio=0.5, eta=0.5)
    # mix = 0.25 * h_1 + 0.75 * h_2 = 0.25 for both pairs; target = 1 / (2 * 0.5) = 1
    # pair 0: logits = 2 - 0.5 * 0.5 - 0.5 * 0.25 = 1.625;  loss = (1.625 - 1)^2 = 0.390625
    # pair 1: logits = -1 - 0.5 * 0   - 0.5 * 0.25 = -1.125; loss = (-1.125 - 1)^2 = 4.515625
    torch.testing.assert_close(loss, torch.tensor([0.390625, 4.515625]))
    assert metrics == pytest.approx(
        {
            "learner/mnpo/loss": (0.390625 + 4.515625) / 2,
            "learner/mnpo/logits": (1.625 - 1.125) / 2,
            "learner/mnpo/target": 1.0,
            "learner/mnpo/accuracy": 0.5,  # only pair 0 has logits > 0
            "learner/mnpo/policy_margin": (2 - 1) / 2,
            "learner/mnpo/ref_margin": 0.25,
            "learner/mnpo/opponent_margin": 0.25,
            "learner/mnpo/margin_vs_ref": ((2 - 0.5) + (-1 - 0)) / 2,
            "learner/mnpo/ref_accuracy": 0.5,  # pair 0: 2 > 0.5; pair 1: -1 < 0
            "learner/mnpo/policy_chosen_logprobs": -1.5,
            "learner/mnpo/policy_rejected_logprobs": -2.0,
            "learner/mnpo/opponent1_margin": 1.0,
            "learner/mnpo/opponent2_margin": 0.0,
        }
    )
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("seed", range(5))
def test_matches_naive_loops_on_random_inputs(seed):
    b, m = 7, 3
    inputs = random_inputs(b, m, seed)
    ratio = [0.0, 1 / 3, 0.5, 0.85, 1.0][seed]
    eta = [0.0075, 0.5, 1.0, 0.005, 2.0][seed]
    loss, _ = mnpo_loss(**inputs, ratio=ratio, eta=eta)
    as_lists = {k: v.tolist() for k, v in inputs.items()}
    expected = naive_mnpo(
        as_lists["policy_chosen"],
        as_lists["policy_rejected"],
        as_lists["ref_chosen"],
        as_lists["ref_rejected"],
        as_lists["opponent_chosen"],
        as_lists["opponent_rejected"],
        as_lists["opponent_weights"],
        ratio,
        eta,
    )
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_ratio_one_ignores_opponents_and_is_ipo():
    inputs = random_inputs(6, 2, seed=10)
    loss, _ = mnpo_loss(**inputs, ratio=1.0, eta=0.3)
    other = dict(inputs, opponent_chosen=inputs["opponent_chosen"] * 3 - 7, opponent_rejected=inputs["opponent_rejected"] + 11)
    torch.testing.assert_close(mnpo_loss(**other, ratio=1.0, eta=0.3)[0], loss, rtol=0, atol=0)
    # IPO with beta = eta: (h_pi - h_ref - 1 / (2 beta))^2
    h_pi = inputs["policy_chosen"] - inputs["policy_rejected"]
    h_ref = inputs["ref_chosen"] - inputs["ref_rejected"]
    torch.testing.assert_close(loss, (h_pi - h_ref - 1 / (2 * 0.3)) ** 2)
    # and no opponents at all is allowed at ratio 1
    empty = dict(
        inputs,
        opponent_chosen=torch.zeros(0, 6, dtype=torch.float64),
        opponent_rejected=torch.zeros(0, 6, dtype=torch.float64),
        opponent_weights=torch.zeros(0, dtype=torch.float64),
    )
    empty_loss, metrics = mnpo_loss(**empty, ratio=1.0, eta=0.3)
    torch.testing.assert_close(empty_loss, loss)
    assert metrics["learner/mnpo/opponent_margin"] == 0.0 and "learner/mnpo/opponent1_margin" not in metrics


def test_ratio_zero_ignores_reference():
    inputs = random_inputs(6, 2, seed=11)
    loss, _ = mnpo_loss(**inputs, ratio=0.0, eta=0.7)
    other = dict(inputs, ref_chosen=inputs["ref_chosen"] - 5, ref_rejected=inputs["ref_rejected"] * 2)
    torch.testing.assert_close(mnpo_loss(**other, ratio=0.0, eta=0.7)[0], loss, rtol=0, atol=0)


def test_one_opponent_is_inpo():
    # INPO (Zhang et al. 2024): (h_pi - (tau/eta) h_ref - (1 - tau/eta) h_{pi_t} - 1/(2 eta))^2
    tau, eta = 0.1, 0.4
    inputs = random_inputs(5, 1, seed=12)
    loss, _ = mnpo_loss(**inputs, ratio=tau / eta, eta=eta)
    assert inputs["opponent_weights"].tolist() == [1.0]
    h_pi = inputs["policy_chosen"] - inputs["policy_rejected"]
    h_ref = inputs["ref_chosen"] - inputs["ref_rejected"]
    h_t = inputs["opponent_chosen"][0] - inputs["opponent_rejected"][0]
    torch.testing.assert_close(loss, (h_pi - (tau / eta) * h_ref - (1 - tau / eta) * h_t - 1 / (2 * eta)) ** 2)


@pytest.mark.parametrize("eta", [0.0075, 0.5, 1.0])
def test_all_equal_logprobs_give_squared_target(eta):
    # every margin is 0, so logits = 0 and loss = (0 - 1/(2 eta))^2
    b, m = 4, 2
    same = torch.full((b,), -3.0)
    loss, metrics = mnpo_loss(
        same,
        same.clone(),
        same.clone(),
        same.clone(),
        torch.full((m, b), -3.0),
        torch.full((m, b), -3.0),
        torch.tensor([0.5, 0.5]),
        ratio=1 / 3,
        eta=eta,
    )
    torch.testing.assert_close(loss, torch.full((b,), (1 / (2 * eta)) ** 2))
    assert metrics["learner/mnpo/accuracy"] == 0.0 and metrics["learner/mnpo/logits"] == 0.0


def test_gradient_sign_and_only_policy_gets_gradient():
    inputs = two_pairs()
    policy_chosen = inputs.pop("policy_chosen").requires_grad_(True)
    policy_rejected = inputs.pop("policy_rejected").requires_grad_(True)
    ref_chosen = inputs.pop("ref_chosen").requires_grad_(True)
    opponent_chosen = inputs.pop("opponent_chosen").requires_grad_(True)
    # eta = 0.125 -> target 4 > both logits (1.625, -1.125): the loss wants larger margins
    loss, _ = mnpo_loss(
        policy_chosen, policy_rejected, ref_chosen, opponent_chosen=opponent_chosen, **inputs, ratio=0.5, eta=0.125
    )
    loss.sum().backward()
    # d loss / d policy_chosen = 2 (logits - target) = [2 (1.625 - 4), 2 (-1.125 - 4)] = [-4.75, -10.25]
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([-4.75, -10.25]))
    torch.testing.assert_close(policy_rejected.grad, torch.tensor([4.75, 10.25]))
    assert ref_chosen.grad is None and opponent_chosen.grad is None
    # a small step up in policy_chosen lowers the loss
    with torch.no_grad():
        stepped, _ = mnpo_loss(
            policy_chosen + 0.01, policy_rejected, ref_chosen, opponent_chosen=opponent_chosen, **inputs, ratio=0.5, eta=0.125
        )
    assert (stepped < loss.detach()).all()


def test_gradient_sign_flips_above_target():
    # target 1 / (2 * 2) = 0.25; pair 0 has logits 1.625 above it, pair 1 has -1.125 below it
    inputs = two_pairs()
    policy_chosen = inputs.pop("policy_chosen").requires_grad_(True)
    loss, _ = mnpo_loss(policy_chosen, **inputs, ratio=0.5, eta=2.0)
    loss.sum().backward()
    # 2 (logits - target) = [2 (1.625 - 0.25), 2 (-1.125 - 0.25)] = [2.75, -2.75]
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([2.75, -2.75]))


def test_float32_inputs_stay_float32():
    inputs = {k: v.float() for k, v in random_inputs(3, 2, seed=13).items()}
    loss, _ = mnpo_loss(**inputs, ratio=0.85, eta=0.005)
    assert loss.dtype == torch.float32 and loss.shape == (3,)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(policy_rejected=torch.zeros(3)), r"policy_rejected has shape \(3,\), expected \(2,\)"),
        (dict(ref_chosen=torch.zeros(2, 1)), r"ref_chosen has shape \(2, 1\)"),
        (dict(opponent_chosen=torch.zeros(3, 2)), r"opponent_chosen has shape \(3, 2\), expected \(2, 2\)"),
        (dict(opponent_rejected=torch.zeros(2)), r"opponent_rejected has shape \(2,\)"),
        (dict(opponent_weights=torch.tensor([0.5, 0.6])), r"sum to 1, got \[0.5, 0.6"),
        (dict(opponent_weights=torch.tensor([1.5, -0.5])), r">= 0 and sum to 1"),
        (dict(opponent_weights=torch.tensor([float("nan"), 1.0])), r"sum to 1, got \[nan, 1.0\]"),
        (dict(opponent_weights=torch.ones(2, 1)), r"opponent_weights must be \[M\]"),
        (dict(policy_chosen=torch.zeros(0), policy_rejected=torch.zeros(0)), r"non-empty \[B\]"),
        (dict(ratio=1.5), r"ratio must be in \[0, 1\], got 1.5"),
        (dict(ratio=-0.1), r"ratio must be in \[0, 1\]"),
        (dict(eta=0.0), r"eta must be > 0, got 0.0"),
        (
            dict(opponent_chosen=torch.zeros(0, 2), opponent_rejected=torch.zeros(0, 2), opponent_weights=torch.zeros(0)),
            r"no opponents given but ratio=0.5",
        ),
    ],
)
def test_bad_inputs_raise_naming_the_problem(change, match):
    kwargs = dict(two_pairs(), ratio=0.5, eta=0.5)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        mnpo_loss(**kwargs)


def test_spec():
    assert isinstance(SPEC, AlgorithmSpec) and (SPEC.name, SPEC.family, SPEC.config_section) == ("mnpo", "pair", "mnpo")
    assert SPEC.pair_loss is pair_loss and SPEC.sequence_loss is None
    assert SPEC.needs_reference and SPEC.needs_opponents and SPEC.fixed_opponents is None
    assert not SPEC.needs_old_logprobs and not SPEC.needs_values
    assert MNPOConfig().pairing in PAIRINGS
    with pytest.raises(AttributeError):
        SPEC.name = "other"  # frozen dataclass


def test_adapter_uses_configured_weights():
    inputs = two_pairs()
    weights = inputs.pop("opponent_weights")
    pair = PairInputs(**inputs, probability=torch.ones(2))
    config = MNPOConfig(num_opponents=2, opponent_weights=(1.0, 3.0), eta=0.5, ratio=0.5)  # lambda = [0.25, 0.75]
    loss, metrics = pair_loss(pair, config)
    expected, expected_metrics = mnpo_loss(**inputs, opponent_weights=weights, ratio=0.5, eta=0.5)
    torch.testing.assert_close(loss, expected)
    assert metrics == expected_metrics


def test_config_weights_plug_in():
    # MNPOConfig.normalised_weights is the lambda this loss expects
    config = MNPOConfig(num_opponents=2, opponent_weights=(1.0, 3.0), eta=0.5, ratio=0.5)
    weights = torch.tensor(config.normalised_weights())
    loss, _ = mnpo_loss(**dict(two_pairs(), opponent_weights=weights), ratio=config.ratio, eta=config.eta)
    torch.testing.assert_close(loss, torch.tensor([0.390625, 4.515625]))
