"""The sequence family (PPO, GRPO, RLOO, SPPO) on the DeepSpeed learner with the tiny model (CPU, gloo).

Invariances that catch silent bugs: micro-batching does not change the update (policy and
critic), zero advantage leaves the policy where it was, the critic learns the returns, the
critic round-trips through a checkpoint.
"""

from __future__ import annotations

import pytest
import torch

from protocols import GRPOConfig, JudgedBatch, Judgement, PairPreference, PPOConfig, RLOOConfig
from tests.learner.engine_helpers import judged_batch, make_learner


@pytest.fixture(scope="module")
def batch(builtin_models):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(builtin_models.policy)
    return judged_batch(config.vocab_size, config.eos_token_id)


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_ppo_micro_batching_does_not_change_the_update(builtin_models, batch):
    ppo = {"ppo": PPOConfig(epochs=1, minibatches=1)}
    whole = make_learner(builtin_models.policy, "ppo", ppo, micro_batch_size=64)
    pieces = make_learner(builtin_models.policy, "ppo", ppo, micro_batch_size=3)
    a = whole.train_step([batch], 0, {"gt": 1.0})
    b = pieces.train_step([batch], 0, {"gt": 1.0})
    assert a.metrics["learner/optimizer_steps"] == 1.0
    assert a.metrics["learner/loss"] == pytest.approx(b.metrics["learner/loss"], rel=1e-4, abs=1e-6)
    assert a.metrics["learner/ppo/value_loss"] == pytest.approx(b.metrics["learner/ppo/value_loss"], rel=1e-4)
    assert max_diff(whole.state_dict(), pieces.state_dict()) < 1e-5
    critic_a, critic_b = whole.critic.engine.module.state_dict(), pieces.critic.engine.module.state_dict()
    assert max_diff(critic_a, critic_b) < 1e-5
    assert max_diff(whole.state_dict(), whole.reference.state_dict()) > 1e-4  # the policy moved


def test_ppo_critic_learns_the_returns_and_survives_a_checkpoint(builtin_models, batch, tmp_path):
    learner = make_learner(builtin_models.policy, "ppo", {"ppo": PPOConfig(epochs=2, minibatches=2)})
    losses = [learner.train_step([batch], s, {"gt": 1.0}).metrics["learner/ppo/value_loss"] for s in range(4)]
    assert losses[-1] < losses[0] * 0.8, losses
    learner.save_checkpoint(str(tmp_path))
    fresh = make_learner(builtin_models.policy, "ppo", {"ppo": PPOConfig(epochs=2, minibatches=2)})
    assert max_diff(fresh.critic.engine.module.state_dict(), learner.critic.engine.module.state_dict()) > 1e-4
    assert fresh.load_checkpoint(str(tmp_path)) == 4
    assert max_diff(fresh.critic.engine.module.state_dict(), learner.critic.engine.module.state_dict()) == 0.0


def test_grpo_zero_advantage_leaves_the_policy_alone(builtin_models, batch):
    k = batch.batch.samples_per_prompt
    flat = tuple(float(i // k) for i in range(len(batch.batch.rollouts)))  # equal within every group
    tied = JudgedBatch(batch=batch.batch, judgements=(Judgement(judge="gt", rewards=flat),))
    cfg = {"grpo": GRPOConfig(kl_coef=0.0)}
    learner = make_learner(builtin_models.policy, "grpo", cfg)
    before = learner.state_dict()
    result = learner.train_step([tied], 0, {"gt": 1.0})
    assert result.metrics["learner/advantage_abs"] == 0.0
    assert result.metrics["learner/grad_norm"] == 0.0
    assert max_diff(learner.state_dict(), before) == 0.0
    moved = make_learner(builtin_models.policy, "grpo", cfg)
    assert moved.train_step([batch], 0, {"gt": 1.0}).metrics["learner/advantage_abs"] > 0.1
    assert max_diff(moved.state_dict(), before) > 1e-4


def test_rloo_runs_the_configured_number_of_updates(builtin_models, batch):
    learner = make_learner(builtin_models.policy, "rloo", {"rloo": RLOOConfig(epochs=2, minibatches=3)})
    result = learner.train_step([batch], 0, {"gt": 1.0})
    assert result.metrics["learner/optimizer_steps"] == 6.0
    assert result.policy_version == 1
    assert torch.isfinite(torch.tensor(result.metrics["learner/loss"]))


def test_sppo_trains_on_preferences_only(builtin_models, batch):
    k = batch.batch.samples_per_prompt
    # a pairwise judge preferring the lower index within each group, p = 0.9
    prefs = tuple(
        PairPreference(first=g + a, second=g + b, probability=0.9)
        for g in range(0, len(batch.batch.rollouts), k) for a in range(k) for b in range(a + 1, k)
    )
    judged = JudgedBatch(batch=batch.batch, judgements=(Judgement(judge="pw", preferences=prefs),))
    learner = make_learner(builtin_models.policy, "sppo")
    before = learner.state_dict()
    result = learner.train_step([judged], 0, {"pw": 1.0})
    # win probabilities within a group of 4: index 0 -> 0.9, 1 -> (0.1 + 0.9 + 0.9) / 3, ... mean 0.5
    assert result.metrics["learner/score_mean"] == pytest.approx(0.5)
    assert max_diff(learner.state_dict(), before) > 1e-4
