"""Tests for learner/preferences.py: preference matrices and win probabilities from a JudgedBatch."""

import math

import pytest

from learner.preferences import has_rewards, preference_matrix, win_probabilities
from protocols import JudgedBatch, Judgement, PairPreference, Rollout, RolloutBatch


def judged(num_prompts: int, k: int, *judgements: Judgement) -> JudgedBatch:
    rollouts = tuple(
        Rollout(
            prompt_id=f"p{p}",
            prompt_text=f"prompt {p}",
            prompt_token_ids=(100 + p,),
            response_text=f"r{p}.{s}",
            response_token_ids=(10 * p + s,),
            logprobs=(-0.5,),
            policy_version=0,
            finish_reason="stop",
        )
        for p in range(num_prompts)
        for s in range(k)
    )
    batch = RolloutBatch(step=0, policy_version=0, samples_per_prompt=k, rollouts=rollouts)
    return JudgedBatch(batch=batch, judgements=judgements)


def pref(first: int, second: int, probability: float) -> PairPreference:
    return PairPreference(first=first, second=second, probability=probability)


def approx_matrix(expected):
    """pytest.approx for a matrix with None entries."""
    return [[None if x is None else pytest.approx(x) for x in row] for row in expected]


# rm: rewards (ln 4, 0, 0), weight 1; pj: P(0 > 1) = 0.2, P(2 > 1) = 0.9, weight 3; (0, 2) only judged by rm
RM = Judgement(judge="rm", rewards=(math.log(4.0), 0.0, 0.0))
PJ = Judgement(judge="pj", preferences=(pref(0, 1, 0.2), pref(2, 1, 0.9)))
WEIGHTS = {"rm": 1.0, "pj": 3.0}


def test_matrix_reward_and_preference_judges_temperature_one():
    # rm, temperature 1: P01 = P02 = sigmoid(ln 4) = 4 / 5 = 0.8, P12 = 0.5
    # P01 = (1 * 0.8 + 3 * 0.2) / 4 = 0.35    P10 = (1 * 0.2 + 3 * 0.8) / 4 = 0.65
    # P02 = 0.8 (rm alone)                     P20 = 0.2
    # P12 = (1 * 0.5 + 3 * 0.1) / 4 = 0.2      P21 = (1 * 0.5 + 3 * 0.9) / 4 = 0.8
    expected = [[None, 0.35, 0.8], [0.65, None, 0.2], [0.2, 0.8, None]]
    batch = judged(1, 3, RM, PJ)
    assert preference_matrix(batch, WEIGHTS, {"rm": 1.0}) == [approx_matrix(expected)]
    assert preference_matrix(batch, WEIGHTS, {}) == [approx_matrix(expected)]  # a missing temperature is 1.0
    # win probabilities: (0.35 + 0.8) / 2 = 0.575, (0.65 + 0.2) / 2 = 0.425, (0.2 + 0.8) / 2 = 0.5
    assert win_probabilities(batch, WEIGHTS, {}) == pytest.approx([0.575, 0.425, 0.5])


def test_matrix_reward_judge_temperature_zero():
    # rm, temperature 0: P01 = P02 = 1, P12 = 0.5 (a tie)
    # P01 = (1 + 3 * 0.2) / 4 = 0.4, P10 = 0.6; P02 = 1, P20 = 0; P12 = (0.5 + 0.3) / 4 = 0.2, P21 = 0.8
    expected = [[None, 0.4, 1.0], [0.6, None, 0.2], [0.0, 0.8, None]]
    assert preference_matrix(judged(1, 3, RM, PJ), WEIGHTS, {"rm": 0.0}) == [approx_matrix(expected)]


def test_both_orders_are_averaged_and_groups_use_local_indices():
    # group 1 is rollouts 2, 3: P(2 > 3) = 0.9 and P(3 > 2) = 0.2 -> P01 = (0.9 + (1 - 0.2)) / 2 = 0.85
    batch = judged(2, 2, Judgement(judge="p", preferences=(pref(2, 3, 0.9), pref(3, 2, 0.2))))
    matrices = preference_matrix(batch, {"p": 1.0}, {})
    assert matrices[0] == [[None, None], [None, None]]  # nobody compared group 0
    assert matrices[1] == approx_matrix([[None, 0.85], [0.15, None]])
    # win probabilities: group 0 unjudged -> 0.5 each
    assert win_probabilities(batch, {"p": 1.0}, {}) == pytest.approx([0.5, 0.5, 0.85, 0.15])


def test_win_probabilities_skip_unjudged_pairs():
    # adjacent comparisons: P01 = 0.7, P12 = 0.6, (0, 2) unjudged
    # s0 = 0.7 (one judged), s1 = (0.3 + 0.6) / 2 = 0.45, s2 = 0.4
    batch = judged(1, 3, Judgement(judge="p", preferences=(pref(0, 1, 0.7), pref(1, 2, 0.6))))
    assert win_probabilities(batch, {"p": 1.0}, {}) == pytest.approx([0.7, 0.45, 0.4])


def test_a_judge_with_rewards_and_preferences_speaks_once_per_pair():
    # rewards all equal (BT 0.5) but a direct comparison P(0 > 1) = 0.9: the comparison wins for (0, 1)
    batch = judged(1, 3, Judgement(judge="both", rewards=(0.0, 0.0, 0.0), preferences=(pref(0, 1, 0.9),)))
    expected = [[None, 0.9, 0.5], [0.1, None, 0.5], [0.5, 0.5, None]]
    assert preference_matrix(batch, {"both": 1.0}, {}) == [approx_matrix(expected)]


def test_errors_name_the_judge():
    batch = judged(1, 3, RM, PJ)
    with pytest.raises(ValueError, match=r"judge 'pj' gave preferences but has no weight; weights given for \['rm'\]"):
        preference_matrix(batch, {"rm": 1.0}, {})
    with pytest.raises(ValueError, match=r"judge 'rm' gave rewards but has no weight"):
        win_probabilities(batch, {"pj": 1.0}, {})
    with pytest.raises(ValueError, match=r"judge 'pj' has weight -1.0; weights must be > 0"):
        preference_matrix(batch, {"rm": 1.0, "pj": -1.0}, {})
    with pytest.raises(ValueError, match=r"judge 'rm' has Bradley-Terry temperature -1.0"):
        preference_matrix(batch, WEIGHTS, {"rm": -1.0})


def test_has_rewards():
    assert has_rewards(judged(1, 3, RM))
    assert not has_rewards(judged(1, 3, RM, PJ))
