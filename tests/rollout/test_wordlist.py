"""The wordlist task: prompts and splits, the three annotator-group criteria, warm-start data."""

import importlib
import math
import random
import statistics

import pytest

from rollout.tasks import wordlist
from rollout.tasks.wordlist import exact_count, ground_truth, parse_prompt, topical, varied

# --------------------------------------------------------------------------- criteria by hand


def test_criteria_hand_computed():
    prompt = "list 3 fruits:"
    response = " apple cat apple apple"  # 4 words: apple x3 (fruit), cat (animal); 2 distinct
    assert topical(prompt, response) == pytest.approx(3 / 4)  # 3 of 4 words are fruits
    assert exact_count(prompt, response) == pytest.approx(2 / 3)  # 1 - |4 - 3| / 3
    assert varied(prompt, response) == pytest.approx(1 / 2)  # 2 distinct / 4 words
    # 0.5 * 0.75 + 0.3 * 2/3 + 0.2 * 0.5 = 0.375 + 0.2 + 0.1
    assert ground_truth(prompt, response) == pytest.approx(0.675)


def test_perfect_short_and_long_responses():
    assert ground_truth("name 1 colors:", " red") == pytest.approx(1.0)
    assert ground_truth("give 2 metals:", " gold silver") == pytest.approx(1.0)
    long = " apple pear plum peach grape mango lemon"  # 7 fruits for n = 3
    assert exact_count("list 3 fruits:", long) == 0.0  # max(0, 1 - 4/3)
    # 0.5 * 1 + 0.3 * 0 + 0.2 * 1
    assert ground_truth("list 3 fruits:", long) == pytest.approx(0.7)
    # Five words for n = 6: 1 - 1/6; all off-topic animals; all distinct.
    assert exact_count("write 6 birds:", " cat dog cow lion bear") == pytest.approx(5 / 6)
    assert topical("write 6 birds:", " cat dog cow lion bear") == 0.0


def test_empty_response_scores_zero():
    for name, fn in wordlist.GROUPS.items():
        assert fn("list 3 fruits:", "") == 0.0, name
        assert fn("list 3 fruits:", "   \n") == 0.0, name
    assert ground_truth("list 3 fruits:", "") == 0.0


def test_unparseable_prompt_and_junk_never_raise():
    # A prompt that is not a task prompt: topical and exact_count have nothing to compare to.
    assert topical("hello there", " apple") == 0.0
    assert exact_count("hello there", " apple") == 0.0
    assert varied("hello there", " apple apple") == pytest.approx(0.5)
    rng = random.Random(0)
    alphabet = "abc xyz APPLE 012 \n\t:;!?é漢😀</s><pad>"
    for _ in range(300):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        response = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for fn in (*wordlist.GROUPS.values(), ground_truth):
            value = fn(prompt, response)
            assert 0.0 <= value <= 1.0 and math.isfinite(value)


def test_groups_and_weights():
    assert wordlist.GROUPS.keys() == wordlist.GROUP_WEIGHTS.keys()
    assert sum(wordlist.GROUP_WEIGHTS.values()) == pytest.approx(1.0)
    module, name = "rollout.tasks.wordlist:ground_truth".split(":")
    assert getattr(importlib.import_module(module), name) is ground_truth


def test_majority_of_groups_is_not_transitive():
    """Each group ranks A, B, C transitively, but the 2-of-3 majority cycles A > B > C > A."""
    prompt = "list 3 fruits:"
    a = " apple pear plum peach apple"  # topical 1,   count 1 - 2/3 = 1/3, varied 4/5 = 0.8
    b = " apple apple cat"  # topical 2/3, count 1,             varied 2/3
    c = " apple cat dog red"  # topical 1/4, count 1 - 1/3 = 2/3, varied 1
    expected = {
        "topical": {a: 1.0, b: 2 / 3, c: 1 / 4},  # A > B > C
        "exact_count": {a: 1 / 3, b: 1.0, c: 2 / 3},  # B > C > A
        "varied": {a: 0.8, b: 2 / 3, c: 1.0},  # C > A > B
    }
    for group, scores in expected.items():
        for response, value in scores.items():
            assert wordlist.GROUPS[group](prompt, response) == pytest.approx(value), (group, response)

    def majority_prefers(x: str, y: str) -> bool:
        votes = sum(fn(prompt, x) > fn(prompt, y) for fn in wordlist.GROUPS.values())
        return votes >= 2

    assert majority_prefers(a, b)  # topical and varied
    assert majority_prefers(b, c)  # topical and exact_count
    assert majority_prefers(c, a)  # exact_count and varied
    # The weighted ground truth is a scalar, so it is transitive: 0.76, 0.7667, 0.525.
    assert [round(ground_truth(prompt, r), 4) for r in (a, b, c)] == [0.76, 0.7667, 0.525]


# --------------------------------------------------------------------------- prompts and splits


@pytest.mark.parametrize(
    "text, expected",
    [
        ("list 3 fruits:", ("fruits", 3)),
        ("  write 2 birds:  ", ("birds", 2)),
        ("give 12 metals:", ("metals", 12)),
        ("name 6 colors :", ("colors", 6)),
        ("list 0 fruits:", None),
        ("list 3 spaceships:", None),
        ("list three fruits:", None),
        ("list 3 fruits", None),
        ("", None),
    ],
)
def test_parse_prompt(text, expected):
    assert parse_prompt(text) == expected


def test_splits_are_disjoint_deterministic_and_cover_train():
    train, heldout = wordlist.train_prompts(), wordlist.heldout_prompts()
    assert train == wordlist.train_prompts() and heldout == wordlist.heldout_prompts()
    total = len(wordlist.TEMPLATES) * len(wordlist.CATEGORIES) * len(wordlist.COUNTS)
    assert len(train) + len(heldout) == total
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in heldout}
    assert not {p.text for p in train} & {p.text for p in heldout}
    assert len({p.prompt_id for p in train + heldout}) == total
    assert 0.1 < len(heldout) / total < 0.3
    parsed = [parse_prompt(p.text) for p in train]
    assert {cat for cat, _ in parsed} == set(wordlist.CATEGORIES)
    assert {n for _, n in parsed} == set(wordlist.COUNTS)
    assert {p.text.split()[0] for p in train} == {t.split()[0] for t in wordlist.TEMPLATES}
    assert all(parse_prompt(p.text) is not None for p in heldout)


# --------------------------------------------------------------------------- warm-start data


def test_sft_corpus_shape_and_quality():
    corpus = wordlist.sft_corpus(seed=3, size=4000)
    assert corpus == wordlist.sft_corpus(seed=3, size=4000)
    assert corpus != wordlist.sft_corpus(seed=4, size=4000)
    train_texts = {p.text for p in wordlist.train_prompts()}
    vocab = {w for items in wordlist.CATEGORIES.values() for w in items}
    for prompt, response in corpus:
        assert prompt in train_texts
        assert response.startswith(" ") and not response.startswith("  ")
        words = response.split()
        assert 1 <= len(words) <= wordlist.CORPUS_MAX_WORDS and set(words) <= vocab
    # Mediocre on purpose (measured 0.58 on 20k samples): room for RL above, task-shaped below.
    mean = statistics.mean(ground_truth(p, r) for p, r in corpus)
    assert 0.5 < mean < 0.66


def test_reward_model_pairs_are_strictly_ordered():
    pairs = wordlist.reward_model_pairs(seed=0, size=500)
    assert len(pairs) == 500 and pairs == wordlist.reward_model_pairs(seed=0, size=500)
    train_texts = {p.text for p in wordlist.train_prompts()}
    for prompt, chosen, rejected in pairs:
        assert prompt in train_texts
        assert ground_truth(prompt, chosen) > ground_truth(prompt, rejected)
    heldout = wordlist.heldout_prompts()
    assert {p for p, _, _ in wordlist.reward_model_pairs(0, 50, heldout)} <= {p.text for p in heldout}
