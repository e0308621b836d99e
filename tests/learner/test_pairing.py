"""Tests for learner/pairing.py: combined rewards and best-vs-worst pairs from a JudgedBatch."""

import dataclasses

import pytest

from learner.pairing import PAIRINGS, Pair, best_vs_worst, combined_rewards, get_pairing
from protocols import JudgedBatch, Judgement, PairPreference, Rollout, RolloutBatch


def rollout(prompt: int, sample: int, version: int = 3) -> Rollout:
    """Prompt p has prompt tokens (100 + p,); sample s of it has response tokens (10 p + s, 2)."""
    return Rollout(
        prompt_id=f"p{prompt}", prompt_text=f"prompt {prompt}", prompt_token_ids=(100 + prompt,),
        response_text=f"r{prompt}.{sample}", response_token_ids=(10 * prompt + sample, 2),
        logprobs=(-0.5, -0.1), policy_version=version, finish_reason="stop",
    )


def judged(num_prompts: int, k: int, *judgements: Judgement) -> JudgedBatch:
    rollouts = tuple(rollout(p, s) for p in range(num_prompts) for s in range(k))
    batch = RolloutBatch(step=0, policy_version=3, samples_per_prompt=k, rollouts=rollouts)
    return JudgedBatch(batch=batch, judgements=judgements)


def test_combined_rewards_weighted_mean_hand_computed():
    batch = judged(1, 3,
                   Judgement(judge="a", rewards=(1.0, 0.0, 2.0)),
                   Judgement(judge="b", rewards=(0.0, 4.0, 2.0)),
                   Judgement(judge="pref", preferences=(PairPreference(first=0, second=1, probability=0.9),)))
    # (1 * a + 3 * b) / 4: [(1 + 0) / 4, (0 + 12) / 4, (2 + 6) / 4]; the preference-only judge needs no weight
    assert combined_rewards(batch, {"a": 1.0, "b": 3.0}) == pytest.approx([0.25, 3.0, 2.0])
    # extra weights for judges that did not report are fine
    assert combined_rewards(batch, {"a": 1.0, "b": 3.0, "other": 5.0}) == pytest.approx([0.25, 3.0, 2.0])


def test_combined_rewards_errors_name_the_judge():
    batch = judged(1, 2, Judgement(judge="a", rewards=(1.0, 0.0)), Judgement(judge="b", rewards=(0.0, 1.0)))
    with pytest.raises(ValueError, match=r"judge 'b' gave rewards but has no weight; weights given for \['a'\]"):
        combined_rewards(batch, {"a": 1.0})
    with pytest.raises(ValueError, match=r"judge 'b' has weight 0.0"):
        combined_rewards(batch, {"a": 1.0, "b": 0.0})
    prefs_only = judged(1, 2, Judgement(judge="p", preferences=(PairPreference(first=0, second=1, probability=1.0),)))
    with pytest.raises(ValueError, match=r"no judge gave scalar rewards \(judges: \['p'\]\)"):
        combined_rewards(prefs_only, {"p": 1.0})


def test_best_vs_worst_picks_skips_ties_and_breaks_ties_by_index():
    rewards = (
        0.1, 0.9, 0.5,   # prompt 0: best 1, worst 0
        0.3, 0.3, 0.3,   # prompt 1: all equal -> no signal, skipped
        0.7, 0.2, 0.7,   # prompt 2: best tie 6/8 -> lowest index 6 (sample 0); worst 7 (sample 1)
        0.4, 0.0, 0.0,   # prompt 3: worst tie 10/11 -> lowest index 10 (sample 1); best 9 (sample 0)
    )
    pairs = best_vs_worst(judged(4, 3, Judgement(judge="a", rewards=rewards)), {"a": 2.0})
    assert pairs == [
        Pair(prompt_token_ids=(100,), chosen_token_ids=(1, 2), rejected_token_ids=(0, 2),
             chosen_reward=0.9, rejected_reward=0.1, probability=1.0, policy_version=3),
        Pair(prompt_token_ids=(102,), chosen_token_ids=(20, 2), rejected_token_ids=(21, 2),
             chosen_reward=0.7, rejected_reward=0.2, probability=1.0, policy_version=3),
        Pair(prompt_token_ids=(103,), chosen_token_ids=(30, 2), rejected_token_ids=(31, 2),
             chosen_reward=0.4, rejected_reward=0.0, probability=1.0, policy_version=3),
    ]


def test_best_vs_worst_uses_combined_rewards():
    # judge a prefers sample 0, judge b (weight 3) prefers sample 1: combined [0.25, 0.75]
    batch = judged(1, 2, Judgement(judge="a", rewards=(1.0, 0.0)), Judgement(judge="b", rewards=(0.0, 1.0)))
    (pair,) = best_vs_worst(batch, {"a": 1.0, "b": 3.0})
    assert pair.chosen_token_ids == (1, 2) and pair.rejected_token_ids == (0, 2)
    assert (pair.chosen_reward, pair.rejected_reward) == pytest.approx((0.75, 0.25))
    # equal weights tie every rollout: nothing to learn from
    assert best_vs_worst(batch, {"a": 1.0, "b": 1.0}) == []


def test_best_vs_worst_rejects_mismatched_prompt_tokens():
    a = rollout(0, 0)
    b = rollout(0, 1).model_copy(update={"prompt_token_ids": (999,)})
    batch = RolloutBatch(step=0, policy_version=3, samples_per_prompt=2, rollouts=(a, b))
    with pytest.raises(ValueError, match=r"prompt 'p0': its rollouts carry different prompt_token_ids"):
        best_vs_worst(JudgedBatch(batch=batch, judgements=(Judgement(judge="a", rewards=(1.0, 0.0)),)), {"a": 1.0})


def test_pair_is_frozen():
    pair = Pair((1,), (2,), (3,), 1.0, 0.0, 1.0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.probability = 0.5


def test_registry():
    assert PAIRINGS == {"best_vs_worst": best_vs_worst}
    assert get_pairing("best_vs_worst") is best_vs_worst
    with pytest.raises(ValueError, match=r"unknown pairing 'ranked'; valid: best_vs_worst"):
        get_pairing("ranked")
