"""Held-out win rate (rollout/evaluation.py) and the Bradley-Terry link (rollout/judges/base.py).

Hand-computed cases carry their arithmetic in comments: the win rate is the mean of per-prompt
scores and the 95% interval is mean +- 1.959964 * sample_stdev / sqrt(num_prompts), clipped to
[0, 1]. A naive reference implementation is compared on random inputs.
"""

from __future__ import annotations

import math
import random

import pytest

from protocols import WinRate
from rollout.evaluation import Z95, win_rate, win_rate_from_rewards
from rollout.judges.base import bradley_terry


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- bradley_terry


def test_z95_is_the_normal_quantile():
    # Phi(1.959964) = 0.975: the two-sided 95% normal quantile.
    assert Z95 == pytest.approx(1.959964, abs=1e-6)
    assert 0.5 * math.erfc(-Z95 / math.sqrt(2)) == pytest.approx(0.975, abs=1e-12)


def test_bradley_terry_hand_computed():
    # sigmoid(1) = 1 / (1 + e^-1) = 1 / 1.3678794 = 0.7310586
    assert bradley_terry(1.0, 0.0, 1.0) == pytest.approx(0.7310586, abs=1e-7)
    # (0.2 - 0.7) / 0.5 = -1 -> sigmoid(-1) = 1 - 0.7310586 = 0.2689414
    assert bradley_terry(0.2, 0.7, 0.5) == pytest.approx(0.2689414, abs=1e-7)
    # (3 - 1) / 4 = 0.5 -> 1 / (1 + e^-0.5) = 1 / 1.6065307 = 0.6224593
    assert bradley_terry(3.0, 1.0, 4.0) == pytest.approx(0.6224593, abs=1e-7)
    # equal rewards are a tie at any temperature
    assert bradley_terry(0.4, 0.4, 1.0) == 0.5
    assert bradley_terry(-7.0, -7.0, 0.01) == 0.5


def test_bradley_terry_is_antisymmetric_and_scales_with_temperature():
    rng = random.Random(1)
    for _ in range(200):
        a, b, t = rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(0.05, 3.0)
        p = bradley_terry(a, b, t)
        assert 0.0 <= p <= 1.0
        assert p + bradley_terry(b, a, t) == pytest.approx(1.0, abs=1e-12)
        assert (p > 0.5) == (a > b) or a == b
        # only the scaled difference matters
        assert bradley_terry(2 * a, 2 * b, 2 * t) == pytest.approx(p, abs=1e-12)


def test_temperature_zero_is_a_hard_comparison_with_ties_at_one_half():
    assert bradley_terry(0.9, 0.1, 0.0) == 1.0
    assert bradley_terry(0.1, 0.9, 0.0) == 0.0
    assert bradley_terry(0.5, 0.5, 0.0) == 0.5
    assert bradley_terry(1e-12, 0.0, 0.0) == 1.0  # any strict difference decides
    assert bradley_terry(-1e-12, 0.0, 0.0) == 0.0


@pytest.mark.parametrize("diff", [50.0, 745.0, 1e4, 1e300])
def test_large_differences_do_not_overflow(diff):
    # math.exp(710) overflows; the stable form only ever exponentiates a non-positive number.
    for temperature in (1.0, 1e-3):
        high = bradley_terry(diff, 0.0, temperature)
        low = bradley_terry(0.0, diff, temperature)
        assert high == pytest.approx(1.0, abs=1e-20) and 0.0 <= low < 1e-20
        assert high + low == pytest.approx(1.0)
    assert bradley_terry(1e308, -1e308, 1.0) == 1.0  # the difference itself is inf
    assert bradley_terry(-1e308, 1e308, 1.0) == 0.0


# --------------------------------------------------------------------------- win_rate


def test_win_rate_hand_computed():
    rows = [[1.0, 0.0], [1.0, 1.0], [0.5, 0.5]]
    wr = win_rate(rows)
    # prompt scores: (1 + 0) / 2 = 0.5, (1 + 1) / 2 = 1.0, (0.5 + 0.5) / 2 = 0.5
    # mean = (0.5 + 1.0 + 0.5) / 3 = 2/3
    # deviations -1/6, 1/3, -1/6 -> squares 1/36 + 4/36 + 1/36 = 1/6; / (3 - 1) = 1/12
    # sample sd = sqrt(1/12) = 0.2886751; sd / sqrt(3) = 0.1666667
    # half width = 1.959964 * 0.1666667 = 0.3266607
    assert isinstance(wr, WinRate)
    assert wr.win_rate == pytest.approx(2 / 3)
    assert wr.ci_low == pytest.approx(2 / 3 - 0.3266607, abs=1e-6)  # 0.3400060
    assert wr.ci_high == pytest.approx(2 / 3 + 0.3266607, abs=1e-6)  # 0.9933274
    assert (wr.num_prompts, wr.num_comparisons) == (3, 6)


def test_win_rate_rows_of_different_lengths_weigh_prompts_equally():
    wr = win_rate([[1.0, 1.0, 1.0, 0.0], [0.0]])
    # prompt scores 3/4 and 0 -> mean 0.375 (not 3/5: prompts, not comparisons, are the units)
    # sample sd = |0.75 - 0| / sqrt(2) = 0.5303301; / sqrt(2) = 0.375; * 1.959964 = 0.7349865
    # interval 0.375 +- 0.7349865 = [-0.36, 1.11] -> clipped to [0, 1]
    assert wr.win_rate == pytest.approx(0.375)
    assert (wr.ci_low, wr.ci_high) == (0.0, 1.0)
    assert (wr.num_prompts, wr.num_comparisons) == (2, 5)


def test_interval_is_clipped_to_the_unit_interval():
    high = win_rate([[1.0], [1.0], [0.0]])
    # mean 2/3; deviations 1/3, 1/3, -2/3 -> squares 1/9 + 1/9 + 4/9 = 2/3; / 2 = 1/3
    # sd = sqrt(1/3) = 0.5773503; / sqrt(3) = 1/3; half = 1.959964 / 3 = 0.6533213
    # interval [2/3 - 0.6533213, 2/3 + 0.6533213] = [0.0133454, 1.3199880] -> high end clipped
    assert high.win_rate == pytest.approx(2 / 3)
    assert high.ci_low == pytest.approx(0.0133454, abs=1e-6)
    assert high.ci_high == 1.0
    low = win_rate([[0.0], [0.0], [1.0]])
    # mirror image: mean 1/3, interval [-0.3199880, 0.9866546] -> low end clipped
    assert low.ci_low == 0.0
    assert low.ci_high == pytest.approx(0.9866546, abs=1e-6)


def test_identical_prompt_scores_give_a_zero_width_interval():
    wr = win_rate([[0.25, 0.75], [0.5], [1.0, 0.0]])  # every prompt scores 0.5 -> sd 0
    assert (wr.win_rate, wr.ci_low, wr.ci_high) == (0.5, 0.5, 0.5)


def test_a_single_prompt_says_nothing_about_spread():
    # One prompt has no sample stdev: the interval is the whole [0, 1].
    wr = win_rate([[1.0, 1.0, 0.0, 1.0]])
    assert wr.win_rate == pytest.approx(0.75)
    assert (wr.ci_low, wr.ci_high, wr.num_prompts, wr.num_comparisons) == (0.0, 1.0, 1, 4)


@pytest.mark.parametrize("rows", [[], [[]], [[1.0], []], [[], [0.5, 0.5]]])
def test_win_rate_needs_a_comparison_for_every_prompt(rows):
    with pytest.raises(ValueError, match="at least one comparison"):
        win_rate(rows)


# --------------------------------------------------------------------------- win_rate_from_rewards


def test_from_rewards_hand_computed():
    # Two prompts, k = 2, temperature 1; rewards are prompt-major.
    policy = [1.0, 0.0, 2.0, 2.0]
    baseline = [0.0, 0.0, 1.0, 3.0]
    wr = win_rate_from_rewards(policy, baseline, samples_per_prompt=2, temperature=1.0)
    # prompt 0: sigmoid(1) = 0.7310586, sigmoid(0) = 0.5     -> 0.6155293
    # prompt 1: sigmoid(1) = 0.7310586, sigmoid(-1) = 0.2689414 -> 0.5
    # mean = 0.5577646; sd = |0.6155293 - 0.5| / sqrt(2) = 0.0816881; / sqrt(2) = 0.0577646
    # half = 1.959964 * 0.0577646 = 0.1132166
    assert wr.win_rate == pytest.approx(0.5577646, abs=1e-7)
    assert wr.ci_low == pytest.approx(0.5577646 - 0.1132166, abs=1e-6)
    assert wr.ci_high == pytest.approx(0.5577646 + 0.1132166, abs=1e-6)
    assert (wr.num_prompts, wr.num_comparisons) == (2, 4)


def test_from_rewards_temperature_zero_counts_ties_as_half():
    policy = [1.0, 0.0, 2.0, 2.0, 0.3, 0.3]
    baseline = [0.0, 1.0, 2.0, 2.0, 0.1, 0.2]
    wr = win_rate_from_rewards(policy, baseline, samples_per_prompt=2, temperature=0.0)
    # prompt 0: win, loss -> 0.5; prompt 1: tie, tie -> 0.5; prompt 2: win, win -> 1.0
    # mean = 2/3; same scores as test_win_rate_hand_computed -> half = 0.3266607
    assert wr.win_rate == pytest.approx(2 / 3)
    assert wr.ci_low == pytest.approx(2 / 3 - 0.3266607, abs=1e-6)
    assert wr.ci_high == pytest.approx(2 / 3 + 0.3266607, abs=1e-6)


def test_from_rewards_is_stable_for_huge_reward_gaps():
    wr = win_rate_from_rewards([1e6, -1e6], [-1e6, 1e6], samples_per_prompt=1, temperature=0.01)
    # P = 1 and 0 exactly (no overflow) -> mean 0.5, sd = 1/sqrt(2), half = 1.959964 / 2 -> [0, 1]
    assert (wr.win_rate, wr.ci_low, wr.ci_high) == (0.5, 0.0, 1.0)


@pytest.mark.parametrize(
    ("policy", "baseline", "k"),
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], 1),  # lengths differ
        ([0.1, 0.2], [0.1, 0.2, 0.3, 0.4], 2),  # lengths differ, each a multiple of k
        ([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], 2),  # not whole groups of k
    ],
)
def test_from_rewards_rejects_mismatched_layouts(policy, baseline, k):
    with pytest.raises(ValueError, match=f"groups of {k}"):
        win_rate_from_rewards(policy, baseline, samples_per_prompt=k, temperature=1.0)


def test_from_rewards_rejects_empty_reward_lists():
    with pytest.raises(ValueError, match="at least one comparison"):
        win_rate_from_rewards([], [], samples_per_prompt=2, temperature=1.0)


# --------------------------------------------------------------------------- naive reference


def naive_win_rate(policy, baseline, k, temperature):
    """Straight from the definition, written independently of the library."""
    scores = []
    for start in range(0, len(policy), k):
        total = 0.0
        for a, b in zip(policy[start : start + k], baseline[start : start + k]):
            if temperature == 0:
                total += 1.0 if a > b else 0.0 if a < b else 0.5
            else:
                total += sigmoid((a - b) / temperature)  # inputs here are small: no overflow
        scores.append(total / k)
    n = len(scores)
    mean = sum(scores) / n
    if n == 1:
        return mean, 0.0, 1.0
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = 1.959964 * sd / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_reference_on_random_inputs(seed):
    rng = random.Random(seed)
    for _ in range(40):
        n, k = rng.randint(1, 12), rng.randint(1, 5)
        temperature = rng.choice([0.0, 0.1, 0.5, 1.0, 2.0])
        # rounded rewards make exact ties likely, which matters at temperature 0
        policy = [round(rng.gauss(0.2, 1.0), 1) for _ in range(n * k)]
        baseline = [round(rng.gauss(0.0, 1.0), 1) for _ in range(n * k)]
        wr = win_rate_from_rewards(policy, baseline, samples_per_prompt=k, temperature=temperature)
        mean, low, high = naive_win_rate(policy, baseline, k, temperature)
        assert wr.win_rate == pytest.approx(mean, abs=1e-12)
        # the reference uses the rounded quantile 1.959964 (|error| < 1e-6 * sd / sqrt(n))
        assert wr.ci_low == pytest.approx(low, abs=1e-6)
        assert wr.ci_high == pytest.approx(high, abs=1e-6)
        assert (wr.num_prompts, wr.num_comparisons) == (n, n * k)
        assert wr.ci_low <= wr.win_rate <= wr.ci_high
