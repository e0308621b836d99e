"""rollout/judges/population.py: the draw is deterministic, order-symmetric and follows the
weights; the vote is the weighted mean; the built-in task's three annotator groups as hard-voting
members reproduce the known majority cycle (tests/rollout/test_wordlist.py). No model, no Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from deploy.loading import load_manifest
from protocols import PopulationJudgeSpec
from rollout.judges import build_judge
from rollout.judges.population import PopulationJudge

REPO = Path(__file__).resolve().parents[2]
PROMPT = "list 3 fruits:"
A = " apple pear plum peach apple"  # topical 1,   exact_count 1/3, varied 0.8
B = " apple apple cat"  # topical 2/3, exact_count 1,   varied 2/3
C = " apple cat dog red"  # topical 1/4, exact_count 2/3, varied 1


class Constant:
    """A pairwise member answering `value` for every triple; counts its calls."""

    def __init__(self, name: str, value: float):
        self.name, self.value, self.calls = name, value, 0

    def compare(self, prompts, first, second):
        self.calls += 1
        return [self.value] * len(prompts)


class Longer:
    """A pointwise member: the longer response wins; counts its calls and the responses it scored."""

    def __init__(self, name: str):
        self.name, self.calls, self.scored = name, 0, 0

    def score(self, prompts, responses):
        self.calls += 1
        self.scored += len(responses)
        return [float(len(r)) for r in responses]


def member(name: str, weight: float, temperature: float = 1.0) -> dict:
    # the spec only supplies name/weight/temperature here; the judges are the stubs above
    return dict(name=name, kind="rule", function="rollout.tasks.wordlist:varied", weight=weight, temperature=temperature)


def population(mode: str, weights: tuple[float, ...], seed: int = 0, temperature: float = 1.0) -> PopulationJudgeSpec:
    members = tuple(member(f"m{i}", w, temperature) for i, w in enumerate(weights))
    return PopulationJudgeSpec(name="crowd", kind="population", mode=mode, seed=seed, members=members)


def triples(n: int) -> tuple[list[str], list[str], list[str]]:
    return [f"list {1 + i % 6} fruits:" for i in range(n)], [f" a{i}" for i in range(n)], [f" b{i} x" for i in range(n)]


# --------------------------------------------------------------------------- draw


def test_draw_is_deterministic_and_order_symmetric():
    spec = population("draw", (0.5, 0.3, 0.2))
    judge = PopulationJudge(spec, [Constant(f"m{i}", 0.1 * (i + 1)) for i in range(3)])
    again = PopulationJudge(spec, [Constant(f"m{i}", 0.1 * (i + 1)) for i in range(3)])
    prompts, first, second = triples(200)
    draws = [judge.draw(p, a, b) for p, a, b in zip(prompts, first, second)]
    assert draws == [again.draw(p, a, b) for p, a, b in zip(prompts, first, second)]  # another instance
    assert draws == [judge.draw(p, b, a) for p, a, b in zip(prompts, first, second)]  # swapped order
    assert judge.compare(prompts, first, second) == judge.compare(prompts, first, second)
    # the batch a triple arrives in does not matter: one at a time gives the same labels
    assert judge.compare(prompts, first, second) == [judge.compare([p], [a], [b])[0] for p, a, b in zip(prompts, first, second)]
    other_seed = PopulationJudge(population("draw", (0.5, 0.3, 0.2), seed=1), judge.judges)
    assert draws != [other_seed.draw(p, a, b) for p, a, b in zip(prompts, first, second)]


def test_draw_with_symmetric_members_gives_complementary_probabilities():
    spec = population("draw", (1.0, 1.0), temperature=2.0)
    judge = PopulationJudge(spec, [Longer("m0"), Longer("m1")])
    prompts, first, second = triples(50)
    forward, backward = judge.compare(prompts, first, second), judge.compare(prompts, second, first)
    assert all(p + q == pytest.approx(1.0, abs=1e-12) for p, q in zip(forward, backward))
    # len(" b0 x") - len(" a0") = 2: sigmoid(-2 / 2) for every triple, whichever member was drawn
    assert forward[0] == pytest.approx(1 / (1 + math.e))


def test_draw_frequencies_follow_the_weights_and_each_member_is_called_once():
    weights = (0.5, 0.3, 0.2)
    members = [Constant(f"m{i}", 0.1 * (i + 1)) for i in range(3)]
    judge = PopulationJudge(population("draw", weights), members)
    n = 4000
    labels = judge.compare(*triples(n))
    assert [m.calls for m in members] == [1, 1, 1]  # vectorised: one call per member per batch
    for i, w in enumerate(weights):
        count = sum(label == pytest.approx(0.1 * (i + 1)) for label in labels)
        sigma = math.sqrt(n * w * (1 - w))  # binomial standard deviation
        assert abs(count - n * w) <= 4 * sigma, (i, count, n * w, sigma)


# --------------------------------------------------------------------------- vote


def test_vote_is_the_weighted_mean():
    members = [Constant("m0", 0.9), Constant("m1", 0.3), Constant("m2", 0.1)]
    judge = PopulationJudge(population("vote", (2.0, 1.0, 1.0)), members)
    # (2 * 0.9 + 1 * 0.3 + 1 * 0.1) / 4 = 2.2 / 4 = 0.55
    assert judge.compare(*triples(3)) == pytest.approx([0.55] * 3)
    assert [m.calls for m in members] == [1, 1, 1]


def test_pointwise_members_score_each_distinct_response_once():
    scorer = Longer("m0")
    judge = PopulationJudge(population("vote", (1.0,), temperature=0.0), [scorer])
    # all pairs of 3 responses to one prompt: 3 pairs, 3 distinct responses
    prompts, first, second = [PROMPT] * 3, [A, A, B], [B, C, C]
    assert judge.compare(prompts, first, second) == [1.0, 1.0, 0.0]  # longer wins, hard votes
    assert (scorer.calls, scorer.scored) == (1, 3)


def test_members_must_match_the_spec_and_self_members_are_rejected():
    with pytest.raises(ValueError, match="2 judges for 3 member specs"):
        PopulationJudge(population("vote", (1.0, 1.0, 1.0)), [Constant("m0", 0.5), Constant("m1", 0.5)])
    with pytest.raises(ValueError, match="members\\[1\\] \\('me'\\): member 'me' is of kind 'self'"):
        PopulationJudgeSpec(name="crowd", kind="population", members=(member("gt", 1.0), dict(name="me", kind="self")))


# --------------------------------------------------------------------------- the wordlist cycle


def test_shipped_population_reproduces_the_majority_cycle():
    (spec,) = load_manifest(REPO / "deploy" / "judges" / "population.yaml").judges
    assert isinstance(spec, PopulationJudgeSpec) and spec.mode == "vote"
    judge = build_judge(spec)  # rule members: no model paths needed
    prompts, first, second = [PROMPT] * 3, [A, B, C], [B, C, A]
    # each preference is carried by two of three hard votes: (1 + 1 + 0) / 3 = 2/3
    assert judge.compare(prompts, first, second) == pytest.approx([2 / 3] * 3)  # A > B > C > A
    assert judge.compare(prompts, second, first) == pytest.approx([1 / 3] * 3)


def test_drawn_labels_of_the_cycle_average_to_the_vote():
    (spec,) = load_manifest(REPO / "deploy" / "judges" / "population.yaml").judges
    judge = build_judge(spec.model_copy(update={"mode": "draw"}))
    n = 3000  # the same pair under distinct prompt texts (trailing spaces parse alike), each drawn anew
    prompts = [f"{'list' if i % 2 else 'name'} 3 fruits:" + " " * (i // 2) for i in range(n)]
    labels = judge.compare(prompts, [A] * n, [B] * n)
    assert set(labels) <= {0.0, 1.0}  # a single hard annotator per label
    mean = sum(labels) / n  # P(drawn group prefers A) = 2/3 (topical and varied)
    assert abs(mean - 2 / 3) <= 4 * math.sqrt(2 / 9 / n)
