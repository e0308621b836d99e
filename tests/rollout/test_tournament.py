"""rollout/tournament.py: win rates over every cross pair of two entrants' responses, the mirrored
round-robin matrix, worst cases, interval standings; the shipped draw-mode population on the
word-list cycle; and the population-labelled pairs of rollout/tasks/wordlist.py that the
language-model tournament's Bradley-Terry reward model is fitted to. Hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from deploy.loading import load_manifest
from protocols import WinRate
from rollout.evaluation import Z95
from rollout.judges import build_judge
from rollout.tasks import wordlist
from rollout.tournament import (
    head_to_head,
    majority_cycles,
    mirror,
    pointwise,
    prompt_scores,
    round_robin,
    standing,
)

REPO = Path(__file__).resolve().parents[2]
length = pointwise(lambda prompt, response: len(response))  # hard vote: the longer response wins


def rate(win: float, low: float, high: float) -> WinRate:
    return WinRate(win_rate=win, ci_low=low, ci_high=high, num_prompts=2, num_comparisons=2)


# --------------------------------------------------------------------------- head to head


def test_prompt_scores_cover_every_cross_pair_first_major():
    assert prompt_scores(length, ["p"], [["a", "bb"]], [["ccc", "d"]]) == [[0.0, 0.5, 0.0, 1.0]]


def test_pointwise_with_a_temperature_is_the_bradley_terry_probability():
    soft = pointwise(lambda prompt, response: len(response), temperature=2.0)
    assert soft(["p", "p"], ["xxx", "x"], ["x", "xxx"]) == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])


def test_head_to_head_averages_within_a_prompt_then_over_prompts():
    # prompt p: xx > x (1), x = x (0.5) -> 0.75; prompt q: xxx > xx (1), xxx < xxxx (0) -> 0.5
    result = head_to_head(length, ["p", "q"], [["xx", "x"], ["xxx"]], [["x"], ["xx", "xxxx"]])
    half = Z95 * (0.25 / math.sqrt(2)) / math.sqrt(2)  # stdev of (0.75, 0.5) over sqrt(2 prompts)
    assert result.win_rate == pytest.approx(0.625)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.625 - half, 0.625 + half))
    assert (result.num_prompts, result.num_comparisons) == (2, 4)
    assert half == pytest.approx(0.244995, abs=1e-6)


def test_mirror_swaps_the_sides_of_the_interval():
    back = mirror(rate(0.7, 0.6, 0.9))
    assert (back.win_rate, back.ci_low, back.ci_high) == pytest.approx((0.3, 0.1, 0.4))
    assert back.num_prompts == 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: prompt_scores(length, ["p", "q"], [["a"]], [["b"], ["c"]]), "2 prompts but 1 and 2"),
        (lambda: prompt_scores(length, ["p"], [[]], [["b"]]), "at least one response"),
        (lambda: prompt_scores(lambda p, a, b: [0.5], ["p"], [["a", "b"]], [["c"]]), "1 preferences for 2 pairs"),
        (lambda: round_robin(length, ["p"], {"only": [["a"]]}), "at least two entrants"),
    ],
)
def test_malformed_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- the round robin


BEATS = {" rock": " scissors", " paper": " rock", " scissors": " paper"}


def rps(prompts, first, second):
    return [1.0 if BEATS[a] == b else 0.0 if BEATS[b] == a else 0.5 for a, b in zip(first, second)]


def test_worst_case_separates_a_mixed_policy_from_pure_ones_that_the_mean_does_not():
    prompts = ["p"] * 4  # identical prompts: every per-prompt score equal, so intervals are points
    entrants = {name: [[f" {name}"]] * 4 for name in ("rock", "paper", "scissors")}
    entrants["mixed"] = [[" rock", " paper", " scissors"]] * 4
    t = round_robin(rps, prompts, entrants)
    assert t.names == ("rock", "paper", "scissors", "mixed")
    assert t.rate("rock", "scissors").win_rate == 1.0 and t.rate("rock", "paper").win_rate == 0.0
    assert t.rate("rock", "mixed").win_rate == pytest.approx(0.5)  # (0.5 + 0 + 1) / 3
    assert t.rate("mixed", "paper").win_rate == pytest.approx(0.5)
    assert (t.rate("rock", "paper").ci_low, t.rate("rock", "paper").ci_high) == (0.0, 0.0)
    for name in t.names:  # every entrant's mean is 1/2: the mean cannot tell them apart
        assert t.mean(name) == pytest.approx(0.5)
    assert t.worst_case("rock") == ("paper", t.rate("rock", "paper"))
    assert t.worst_case("scissors")[0] == "rock"
    opponent, worst = t.worst_case("mixed")  # the equilibrium: nobody beats it
    assert opponent == "rock" and worst.win_rate == pytest.approx(0.5)  # a tie at 1/2, first in order
    assert t.worst_case("rock", among=["scissors", "mixed"])[0] == "mixed"
    with pytest.raises(ValueError, match="no opponent"):
        t.worst_case("rock", among=["rock"])


def test_the_matrix_is_judged_once_per_pair_and_mirrored():
    calls = []

    def counting(prompts, first, second):
        calls.append(len(prompts))
        return length(prompts, first, second)

    t = round_robin(counting, ["p", "q"], {"a": [["x"], ["xx"]], "b": [["xx"], ["x"]], "c": [["xxx"], ["xxx"]]})
    assert calls == [2, 2, 2]  # (a, b), (a, c), (b, c)
    assert t.rate("b", "a").win_rate == pytest.approx(1 - t.rate("a", "b").win_rate)
    assert t.rate("c", "a").win_rate == 1.0 and t.rate("a", "c").win_rate == 0.0
    # a vs b: p 0 (x < xx), q 1 (xx > x) -> 0.5 +- 1.96 * stdev(0, 1) / sqrt(2) = 0.5 +- 0.98, clipped
    ab, ba = t.rate("a", "b"), t.rate("b", "a")
    assert (ab.win_rate, ab.ci_low, ab.ci_high) == (0.5, 0.0, 1.0) == (ba.win_rate, ba.ci_low, ba.ci_high)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (rate(0.6, 0.55, 0.65), rate(0.5, 0.45, 0.54), "better"),
        (rate(0.5, 0.45, 0.54), rate(0.6, 0.55, 0.65), "worse"),
        (rate(0.5, 0.45, 0.55), rate(0.6, 0.55, 0.65), "overlapping"),  # a shared endpoint overlaps
        (rate(0.6, 0.40, 0.80), rate(0.5, 0.45, 0.55), "overlapping"),
    ],
)
def test_standing_of_two_intervals(a, b, expected):
    assert standing(a, b) == expected


# --------------------------------------------------------------------------- the word-list cycle

PROMPTS = ["list 3 fruits:", "name 3 fruits:"]
A = " apple pear plum peach apple"  # topical 1,   exact_count 1/3, varied 0.8
B = " apple apple cat"  # topical 2/3, exact_count 1,   varied 2/3
C = " apple cat dog red"  # topical 1/4, exact_count 2/3, varied 1


def population(mode: str):
    (spec,) = load_manifest(REPO / "deploy" / "judges" / "population-draw.yaml").judges
    return build_judge(spec.model_copy(update={"mode": mode})).compare


def test_the_populations_expected_labels_cycle_and_every_worst_case_is_one_third():
    t = round_robin(population("vote"), PROMPTS, {"A": [[A]] * 2, "B": [[B]] * 2, "C": [[C]] * 2})
    for a, b in (("A", "B"), ("B", "C"), ("C", "A")):  # two of three groups each: A > B > C > A
        assert t.rate(a, b).win_rate == pytest.approx(2 / 3)
    for name, beaten_by in (("A", "C"), ("B", "A"), ("C", "B")):
        opponent, worst = t.worst_case(name)
        assert opponent == beaten_by and worst.win_rate == pytest.approx(1 / 3)


def test_each_group_alone_is_transitive():
    entrants = {"A": [[A]] * 2, "B": [[B]] * 2, "C": [[C]] * 2}
    topical = round_robin(pointwise(wordlist.topical), PROMPTS, entrants)
    assert [topical.worst_case(n)[1].win_rate for n in "ABC"] == [1.0, 0.0, 0.0]  # A > B > C
    exact = round_robin(pointwise(wordlist.exact_count), PROMPTS, entrants)
    assert exact.worst_case("B")[1].win_rate == 1.0 and exact.rate("C", "A").win_rate == 1.0


def test_majority_cycles_count_strict_triples_by_shape():
    vote = population("vote")
    assert majority_cycles(vote, PROMPTS[0], [A, B, C, B]) == (1, 0)  # duplicates count once
    assert majority_cycles(length, "p", ["x", "xx", "xxx", "xx"]) == (0, 1)
    # four lengths: C(4, 3) = 4 transitive triples; an equal-length pair (P = 1/2) drops its triples
    assert majority_cycles(length, "p", ["x", "xx", "xxx", "xxxx"]) == (0, 4)
    assert majority_cycles(length, "p", ["x", "xx", "yy", "xxx"]) == (0, 2)
    assert majority_cycles(length, "p", ["x"]) == (0, 0)
    # rock, paper, scissors and a fourth that loses to all: 1 cycle + 3 transitive triples
    four = {" rock": {" scissors", " lizard"}, " paper": {" rock", " lizard"}, " scissors": {" paper", " lizard"}}

    def rpsl(prompts, first, second):
        return [1.0 if b in four.get(a, ()) else 0.0 if a in four.get(b, ()) else 0.5 for a, b in zip(first, second)]

    assert majority_cycles(rpsl, "p", [" rock", " paper", " scissors", " lizard"]) == (1, 3)


def test_the_draw_mode_judge_is_order_symmetric_so_mirroring_is_exact():
    draw = population("draw")
    prompts = [f"list {n} fruits:" for n in (2, 3, 4, 5)]
    first = [[A, B, " pear"], [C], [A, C], [" plum plum", B]]
    second = [[C, " kiwi kiwi"], [A, B], [B, " apple"], [C, A, B]]
    forward, backward = prompt_scores(draw, prompts, first, second), prompt_scores(draw, prompts, second, first)
    assert {x for row in forward for x in row} <= {0.0, 0.5, 1.0}  # one hard annotator per label
    for i in range(len(prompts)):  # backward is b-major: entry (b, a) is at b * len(first[i]) + a
        for a in range(len(first[i])):
            for b in range(len(second[i])):
                assert forward[i][a * len(second[i]) + b] == 1.0 - backward[i][b * len(first[i]) + a]
    there, back = head_to_head(draw, prompts, first, second), head_to_head(draw, prompts, second, first)
    assert back.win_rate == pytest.approx(mirror(there).win_rate)
    assert (back.ci_low, back.ci_high) == pytest.approx((mirror(there).ci_low, mirror(there).ci_high))


# --------------------------------------------------------------------------- population-labelled pairs


def test_population_pairs_are_ordered_by_the_drawn_group():
    only_topical = wordlist.population_pairs(seed=0, size=300, weights={"topical": 1.0})
    assert len(only_topical) == 300
    assert all(wordlist.topical(p, c) > wordlist.topical(p, r) for p, c, r in only_topical)
    only_count = wordlist.population_pairs(seed=0, size=300, weights={"exact_count": 2.0})
    assert all(wordlist.exact_count(p, c) > wordlist.exact_count(p, r) for p, c, r in only_count)


def test_population_pairs_with_equal_weights_disagree_with_the_ground_truth_often():
    pairs = wordlist.population_pairs(seed=0, size=2000)
    assert pairs == wordlist.population_pairs(seed=0, size=2000)  # deterministic
    assert pairs != wordlist.population_pairs(seed=1, size=2000)
    train = {p.text for p in wordlist.train_prompts()}
    assert all(p in train for p, _, _ in pairs)
    # every triple is some group's strict preference; a single group decides each, so the labels
    # contradict the weighted ground truth far more often than its own pairs (never) do
    agree = sum(wordlist.ground_truth(p, c) > wordlist.ground_truth(p, r) for p, c, r in pairs) / len(pairs)
    assert 0.6 < agree < 0.85
    for group in wordlist.GROUPS.values():  # each group loses some labels to the other two
        assert sum(group(p, c) < group(p, r) for p, c, r in pairs) > 100


@pytest.mark.parametrize("weights", [{"nope": 1.0}, {"topical": 0.0}, {}])
def test_population_pairs_refuse_bad_weights(weights):
    with pytest.raises(ValueError, match="weights must be positive"):
        wordlist.population_pairs(seed=0, size=1, weights=weights)
