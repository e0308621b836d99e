"""The sequence family (PPO, GRPO, RLOO, SPPO) on the DeepSpeed learner with the tiny model (CPU, gloo).

Invariances that catch silent bugs: micro-batching does not change the update (policy and
critic), zero advantage leaves the policy where it was, the critic learns the returns, the
critic round-trips through a checkpoint.
"""

from __future__ import annotations

import pytest
import torch

from learner.algorithms.grpo import GRPOConfig
from learner.algorithms.ppo import PPOConfig
from learner.algorithms.rloo import RLOOConfig
from protocols import JudgedBatch, Judgement, PairPreference
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
    rewards = torch.tensor(batch.judgements[0].rewards).reshape(-1, k)  # (r - mean) / (unbiased std + eps)
    expected = ((rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-4)).abs().mean()
    result = moved.train_step([batch], 0, {"gt": 1.0})
    assert result.metrics["learner/advantage_abs"] == pytest.approx(float(expected), rel=1e-6)
    assert max_diff(moved.state_dict(), before) > 1e-4


def test_rloo_runs_the_configured_number_of_updates(builtin_models, batch):
    learner = make_learner(builtin_models.policy, "rloo", {"rloo": RLOOConfig(epochs=2, minibatches=3)})
    result = learner.train_step([batch], 0, {"gt": 1.0})
    assert result.metrics["learner/optimizer_steps"] == 6.0
    assert result.policy_version == 1
    # the first update sees ratio 1 exactly; the later ones a policy the earlier updates moved
    assert result.metrics["learner/rloo/ratio"] != pytest.approx(1.0, abs=1e-6)
    assert result.metrics["learner/rloo/clip_fraction"] < 1.0


def test_a_minibatch_without_rows_backs_a_zero_gradient(builtin_models, batch):
    """One prompt of 2 samples split into 3 minibatches: the third is empty on this rank, and its
    optimizer step (kept so that every rank steps alike) backs exactly a zero gradient."""
    one = batch.batch.model_copy(update={"rollouts": batch.batch.rollouts[:2], "samples_per_prompt": 2})
    judged = JudgedBatch(batch=one, judgements=(Judgement(judge="gt", rewards=(0.9, 0.1)),))
    three = make_learner(builtin_models.policy, "rloo", {"rloo": RLOOConfig(minibatches=3, kl_coef=0.0)})
    two = make_learner(builtin_models.policy, "rloo", {"rloo": RLOOConfig(minibatches=2, kl_coef=0.0)})
    a = three.train_step([judged], 0, {"gt": 1.0})
    b = two.train_step([judged], 0, {"gt": 1.0})
    assert a.metrics["learner/optimizer_steps"] == 3.0 and b.metrics["learner/optimizer_steps"] == 2.0
    # the same two one-row updates in the same order (the shuffle is seeded by step), then a zero
    # gradient: the mean gradient norm over 3 updates is 2/3 of the one over 2
    assert b.metrics["learner/grad_norm"] > 0.0
    assert a.metrics["learner/grad_norm"] == pytest.approx(b.metrics["learner/grad_norm"] * 2 / 3, rel=1e-5)


def test_rloo_subtracts_the_sequence_kl_from_the_reward(builtin_models, batch):
    """RLOO's reward is r - kl_coef * sum_t (logp_pi - logp_ref): zero KL at the first step, then
    the hand-computed leave-one-out advantages of the penalised rewards (KL from an HF copy)."""
    from transformers import AutoModelForCausalLM

    coef, k = 0.5, batch.batch.samples_per_prompt
    learner = make_learner(builtin_models.policy, "rloo", {"rloo": RLOOConfig(kl_coef=coef)}, lr=1e-3)
    rewards = torch.tensor(batch.judgements[0].rewards).reshape(-1, k)

    def leave_one_out(r):
        return r - (r.sum(-1, keepdim=True) - r) / (k - 1)

    first = learner.train_step([batch], 0, {"gt": 1.0})
    assert first.metrics["learner/advantage_abs"] == pytest.approx(float(leave_one_out(rewards).abs().mean()), rel=1e-6)
    policy = AutoModelForCausalLM.from_pretrained(builtin_models.policy)
    policy.load_state_dict(learner.state_dict())
    reference = AutoModelForCausalLM.from_pretrained(builtin_models.policy)
    kl = []
    with torch.no_grad():
        for r in batch.batch.rollouts:
            ids = torch.tensor([r.sequence_token_ids.tolist()])
            start = len(r.prompt_token_ids) - 1
            logp = [torch.log_softmax(m(input_ids=ids).logits[0, :-1], -1)[start:] for m in (policy, reference)]
            tokens = ids[0, start + 1 :]
            kl.append(float(sum(lp[torch.arange(len(tokens)), tokens] * sign for lp, sign in zip(logp, (1, -1))).sum()))
    kl = torch.tensor(kl).reshape(-1, k)
    assert kl.abs().max() > 0.05  # the first step moved the policy enough for the penalty to matter
    second = learner.train_step([batch], 1, {"gt": 1.0})
    penalised = leave_one_out(rewards - coef * kl).abs().mean()
    assert second.metrics["learner/advantage_abs"] == pytest.approx(float(penalised), rel=1e-4)
    assert abs(float(penalised) - float(leave_one_out(rewards).abs().mean())) > 1e-2  # the penalty shows


def test_sppo_trains_on_preferences_only(builtin_models, batch):
    k = batch.batch.samples_per_prompt
    # a pairwise judge preferring the lower index within each group, p = 0.9
    prefs = tuple(
        PairPreference(first=g + a, second=g + b, probability=0.9)
        for g in range(0, len(batch.batch.rollouts), k)
        for a in range(k)
        for b in range(a + 1, k)
    )
    judged = JudgedBatch(batch=batch.batch, judgements=(Judgement(judge="pw", preferences=prefs),))
    learner = make_learner(builtin_models.policy, "sppo")
    before = learner.state_dict()
    result = learner.train_step([judged], 0, {"pw": 1.0})
    # win probabilities within a group of 4: 0.9, (0.1 + 0.9 + 0.9) / 3, (0.1 + 0.1 + 0.9) / 3, 0.1; at
    # the first step logp = logp_t, so each loss is (eta (P - 1/2))^2 with eta = 2
    wins = [0.9, 1.9 / 3, 1.1 / 3, 0.1]
    assert result.metrics["learner/loss"] == pytest.approx(sum((2 * (p - 0.5)) ** 2 for p in wins) / 4, rel=1e-5)
    assert result.metrics["learner/sppo/target"] == pytest.approx(0.0, abs=1e-7)  # 2 (P - 1/2) averages to 0
    assert max_diff(learner.state_dict(), before) > 1e-4


def test_a_rank_without_a_prompt_group_is_refused(builtin_models, batch):
    """Whole prompt groups are sharded over the ranks (group baselines need every sample): a step
    with fewer prompts than ranks leaves a rank with nothing, which is refused with the reason."""
    k = batch.batch.samples_per_prompt
    one = batch.batch.model_copy(update={"rollouts": batch.batch.rollouts[:k]})
    judged = JudgedBatch(batch=one, judgements=(Judgement(judge="gt", rewards=batch.judgements[0].rewards[:k]),))
    learner = make_learner(builtin_models.policy, "grpo")
    learner.models.rank, learner.models.world_size = 1, 2  # what rank 1 of 2 sees; the check comes before any collective
    with pytest.raises(
        ValueError,
        match=r"rank 1 got no prompt group \(1 groups for 2 ranks\); use fewer learner "
        r"ranks or more prompts per step",
    ):
        learner.train_step([judged], 0, {"gt": 1.0})
    learner.models.rank = 0  # rank 0 of 2 takes group 0
    assert learner.train_step([judged], 0, {"gt": 1.0}).metrics["learner/sequences"] == float(k)


def test_a_single_update_skips_the_old_logprob_pass_and_moves_the_same(builtin_models, batch, monkeypatch):
    """GRPO (as SPPO) with one update per step takes the old logprobs from the update's own forward
    pass (detached) instead of a no-grad pass: the same update, loss, ratio and KL, one pass fewer."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from learner import advantages, sequence_step

    passes: list[bool] = []
    original = sequence_step._no_grad_pass
    monkeypatch.setattr(sequence_step, "_no_grad_pass", lambda m, t, old: passes.append(old) or original(m, t, old))
    skipped = make_learner(builtin_models.policy, "grpo")
    a = skipped.train_step([batch], 0, {"gt": 1.0})
    # an estimator that reads the old logprobs forces the pass
    monkeypatch.setitem(advantages.ESTIMATORS, "group", replace(advantages.ESTIMATORS["group"], reads_old_logprobs=True))
    forced = make_learner(builtin_models.policy, "grpo")
    b = forced.train_step([batch], 0, {"gt": 1.0})
    assert passes == [False, True]
    assert a.metrics["learner/loss"] == pytest.approx(b.metrics["learner/loss"], rel=1e-5, abs=1e-7)
    assert a.metrics["learner/grpo/ratio"] == pytest.approx(1.0, abs=1e-6) == b.metrics["learner/grpo/ratio"]
    assert a.metrics["learner/kl_to_reference"] == pytest.approx(b.metrics["learner/kl_to_reference"], abs=1e-6)
    assert max_diff(skipped.engine.module.state_dict(), forced.engine.module.state_dict()) < 1e-6
    start = AutoModelForCausalLM.from_pretrained(builtin_models.policy).state_dict()
    assert max_diff(skipped.engine.module.state_dict(), start) > 1e-4  # and it did move


def test_stale_samples_get_truncated_importance_weights(builtin_models, batch):
    """Samples of an older policy version (async rollouts): each token's advantage is weighted by
    min(pi / pi_sampler, offpolicy_clip). Sampler logprobs of -20 make every ratio huge, so every
    weight is the clip, 2: with no KL term the gradient is exactly twice the uncorrected one. Fresh
    samples, or offpolicy_clip 0, are not weighted and log no learner/offpolicy/*."""
    rollouts = tuple(r.model_copy(update={"logprobs": (-20.0,) * len(r.logprobs)}) for r in batch.batch.rollouts)
    unlikely = batch.model_copy(update={"batch": batch.batch.model_copy(update={"rollouts": rollouts})})
    no_kl = {"grpo": GRPOConfig(kl_coef=0.0)}
    corrected = make_learner(builtin_models.policy, "grpo", no_kl)
    plain = make_learner(builtin_models.policy, "grpo", no_kl, offpolicy_clip=0.0)
    fresh = corrected.train_step([unlikely], 0, {"gt": 1.0})  # version 0 trains on version-0 samples
    assert not any(k.startswith("learner/offpolicy/") for k in fresh.metrics)
    assert fresh.metrics["learner/grad_norm"] == pytest.approx(
        plain.train_step([unlikely], 0, {"gt": 1.0}).metrics["learner/grad_norm"]
    )
    stale = corrected.train_step([unlikely], 1, {"gt": 1.0}).metrics  # version 1 on version-0 samples
    uncorrected = plain.train_step([unlikely], 1, {"gt": 1.0}).metrics
    assert stale["learner/offpolicy/stale_share"] == 1.0 and stale["learner/offpolicy/staleness_mean"] == 1.0
    assert stale["learner/offpolicy/clipped_share"] == 1.0 and stale["learner/offpolicy/ratio_mean"] > 1e3
    assert not any(k.startswith("learner/offpolicy/") for k in uncorrected)
    assert stale["learner/grad_norm"] == pytest.approx(2.0 * uncorrected["learner/grad_norm"], rel=1e-4)


def test_stale_samples_with_a_single_update_are_weighted_without_the_old_logprob_pass(builtin_models, batch, monkeypatch):
    """One batch ahead (version 1 trains on version-0 samples) with one update per step: the
    importance weights take pi from the update's own detached logprobs, so no no-grad pass runs,
    and the update, loss and learner/offpolicy/* equal those of a step that makes the pass."""
    from dataclasses import replace

    from learner import advantages, sequence_step

    # sampler logprobs a little off the policy's, so the weights vary around 1 and some are clipped
    rollouts = tuple(
        r.model_copy(update={"logprobs": tuple(x - 0.6 * ((i + j) % 3) for j, x in enumerate(r.logprobs))})
        for i, r in enumerate(batch.batch.rollouts)
    )
    stale = batch.model_copy(update={"batch": batch.batch.model_copy(update={"rollouts": rollouts})})
    passes: list[bool] = []
    original = sequence_step._no_grad_pass
    monkeypatch.setattr(sequence_step, "_no_grad_pass", lambda m, t, old: passes.append(old) or original(m, t, old))
    inline = make_learner(builtin_models.policy, "grpo", offpolicy_clip=1.5)
    inline.train_step([batch], 0, {"gt": 1.0})  # -> version 1; the samples of version 0 are then stale
    a = inline.train_step([stale], 1, {"gt": 1.0}).metrics
    monkeypatch.setitem(advantages.ESTIMATORS, "group", replace(advantages.ESTIMATORS["group"], reads_old_logprobs=True))
    forced = make_learner(builtin_models.policy, "grpo", offpolicy_clip=1.5)
    forced.train_step([batch], 0, {"gt": 1.0})
    b = forced.train_step([stale], 1, {"gt": 1.0}).metrics
    assert passes == [False, False, True, True]
    assert 0.0 < a["learner/offpolicy/clipped_share"] < 1.0 and a["learner/offpolicy/stale_share"] == 1.0
    for key in ("learner/loss", "learner/grad_norm", "learner/offpolicy/ratio_mean", "learner/offpolicy/clipped_share"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert max_diff(inline.engine.module.state_dict(), forced.engine.module.state_dict()) < 1e-6


ZERO_KL = {
    "grpo": {"grpo": GRPOConfig(kl_coef=0.0)},
    "rloo": {"rloo": RLOOConfig(kl_coef=0.0)},
    "ppo": {"ppo": PPOConfig(kl_coef=0.0, epochs=1, minibatches=2)},
}


def with_reference(learner, path):
    """The learner's Models given the reference it would have built at kl_coef > 0 (starting weights)."""
    from transformers import AutoModelForCausalLM

    learner.models.reference = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)
    return learner


@pytest.mark.parametrize("algo", sorted(ZERO_KL))
def test_a_zero_kl_weight_builds_no_reference_and_updates_the_same(builtin_models, batch, algo, monkeypatch):
    """kl_coef 0 multiplies the reference by 0: the learner builds no reference model, runs no
    reference pass and reports no learner/kl_to_reference, and its update equals that of the same
    learner with a reference present (same seed), parameters and critic alike. RLOO's estimator
    reads old logprobs only for its KL term, so with one update and no reference it runs no
    old-logprob pass either (PPO here makes two updates a step, so it keeps its pass)."""
    from learner import sequence_step

    refs: list[bool] = []
    olds: list[bool] = []
    original = sequence_step._no_grad_pass

    def spy(m, t, old):
        out = original(m, t, old)
        refs.append(out[1] is not None)
        olds.append(old)
        return out

    monkeypatch.setattr(sequence_step, "_no_grad_pass", spy)
    lean = make_learner(builtin_models.policy, algo, ZERO_KL[algo])
    assert lean.reference is None and lean.models.reference is None
    full = with_reference(make_learner(builtin_models.policy, algo, ZERO_KL[algo]), builtin_models.policy)
    for step in range(2):  # the second step starts from a moved policy: the reference's KL is then > 0
        a = lean.train_step([batch], step, {"gt": 1.0}).metrics
        b = full.train_step([batch], step, {"gt": 1.0}).metrics
        assert "learner/kl_to_reference" not in a and "learner/kl_to_reference" in b
        assert a["learner/loss"] == pytest.approx(b["learner/loss"], rel=1e-5, abs=1e-7)
    assert refs == [False, True, False, True]
    assert olds == {"grpo": [False] * 4, "rloo": [False, True] * 2, "ppo": [True] * 4}[algo]
    assert abs(b["learner/kl_to_reference"]) > 1e-4  # the reference was read (k1 can be < 0), and did not matter
    torch.testing.assert_close(lean.engine.module.state_dict(), full.engine.module.state_dict())
    if algo == "ppo":
        torch.testing.assert_close(lean.critic.engine.module.state_dict(), full.critic.engine.module.state_dict())
    start = {k: v.to(torch.float32) for k, v in with_reference(lean, builtin_models.policy).models.reference.state_dict().items()}
    assert max_diff(lean.state_dict(), start) > 1e-4  # and the policy moved


@pytest.mark.parametrize(
    ("algo", "section", "where"),
    [
        ("grpo", {"grpo": GRPOConfig(kl_coef=0.04)}, "grpo_token_loss"),
        ("rloo", {"rloo": RLOOConfig(kl_coef=0.05)}, "the 'leave_one_out' advantage estimator"),
        ("ppo", {"ppo": PPOConfig(kl_coef=0.05)}, "the 'gae' advantage estimator"),
    ],
)
def test_a_positive_kl_weight_without_reference_logprobs_names_the_field(builtin_models, batch, algo, section, where):
    learner = make_learner(builtin_models.policy, algo, section)
    assert learner.models.reference is not None
    learner.models.reference = None  # a wiring error: the pass the loss needs did not run
    coef = next(iter(section.values())).kl_coef
    with pytest.raises(ValueError, match=rf"{where}: kl_coef={coef} > 0 needs ref_logprobs"):
        learner.train_step([batch], 0, {"gt": 1.0})
