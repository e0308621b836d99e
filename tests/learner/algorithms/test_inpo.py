"""Tests for learner/algorithms/inpo.py: INPO is TD-MNPO with exactly one opponent."""

import pytest
import torch

from learner.algorithms import inpo, mnpo
from learner.algorithms.base import PairInputs
from learner.algorithms.mnpo import MNPOConfig


def random_pair_inputs(b, m, seed):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: -torch.rand(*shape, generator=g, dtype=torch.float64) * 20  # noqa: E731
    return PairInputs(
        policy_chosen=draw(b),
        policy_rejected=draw(b),
        ref_chosen=draw(b),
        ref_rejected=draw(b),
        opponent_chosen=draw(m, b),
        opponent_rejected=draw(m, b),
        probability=torch.ones(b),
    )


@pytest.mark.parametrize("seed", range(3))
def test_equals_mnpo_loss_with_one_opponent_of_weight_one(seed):
    inputs = random_pair_inputs(6, 1, seed)
    cfg = MNPOConfig(eta=[0.1, 0.5, 2.0][seed], ratio=[0.0, 1 / 3, 0.85][seed])
    loss, metrics = inpo.pair_loss(inputs, cfg)
    expected, expected_metrics = mnpo.mnpo_loss(
        inputs.policy_chosen,
        inputs.policy_rejected,
        inputs.ref_chosen,
        inputs.ref_rejected,
        inputs.opponent_chosen,
        inputs.opponent_rejected,
        torch.ones(1, dtype=torch.float64),
        ratio=cfg.ratio,
        eta=cfg.eta,
    )
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert metrics == {k.replace("learner/mnpo/", "learner/inpo/"): v for k, v in expected_metrics.items()}


def test_equals_mnpo_adapter_with_one_opponent_configured():
    inputs = random_pair_inputs(5, 1, seed=7)
    # the default config has num_opponents = 2; INPO ignores it, MNPO with num_opponents = 1 agrees
    loss, _ = inpo.pair_loss(inputs, MNPOConfig(eta=0.4, ratio=0.25))
    expected, _ = mnpo.pair_loss(inputs, MNPOConfig(eta=0.4, ratio=0.25, num_opponents=1))
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


@pytest.mark.parametrize("rows", [0, 2])
def test_rejects_other_opponent_counts(rows):
    inputs = random_pair_inputs(4, rows, seed=8)
    with pytest.raises(ValueError, match=rf"exactly one opponent snapshot, got .*\({rows}, 4\)"):
        inpo.pair_loss(inputs, MNPOConfig())


def test_rejects_missing_opponents_and_spec():
    inputs = random_pair_inputs(3, 1, seed=9)
    none = PairInputs(
        inputs.policy_chosen, inputs.policy_rejected, inputs.ref_chosen, inputs.ref_rejected, None, None, inputs.probability
    )
    with pytest.raises(ValueError, match="exactly one opponent snapshot, got opponent logprobs of shape None"):
        inpo.pair_loss(none, MNPOConfig())
    spec = inpo.SPEC
    assert (spec.name, spec.family, spec.config_section, spec.fixed_opponents) == ("inpo", "pair", "mnpo", 1)
    assert spec.needs_reference and spec.needs_opponents and spec.pair_loss is inpo.pair_loss
