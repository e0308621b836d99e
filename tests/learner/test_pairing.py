"""Tests for learner/pairing.py: the pairing rules that turn a JudgedBatch into (chosen, rejected) pairs."""

import dataclasses
import math

import pytest
from pydantic import ValidationError

from learner.algorithms.dpo import DPOConfig
from learner.pairing import (
    PAIRINGS,
    Pair,
    all_pairs,
    best_vs_worst,
    combined_rewards,
    get_pairing,
    per_judge,
    ranked,
    sampled,
)
from protocols import JudgedBatch, Judgement, PairPreference, Rollout, RolloutBatch


def rollout(prompt: int, sample: int, version: int = 3) -> Rollout:
    """Prompt p has prompt tokens (100 + p,); sample s of it has response tokens (10 p + s, 2)."""
    return Rollout(
        prompt_id=f"p{prompt}",
        prompt_text=f"prompt {prompt}",
        prompt_token_ids=(100 + prompt,),
        response_text=f"r{prompt}.{sample}",
        response_token_ids=(10 * prompt + sample, 2),
        logprobs=(-0.5, -0.1),
        policy_version=version,
        finish_reason="stop",
    )


def judged(num_prompts: int, k: int, *judgements: Judgement, version: int = 3) -> JudgedBatch:
    rollouts = tuple(rollout(p, s, version) for p in range(num_prompts) for s in range(k))
    batch = RolloutBatch(step=0, policy_version=version, samples_per_prompt=k, rollouts=rollouts)
    return JudgedBatch(batch=batch, judgements=judgements)


def test_combined_rewards_weighted_mean_hand_computed():
    batch = judged(
        1,
        3,
        Judgement(judge="a", rewards=(1.0, 0.0, 2.0)),
        Judgement(judge="b", rewards=(0.0, 4.0, 2.0)),
        Judgement(judge="pref", preferences=(PairPreference(first=0, second=1, probability=0.9),)),
    )
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
        0.1,
        0.9,
        0.5,  # prompt 0: best 1, worst 0
        0.3,
        0.3,
        0.3,  # prompt 1: all equal -> no signal, skipped
        0.7,
        0.2,
        0.7,  # prompt 2: best tie 6/8 -> lowest index 6 (sample 0); worst 7 (sample 1)
        0.4,
        0.0,
        0.0,  # prompt 3: worst tie 10/11 -> lowest index 10 (sample 1); best 9 (sample 0)
    )
    pairs = best_vs_worst(judged(4, 3, Judgement(judge="a", rewards=rewards)), {"a": 2.0}, {})
    assert pairs == [
        Pair(
            prompt_token_ids=(100,),
            chosen_token_ids=(1, 2),
            rejected_token_ids=(0, 2),
            chosen_reward=0.9,
            rejected_reward=0.1,
            probability=1.0,
            policy_version=3,
        ),
        Pair(
            prompt_token_ids=(102,),
            chosen_token_ids=(20, 2),
            rejected_token_ids=(21, 2),
            chosen_reward=0.7,
            rejected_reward=0.2,
            probability=1.0,
            policy_version=3,
        ),
        Pair(
            prompt_token_ids=(103,),
            chosen_token_ids=(30, 2),
            rejected_token_ids=(31, 2),
            chosen_reward=0.4,
            rejected_reward=0.0,
            probability=1.0,
            policy_version=3,
        ),
    ]


def test_best_vs_worst_uses_combined_rewards():
    # judge a prefers sample 0, judge b (weight 3) prefers sample 1: combined [0.25, 0.75]
    batch = judged(1, 2, Judgement(judge="a", rewards=(1.0, 0.0)), Judgement(judge="b", rewards=(0.0, 1.0)))
    (pair,) = best_vs_worst(batch, {"a": 1.0, "b": 3.0}, {})
    assert pair.chosen_token_ids.tolist() == [1, 2] and pair.rejected_token_ids.tolist() == [0, 2]
    assert (pair.chosen_reward, pair.rejected_reward) == pytest.approx((0.75, 0.25))
    # equal weights tie every rollout: nothing to learn from
    assert best_vs_worst(batch, {"a": 1.0, "b": 1.0}, {}) == []


def test_best_vs_worst_rejects_mismatched_prompt_tokens():
    a = rollout(0, 0)
    b = rollout(0, 1).model_copy(update={"prompt_token_ids": (999,)})
    batch = RolloutBatch(step=0, policy_version=3, samples_per_prompt=2, rollouts=(a, b))
    with pytest.raises(ValueError, match=r"prompt 'p0': its rollouts carry different prompt_token_ids"):
        best_vs_worst(JudgedBatch(batch=batch, judgements=(Judgement(judge="a", rewards=(1.0, 0.0)),)), {"a": 1.0}, {})


def test_pair_is_frozen():
    pair = Pair((1,), (2,), (3,), 1.0, 0.0, 1.0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.probability = 0.5


def prefs(group: int, k: int, *triples: tuple[int, int, float]) -> tuple[PairPreference, ...]:
    """PairPreferences of one group from (first, second, P(first > second)) with in-group indices."""
    return tuple(PairPreference(first=group * k + a, second=group * k + b, probability=p) for a, b, p in triples)


def orders(pairs: list[Pair]) -> list[tuple[int, int]]:
    """(chosen sample, rejected sample) of each pair, read back from the response tokens (10 p + s, 2)."""
    return [(pair.chosen_token_ids[0] % 10, pair.rejected_token_ids[0] % 10) for pair in pairs]


# P(i > j) of one K=3 group, every pair judged:
#   P01 = 0.3, P02 = 0.6, P12 = 0.8   (so P10 = 0.7, P20 = 0.4, P21 = 0.2)
#   win rates: s0 = (0.3 + 0.6) / 2 = 0.45, s1 = (0.7 + 0.8) / 2 = 0.75, s2 = (0.4 + 0.2) / 2 = 0.3
THREE = ((0, 1, 0.3), (0, 2, 0.6), (1, 2, 0.8))


def test_best_vs_worst_with_preferences_only_scores_by_win_probability():
    batch = judged(1, 3, Judgement(judge="p", preferences=prefs(0, 3, *THREE)))
    (pair,) = best_vs_worst(batch, {"p": 1.0}, {})
    # best s1 = 0.75, worst s2 = 0.3; probability P12 = 0.8; no rewards: the rewards are the win rates
    assert orders([pair]) == [(1, 2)]
    assert (pair.chosen_reward, pair.rejected_reward, pair.probability) == pytest.approx((0.75, 0.3, 0.8))


def test_best_vs_worst_with_a_preference_only_judge_scores_by_win_probability():
    # rm (weight 1, temperature 0): sample 0 better, P01 = 1; pj (weight 3): P01 = 0
    # P01 = (1 * 1 + 3 * 0) / 4 = 0.25 -> s0 = 0.25, s1 = 0.75: sample 1 chosen with P10 = 0.75
    batch = judged(1, 2, Judgement(judge="rm", rewards=(1.0, 0.0)), Judgement(judge="pj", preferences=prefs(0, 2, (0, 1, 0.0))))
    (pair,) = best_vs_worst(batch, {"rm": 1.0, "pj": 3.0}, {"rm": 0.0})
    assert orders([pair]) == [(1, 0)]
    # the reward fields carry the combined reward of the judges that gave rewards (rm alone)
    assert (pair.chosen_reward, pair.rejected_reward, pair.probability) == pytest.approx((0.0, 1.0, 0.75))


def test_ranked_pairs_first_with_last_and_keeps_matrix_probabilities():
    # K=4; P20 = 0.6, P23 = 0.7, P21 = 0.9, P03 = 0.6, P01 = 0.8, P31 = 0.7 (given in mixed orders)
    # s2 = (0.6 + 0.7 + 0.9) / 3 = 2.2/3, s0 = (0.4 + 0.6 + 0.8) / 3 = 1.8/3,
    # s3 = (0.3 + 0.4 + 0.7) / 3 = 1.4/3, s1 = (0.1 + 0.2 + 0.3) / 3 = 0.6/3
    # ranks 2, 0, 3, 1: pairs (rank 1 vs 4) = (2, 1) with P21 = 0.9, (rank 2 vs 3) = (0, 3) with P03 = 0.6
    p = prefs(0, 4, (0, 2, 0.4), (2, 3, 0.7), (1, 2, 0.1), (0, 3, 0.6), (0, 1, 0.8), (3, 1, 0.7))
    pairs = ranked(judged(1, 4, Judgement(judge="p", preferences=p)), {"p": 2.0}, {})
    assert orders(pairs) == [(2, 1), (0, 3)]
    assert [pair.probability for pair in pairs] == pytest.approx([0.9, 0.6])
    assert [x for pair in pairs for x in (pair.chosen_reward, pair.rejected_reward)] == pytest.approx(
        [2.2 / 3, 0.6 / 3, 1.8 / 3, 1.4 / 3]
    )


def test_ranked_falls_back_on_win_rates_for_unjudged_pairs_and_skips_no_signal():
    # group 0, adjacent comparisons only: P01 = P12 = P23 = 0.8
    #   s0 = 0.8, s1 = (0.2 + 0.8) / 2 = 0.5, s2 = 0.5, s3 = 0.2; ranks 0, 1, 2, 3 (tie 1/2: lower index first)
    #   (0, 3) unjudged: fallback 0.5 + (0.8 - 0.2) / 2 = 0.8; (1, 2): P12 = 0.8
    # group 1: P(4 > 5) = 0.5, nothing else judged: all scores 0.5 and probabilities 0.5 -> skipped
    p = prefs(0, 4, (0, 1, 0.8), (1, 2, 0.8), (2, 3, 0.8)) + prefs(1, 4, (0, 1, 0.5))
    pairs = ranked(judged(2, 4, Judgement(judge="p", preferences=p)), {"p": 1.0}, {})
    assert orders(pairs) == [(0, 3), (1, 2)]
    assert [pair.probability for pair in pairs] == pytest.approx([0.8, 0.8])


def test_ranked_on_a_preference_cycle_is_deterministic():
    # A > B > C > A, each with 0.9: every win rate is (0.9 + 0.1) / 2 = 0.5, ranks by index 0, 1, 2;
    # the one pair is (0, 2) and keeps the judged P02 = 1 - 0.9 = 0.1 (the cycle: C beats A)
    cycle = ((0, 1, 0.9), (1, 2, 0.9), (2, 0, 0.9))
    batch = judged(1, 3, Judgement(judge="p", preferences=prefs(0, 3, *cycle)))
    shuffled = judged(1, 3, Judgement(judge="p", preferences=prefs(0, 3, *reversed(cycle))))
    pairs = ranked(batch, {"p": 1.0}, {})
    assert orders(pairs) == [(0, 2)] and pairs[0].probability == pytest.approx(0.1)
    assert ranked(batch, {"p": 1.0}, {}) == pairs == ranked(shuffled, {"p": 1.0}, {})
    # all_pairs orients each comparison by its own judgement: 0 > 1, 2 > 0, 1 > 2, all 0.9
    pairs = all_pairs(batch, {"p": 1.0}, {})
    assert orders(pairs) == [(0, 1), (2, 0), (1, 2)]
    assert [pair.probability for pair in pairs] == pytest.approx([0.9, 0.9, 0.9])


def test_all_pairs_orients_and_skips_ties_and_unjudged():
    # group 0 (THREE): (0, 1) -> 1 over 0 with 0.7; (0, 2) -> 0 over 2 with 0.6; (1, 2) -> 1 over 2 with 0.8
    # group 1: P(0 > 1) = 0.5 skipped, (0, 2) never judged, P(1 > 2) = 0.2 -> 2 over 1 with 0.8
    p = prefs(0, 3, *THREE) + prefs(1, 3, (0, 1, 0.5), (1, 2, 0.2))
    pairs = all_pairs(judged(2, 3, Judgement(judge="p", preferences=p)), {"p": 1.0}, {})
    assert orders(pairs) == [(1, 0), (0, 2), (1, 2), (2, 1)]
    assert [pair.prompt_token_ids.tolist() for pair in pairs] == [[100]] * 3 + [[101]]
    assert [pair.probability for pair in pairs] == pytest.approx([0.7, 0.6, 0.8, 0.8])
    assert all(pair.probability >= 0.5 for pair in pairs)


def test_all_pairs_with_rewards_uses_bradley_terry():
    # rewards (1, 1, 0), temperature 2: P01 = 0.5 skipped; P02 = P12 = sigmoid(1 / 2)
    batch = judged(1, 3, Judgement(judge="rm", rewards=(1.0, 1.0, 0.0)))
    pairs = all_pairs(batch, {"rm": 1.0}, {"rm": 2.0})
    assert orders(pairs) == [(0, 2), (1, 2)]
    assert [pair.probability for pair in pairs] == pytest.approx([1 / (1 + math.exp(-0.5))] * 2)


def test_sampled_draws_the_order_with_the_judged_probability():
    n = 400
    # per prompt P(sample 0 > sample 1) = 0.8: win rates 0.8 / 0.2, so best = 0, worst = 1
    p = sum((prefs(g, 2, (0, 1, 0.8)) for g in range(n)), ())

    def run(version: int) -> list[Pair]:
        return sampled(judged(n, 2, Judgement(judge="p", preferences=p), version=version), {"p": 1.0}, {})

    pairs = run(3)
    assert len(pairs) == n and pairs == run(3)  # deterministic: seeded from (prompt_id, policy_version)
    kept = [o == (0, 1) for o in orders(pairs)]
    # the probability is P(chosen > rejected) after the draw
    assert [pair.probability for pair in pairs] == pytest.approx([0.8 if k else 0.2 for k in kept])
    # Binomial(400, 0.8): mean 320, sigma = sqrt(400 * 0.8 * 0.2) = 8; allow 4 sigma
    assert abs(sum(kept) - 320) <= 32
    # another policy version draws anew (400 identical draws would have probability ~0)
    assert orders(run(4)) != orders(pairs)
    # the draw depends only on (prompt_id, version): the same prompt alone in a batch draws the same way
    single = judged(1, 2, Judgement(judge="p", preferences=prefs(0, 2, (0, 1, 0.8))))
    assert orders(sampled(single, {"p": 1.0}, {})) == orders(pairs[:1])


def test_sampled_with_hard_rewards_equals_best_vs_worst_order():
    rewards = (0.1, 0.9, 0.5, 0.3, 0.3, 0.3, 0.7, 0.2, 0.7)
    batch = judged(3, 3, Judgement(judge="a", rewards=rewards))
    # temperature 0: P(best > worst) = 1, so the best always comes first; the tied prompt is skipped
    pairs = sampled(batch, {"a": 1.0}, {"a": 0.0})
    assert pairs == best_vs_worst(batch, {"a": 1.0}, {"a": 0.0})
    # temperature 1: the same pairs or their reverse, probability sigmoid(+-(r_best - r_worst))
    for pair in sampled(batch, {"a": 1.0}, {}):
        assert pair.probability == pytest.approx(1 / (1 + math.exp(pair.rejected_reward - pair.chosen_reward)))


def test_per_judge_labels_group_g_by_judge_g_mod_n():
    # judge a (rewards, temperature 0.5): best 0, worst 1 in every group, P = sigmoid((1 - 0) / 0.5) = sigmoid(2)
    # judge b (preferences only): P20 = 0.7, P21 = 0.9, P01 = 0.6 -> s2 = 0.8, s0 = 0.45, s1 = 0.25:
    #   best 2, worst 1, P21 = 0.9
    # groups 0, 2, 4 -> a; 1, 3 -> b; a ties in group 4 (rewards all 0.5) -> skipped
    rewards = (1.0, 0.0, 0.5) * 4 + (0.5, 0.5, 0.5)
    p = sum((prefs(g, 3, (2, 0, 0.7), (2, 1, 0.9), (0, 1, 0.6)) for g in range(5)), ())
    a = Judgement(judge="a", rewards=rewards)
    b = Judgement(judge="b", preferences=p)
    pairs = per_judge(judged(5, 3, a, b), {}, {"a": 0.5})  # weights are not used
    assert orders(pairs) == [(0, 1), (2, 1), (0, 1), (2, 1)]
    assert [pair.prompt_token_ids.tolist() for pair in pairs] == [[100], [101], [102], [103]]
    sigmoid2 = 1 / (1 + math.exp(-2))
    assert [pair.probability for pair in pairs] == pytest.approx([sigmoid2, 0.9, sigmoid2, 0.9])
    assert (pairs[0].chosen_reward, pairs[1].chosen_reward) == pytest.approx((1.0, 0.8))
    # the judges' order decides: b first labels groups 0, 2, 4 (group 4 is no tie for b)
    swapped = per_judge(judged(5, 3, b, a), {}, {"a": 0.5})
    assert orders(swapped) == [(2, 1), (0, 1), (2, 1), (0, 1), (2, 1)]


def test_rules_skip_groups_without_signal():
    batch = judged(2, 2, Judgement(judge="a", rewards=(0.3, 0.3, 0.3, 0.3)))
    for rule in PAIRINGS.values():
        assert rule(batch, {"a": 1.0}, {}) == []


def test_registry():
    assert PAIRINGS == {
        "best_vs_worst": best_vs_worst,
        "ranked": ranked,
        "all_pairs": all_pairs,
        "sampled": sampled,
        "per_judge": per_judge,
    }
    assert get_pairing("ranked") is ranked
    with pytest.raises(
        ValueError,
        match=r"unknown pairing 'nope'; valid: all_pairs, best_vs_worst, per_judge, "
        r"ranked, sampled",
    ):
        get_pairing("nope")
    # the pairing names exist once: the config field accepts exactly the registered ones
    assert DPOConfig(pairing="per_judge").pairing == "per_judge"
    with pytest.raises(ValidationError, match=r"unknown pairing 'nope'; valid: best_vs_worst, ranked, all_pairs"):
        DPOConfig(pairing="nope")
