"""The instruct task: constraint checks by hand, prompt parsing round trip, splits, groups, cycles."""

import math
import random
from fractions import Fraction

import pytest

from protocols import TaskConfig
from rollout.judges.rule import resolve_function
from rollout.tasks import instruct, load_task
from rollout.tasks.base import in_heldout
from rollout.tasks.instruct import Constraint, ground_truth, met, parse_constraints, satisfaction

# --------------------------------------------------------------------------- constraint checks by hand

C = Constraint


@pytest.mark.parametrize(
    "constraint, response, expected",
    [
        # word_exact 6: 1 - |words - 6| / 6
        (C("word_exact", 6), "Waves roll in, slow and steady.", 1.0),
        (C("word_exact", 6), "It is a well-known fact.", 1.0),  # well, known: two words
        (C("word_exact", 6), "The ocean is huge.", 2 / 3),
        (C("word_exact", 6), "I don't know.", 1 / 2),  # don't: one word
        (C("word_exact", 6), " ".join(["sea"] * 13), 0.0),  # 1 - 7/6 < 0
        # word_max 8: 1 up to 8 words, then 1 - (words - 8) / 8
        (C("word_max", 8), "One two three four five six seven eight.", 1.0),
        (C("word_max", 8), "Short.", 1.0),
        (C("word_max", 8), "One two three four five six seven eight nine ten eleven twelve.", 1 / 2),
        # bullets 3: lines "- text", leading spaces allowed; "-x" and "* x" are not bullets
        (C("bullets", 3), "- sand\n- waves\n- salt", 1.0),
        (C("bullets", 3), "Here:\n  - sand\n- waves\n- salt\nThat is it.", 1.0),
        (C("bullets", 3), "- sand\n-waves\n* salt", 1 / 3),
        (C("bullets", 3), "- a\n- b\n- c\n- d\n- e", 1 / 3),
        (C("bullets", 3), "sand, waves and salt", 0.0),
        # no_commas: 1 / (1 + commas)
        (C("no_commas"), "No commas here.", 1.0),
        (C("no_commas"), "One, two, three.", 1 / 3),
        # lowercase: lowercase letters / cased letters
        (C("lowercase"), "all quiet here, 42 times.", 1.0),
        (C("lowercase"), "Hello world", 9 / 10),
        (C("lowercase"), "123 456", 0.0),  # no letters: nothing is lowercase
        # keyword: a whole word, any case
        (C("keyword", "blue"), "The sky is Blue.", 1.0),
        (C("keyword", "blue"), "A blue-green sea.", 1.0),
        (C("keyword", "blue"), "A bluebird sings.", 0.0),
        (C("keyword", "blue"), "Red sky.", 0.0),
        # start_word: the first word, any case, punctuation before it ignored
        (C("start_word", "Yes"), "Yes, the ocean is deep.", 1.0),
        (C("start_word", "Yes"), '**"yes" it is**', 1.0),
        (C("start_word", "Yes"), "Sure, yes.", 0.0),
        (C("start_word", "Yes"), "Yesterday was fine.", 0.0),
        # end_phrase: the last words, any case, punctuation ignored
        (C("end_phrase", "that is all"), "Waves come and go. That is all!", 1.0),
        (C("end_phrase", "that is all"), "that is all :)", 1.0),
        (C("end_phrase", "that is all"), "That is all, friend.", 0.0),
        (C("end_phrase", "that is all"), "That is all folks", 0.0),
        (C("end_phrase", "that is all"), "all", 0.0),
    ],
)
def test_satisfaction_by_hand(constraint, response, expected):
    assert satisfaction(constraint, response) == pytest.approx(expected)
    assert met(constraint, response) == (expected == 1.0)


@pytest.mark.parametrize("kind", instruct.KINDS)
def test_a_response_without_words_satisfies_nothing(kind):
    arg = {"word_exact": 5, "word_max": 8, "bullets": 2, "keyword": "blue", "start_word": "Yes", "end_phrase": "the end"}.get(
        kind
    )
    for response in ("", "   \n", "...", "- \n- "):
        assert satisfaction(C(kind, arg), response) == 0.0, (kind, response)


def test_ground_truth_is_the_fraction_of_constraints_met():
    prompt = 'Describe the ocean. Answer in at most 8 words. Do not use any commas. Include the word "blue".'
    assert ground_truth(prompt, "The blue ocean is deep.") == 1.0
    assert ground_truth(prompt, "The blue ocean is deep, wide and cold.") == pytest.approx(2 / 3)  # comma
    assert ground_truth(prompt, "The ocean is deep, wide and cold.") == pytest.approx(1 / 3)  # comma, no blue
    long = "The ocean is deep, wide, cold and full of fish and whales and ships."  # 14 words, commas
    assert ground_truth(prompt, long) == 0.0
    assert ground_truth(prompt, "") == 0.0


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Describe cats. Answer in exactly 7 words.", (C("word_exact", 7),)),
        (
            (
                'Tell me about tea. Start your answer with the word "Once". Write in lowercase letters only. '
                'End your answer with the words "see you soon".'
            ),
            (C("start_word", "Once"), C("lowercase"), C("end_phrase", "see you soon")),
        ),
        (
            ('Write about snow. Format your answer as exactly 3 bullet points starting with "- ". Do not use any commas.'),
            (C("bullets", 3), C("no_commas")),
        ),
        ('Please Include the word "kite". Answer in at most 12 words.', (C("keyword", "kite"), C("word_max", 12))),
        ("Describe cats. Answer in exactly 0 words.", ()),  # a count below 1 is skipped
        ("Describe cats.", ()),
        ("answer in exactly 7 words.", ()),  # the phrasings are fixed, case included
        ("list 3 fruits:", ()),
        ("", ()),
    ],
)
def test_parse_constraints(text, expected):
    assert parse_constraints(text) == expected


def test_every_generated_prompt_parses_back_to_its_constraints():
    generated = instruct.generate(seed=0, size=TaskConfig().size)
    assert len(generated) == TaskConfig().size
    kinds_seen, sizes_seen = set(), set()
    for prompt, constraints in generated:
        assert parse_constraints(prompt.text) == constraints, prompt.text
        kinds = [c.kind for c in constraints]
        assert len(set(kinds)) == len(kinds)
        assert not any(frozenset((a, b)) in instruct.CONFLICTS for a in kinds for b in kinds)
        kinds_seen.update(kinds)
        sizes_seen.add(len(constraints))
    assert kinds_seen == set(instruct.KINDS)
    assert sizes_seen == {1, 2, 3}


def test_each_generated_prompt_is_satisfiable():
    """Build a response meeting every constraint of each prompt: the generator makes no impossible prompt."""
    for prompt, constraints in instruct.generate(seed=1, size=300):
        by_kind = dict(constraints)
        tail = [str(by_kind[k]) for k in ("keyword", "end_phrase") if k in by_kind]
        if "bullets" in by_kind:
            lines = [f"- point {i}" for i in range(int(by_kind["bullets"]))]
            response = "\n".join(lines) + " " + " ".join(tail)
        else:
            head = [str(by_kind.get("start_word", "so"))]
            filler = max(0, int(by_kind.get("word_exact", 0)) - len(instruct.words(" ".join(head + tail))))
            response = " ".join(head + ["waves"] * filler + tail)
        if "lowercase" in by_kind:
            response = response.lower()
        assert ground_truth(prompt.text, response) == 1.0, (prompt.text, response)


# --------------------------------------------------------------------------- generation and splits


def test_generation_is_deterministic_per_seed():
    first = instruct.generate(seed=5, size=200)
    assert first == instruct.generate(seed=5, size=200)
    assert [p.text for p, _ in first] != [p.text for p, _ in instruct.generate(seed=6, size=200)]
    assert len({p.text for p, _ in first}) == 200
    assert all(p.prompt_id == instruct.prompt_id(p.text) for p, _ in first)


@pytest.mark.parametrize("heldout_percent", [20, 50])
def test_load_splits_by_hash_near_heldout_percent(heldout_percent):
    cfg = TaskConfig(name="instruct", size=2000, heldout_percent=heldout_percent, seed=3)
    task = load_task(cfg)
    prompts = [p for p, _ in instruct.generate(seed=3, size=2000)]
    expected_heldout = [p for p in prompts if in_heldout(f"instruct:3:{p.prompt_id}", heldout_percent)]
    assert list(task.heldout) == expected_heldout
    heldout_ids = {p.prompt_id for p in expected_heldout}
    assert list(task.train) == [p for p in prompts if p.prompt_id not in heldout_ids]
    assert not {p.prompt_id for p in task.train} & heldout_ids
    # Binomial(2000, p): three standard deviations are under 3.4 percentage points.
    assert abs(len(task.heldout) / 2000 - heldout_percent / 100) < 0.034
    assert load_task(cfg) == task


def test_task_names_importable_functions():
    task = instruct.load(TaskConfig(name="instruct", size=50))
    assert task.name == "instruct" and len(task.train) + len(task.heldout) == 50
    assert resolve_function(task.ground_truth) is ground_truth
    assert task.groups == {
        "form": "rollout.tasks.instruct:form",
        "length": "rollout.tasks.instruct:length",
        "content": "rollout.tasks.instruct:content",
    }
    for name, path in task.groups.items():
        assert resolve_function(path) is instruct.GROUPS[name]


# --------------------------------------------------------------------------- groups


def test_groups_weight_their_own_kinds():
    prompt = 'Describe cats. Do not use any commas. Include the word "soft".'
    response = "Cats are soft, warm."  # no_commas 1/2, keyword 1
    assert instruct.form(prompt, response) == pytest.approx((1 * 0.5 + 0.25 * 1) / 1.25)  # 0.6
    assert instruct.content(prompt, response) == pytest.approx((0.25 * 0.5 + 1 * 1) / 1.25)  # 0.9
    # No count constraint here: the length group judges like a lenient ground truth, the plain mean.
    assert instruct.length(prompt, response) == pytest.approx(0.75)
    assert ground_truth(prompt, response) == pytest.approx(0.5)


def test_non_task_prompts_and_garbage_never_raise():
    for fn in (*instruct.GROUPS.values(), ground_truth):
        assert fn("hello there", "hello") == 0.0
        assert fn("", "") == 0.0
    rng = random.Random(0)
    pieces = [
        *(instruct.sentence(C(k, a)) for k, a in [("word_exact", 5), ("keyword", "x"), ("no_commas", None)]),
        "Answer in exactly 0 words.",
        "Answer in exactly 999 words.",
        'Include the word "".',
        'End your answer with the words "!!".',
        "- ",
        "\n",
        ",",
        "é漢😀",
        "A",
        "b",
        " ",
        "'",
        '"',
        "_",
    ]
    for _ in range(500):
        prompt = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        response = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for fn in (*instruct.GROUPS.values(), ground_truth):
            value = fn(prompt, response)
            assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0, (prompt, response)


def test_majority_of_groups_is_not_transitive():
    """Each group ranks A, B, C transitively, but the 2-of-3 majority cycles A > B > C > A, while
    the ground truth ties all three (each meets exactly one of the three constraints)."""
    prompt = 'Describe the ocean. Answer in exactly 6 words. Do not use any commas. Include the word "blue".'
    a = "The ocean is huge."  # 0 commas (form 1), 4 words (length 2/3), no "blue" (content 0)
    b = "Waves roll in, slow and steady."  # 1 comma (1/2), 6 words (1), no "blue" (0)
    c = "Blue, calm, deep, vast."  # 3 commas (1/4), 4 words (2/3), "blue" (1)
    # Weighted means (own kind 1, others 1/4, total weight 3/2), worked by hand:
    expected = {
        "form": {a: Fraction(7, 9), b: Fraction(1, 2), c: Fraction(4, 9)},  # A > B > C
        "length": {a: Fraction(11, 18), b: Fraction(3, 4), c: Fraction(47, 72)},  # B > C > A
        "content": {a: Fraction(5, 18), b: Fraction(1, 4), c: Fraction(59, 72)},  # C > A > B
    }
    for group, scores in expected.items():
        for response, value in scores.items():
            assert instruct.GROUPS[group](prompt, response) == pytest.approx(float(value)), (group, response)

    def majority_prefers(x: str, y: str) -> bool:
        return sum(fn(prompt, x) > fn(prompt, y) for fn in instruct.GROUPS.values()) >= 2

    assert majority_prefers(a, b)  # form and content
    assert majority_prefers(b, c)  # form and length
    assert majority_prefers(c, a)  # length and content
    assert not majority_prefers(b, a) and not majority_prefers(c, b) and not majority_prefers(a, c)
    assert [ground_truth(prompt, r) for r in (a, b, c)] == [pytest.approx(1 / 3)] * 3
