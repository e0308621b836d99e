"""The arithmetic task: answer extraction by hand, question parsing round trip, splits, groups, cycles."""

import math
import random
from decimal import Decimal

import pytest

from protocols import TaskConfig
from rollout.judges.rule import resolve_function
from rollout.tasks import arithmetic, load_task
from rollout.tasks.arithmetic import Question, extract_answer, ground_truth, parse_question
from rollout.tasks.base import in_heldout

# --------------------------------------------------------------------------- answers by hand


@pytest.mark.parametrize(
    "prompt, response, expected",
    [
        ("What is 17 + 25?", "42", 1.0),
        ("What is 17 + 25?", "42.", 1.0),
        ("What is 17 + 25?", "= 42", 1.0),
        ("What is 17 + 25?", "The answer is 42.", 1.0),
        ("What is 17 + 25?", "**42**", 1.0),
        ("What is 17 + 25?", "17 + 25 = 42", 1.0),  # the question's own numbers are skipped
        ("What is 17 + 25?", "17+25=42", 1.0),
        ("What is 17 + 25?", "42.0", 1.0),
        ("What is 17 + 25?", "42 or 43", 1.0),
        ("What is 17 + 25?", "40 or 42", 0.0),  # the first new number counts
        ("What is 17 + 25?", "42.5", 0.0),
        ("What is 17 + 25?", "-42", 0.0),
        ("What is 17 + 25?", "forty-two", 0.0),  # numbers in words are not read
        ("What is 17 + 25?", "x42", 0.0),  # glued to a word: not a number
        ("What is 17 + 25?", "17 and 25", 0.0),  # no new number at all
        ("What is 17 + 25?", "", 0.0),
        ("Calculate 70 minus 26. Answer with the number only.", "44", 1.0),
        ("Compute 70 - 26.", "70-26 = 44", 1.0),  # "-26" after a digit is not negative
        ("What is 6 times 7?", "6 x 7 is 42", 1.0),
        ("What is 6 * 7? Reply with just the number.", "42\n", 1.0),
        ("Calculate 84 divided by 7.", "It is 12.", 1.0),
        ("What is 84 / 7?", "84 / 7 = 11", 0.0),
        ("How many minutes are in 3 hours?", "180", 1.0),
        ("How many minutes are in 3 hours?", "There are 60 minutes in 1 hour, so 3 hours is 180 minutes.", 1.0),
        ("How many minutes are in 3 hours?", "3 hours = 120 minutes", 0.0),
        ("How many meters are there in 5 kilometers?", "5,000 meters", 1.0),
        ("How many meters are there in 5 kilometers?", "5,00 meters", 0.0),  # not a thousands grouping
        ("How many centimeters are in 2 meters?", "200cm", 1.0),
        ("Tell me a joke.", "42", 0.0),  # not a task prompt
    ],
)
def test_ground_truth_by_hand(prompt, response, expected):
    assert ground_truth(prompt, response) == expected


def test_extract_answer_values():
    q = Question("add", 17, 25, 42)
    assert extract_answer(q, "17 + 25 = 42") == Decimal(42)
    assert extract_answer(q, "1,234 then 5") == Decimal(1234)
    assert extract_answer(q, "= -3") == Decimal(-3)
    assert extract_answer(q, "3.25") == Decimal("3.25")
    assert extract_answer(q, "no number") is None
    conversion = Question("minutes/hours", 3, 60, 180)
    assert conversion.own_numbers() == {1, 3, 60}
    assert extract_answer(conversion, "1 hour has 60 minutes; 3 hours have 180") == Decimal(180)
    # An answer equal to one of the question's numbers (never generated) is still readable.
    assert Question("sub", 10, 5, 5).own_numbers() == {10}
    assert ground_truth("What is 10 - 5?", "10 - 5 = 5") == 1.0


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("What is 17 + 25?", Question("add", 17, 25, 42)),
        ("Compute 74 plus 78. Give only the final number.", Question("add", 74, 78, 152)),
        ("Calculate 70 minus 26.", Question("sub", 70, 26, 44)),
        ("What is 13 - 10?", Question("sub", 13, 10, 3)),
        ("What is 6 times 7?", Question("mul", 6, 7, 42)),
        ("Compute 4 * 11.", Question("mul", 4, 11, 44)),
        ("What is 10 multiplied by 3?", Question("mul", 10, 3, 30)),
        ("Calculate 84 divided by 7.", Question("div", 84, 7, 12)),
        ("What is 18 / 9? Reply with just the number.", Question("div", 18, 9, 2)),
        ("How many minutes are in 3 hours?", Question("minutes/hours", 3, 60, 180)),
        ("How many grams are there in 4 kilograms?", Question("grams/kilograms", 4, 1000, 4000)),
        ("Quick one: How many days are in 2 weeks? Thanks.", Question("days/weeks", 2, 7, 14)),
        ("What is 7 divided by 2?", None),  # no integer answer
        ("What is 7 / 0?", None),
        ("How many apples are in 3 boxes?", None),  # unknown units
        ("How many hours are in 3 minutes?", None),  # units the wrong way round
        ("What is 5 modulo 2?", None),
        ("What is five plus two?", None),
        ("list 3 fruits:", None),
        ("", None),
    ],
)
def test_parse_question(text, expected):
    assert parse_question(text) == expected


def test_every_generated_prompt_parses_back_to_its_question():
    generated = arithmetic.generate(seed=0, size=TaskConfig().size)
    assert len(generated) == TaskConfig().size
    kinds = set()
    instructed = 0
    for prompt, question in generated:
        assert parse_question(prompt.text) == question, prompt.text
        assert question.answer not in {question.a, question.b}
        assert question.answer not in question.own_numbers() and question.answer >= 2
        assert ground_truth(prompt.text, str(question.answer)) == 1.0
        assert ground_truth(prompt.text, str(question.answer + 1)) == 0.0
        kinds.add(question.kind if question.kind in arithmetic.OPERATORS else "convert")
        instructed += any(prompt.text.endswith(i) for i in arithmetic.INSTRUCTIONS)
    assert kinds == set(arithmetic.KINDS)
    # Half of the prompts carry an instruction: Binomial(2000, 1/2) is within 3 sd (0.034) of it.
    assert abs(instructed / len(generated) - 0.5) < 0.034


# --------------------------------------------------------------------------- generation and splits


def test_generation_is_deterministic_per_seed():
    first = arithmetic.generate(seed=5, size=300)
    assert first == arithmetic.generate(seed=5, size=300)
    assert [p.text for p, _ in first] != [p.text for p, _ in arithmetic.generate(seed=6, size=300)]
    assert len({p.text for p, _ in first}) == 300
    assert all(p.prompt_id == arithmetic.prompt_id(p.text) for p, _ in first)


@pytest.mark.parametrize("heldout_percent", [20, 50])
def test_load_splits_by_hash_near_heldout_percent(heldout_percent):
    cfg = TaskConfig(name="arithmetic", size=2000, heldout_percent=heldout_percent, seed=3)
    task = load_task(cfg)
    prompts = [p for p, _ in arithmetic.generate(seed=3, size=2000)]
    heldout_ids = {p.prompt_id for p in prompts if in_heldout(f"arithmetic:3:{p.prompt_id}", heldout_percent)}
    assert [p.prompt_id for p in task.heldout] == [p.prompt_id for p in prompts if p.prompt_id in heldout_ids]
    assert list(task.train) == [p for p in prompts if p.prompt_id not in heldout_ids]
    assert not {p.prompt_id for p in task.train} & {p.prompt_id for p in task.heldout}
    # Binomial(2000, p): three standard deviations are under 3.4 percentage points.
    assert abs(len(task.heldout) / 2000 - heldout_percent / 100) < 0.034
    assert load_task(cfg) == task


def test_task_names_importable_functions():
    task = arithmetic.load(TaskConfig(name="arithmetic", size=50))
    assert task.name == "arithmetic" and len(task.train) + len(task.heldout) == 50
    assert resolve_function(task.ground_truth) is ground_truth
    assert task.groups == {
        "correct": "rollout.tasks.arithmetic:correct",
        "concise": "rollout.tasks.arithmetic:concise",
        "format": "rollout.tasks.arithmetic:number_format",
    }
    for name, path in task.groups.items():
        assert resolve_function(path) is arithmetic.GROUPS[name]


# --------------------------------------------------------------------------- groups


def test_groups_by_hand():
    prompt = "How many minutes are in 3 hours?"  # 180
    assert arithmetic.correct(prompt, "180") == 1.0
    assert arithmetic.correct(prompt, "It is 150 minutes.") == pytest.approx(0.5 * (1 - 30 / 180))
    assert arithmetic.correct(prompt, "400") == 0.0  # more than 100% off
    assert arithmetic.correct(prompt, "three hours") == 0.0
    assert arithmetic.concise(prompt, "180") == 1.0
    assert arithmetic.concise(prompt, "It is 150 minutes.") == pytest.approx(1 - 3 / 20)
    assert arithmetic.concise(prompt, " ".join(["word"] * 21)) == 0.0
    assert arithmetic.number_format(prompt, "180.") == 1.0
    assert arithmetic.number_format(prompt, "It is 150 minutes.") == pytest.approx(1 / 4)
    assert arithmetic.number_format(prompt, "1,080 or 3.5") == pytest.approx(2 / 3)  # 1,080 and 3.5 one word each
    for fn in arithmetic.GROUPS.values():
        assert fn(prompt, "") == 0.0 and fn(prompt, " +=\n") == 0.0
        assert fn("Tell me a joke.", "180") == 0.0


def test_non_task_prompts_and_garbage_never_raise():
    rng = random.Random(0)
    pieces = [
        "What is ",
        "How many ",
        "minutes are in ",
        "hours?",
        "17",
        " + ",
        " / ",
        "0",
        "?",
        ".",
        ",",
        "-",
        "=",
        "1,000",
        "99999999999999999999",
        "é漢😀",
        " ",
        "\n",
        "divided by ",
        "x",
        "_",
    ]
    for _ in range(500):
        prompt = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        response = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for fn in (*arithmetic.GROUPS.values(), ground_truth):
            value = fn(prompt, response)
            assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0, (prompt, response)
    assert ground_truth("What is 2 + 2?", "4" * 5000) == 0.0


def test_majority_of_groups_is_not_transitive():
    """Each group ranks A, B, C transitively, but the 2-of-3 majority cycles A > B > C > A."""
    prompt = "What is 17 + 25?"  # 42
    a = "I think that 17 + 25 = 42."  # exact; 6 words; 3 of them numbers
    b = "It is 40."  # 2 off; 3 words; 1 number
    c = "Maybe 17 + 25 = 12"  # 30 off; 4 words; 3 numbers
    expected = {
        "correct": {a: 1.0, b: 0.5 * (1 - 2 / 42), c: 0.5 * (1 - 30 / 42)},  # A > B > C
        "concise": {a: 1 - 5 / 20, b: 1 - 2 / 20, c: 1 - 3 / 20},  # B > C > A
        "format": {a: 3 / 6, b: 1 / 3, c: 3 / 4},  # C > A > B
    }
    for group, scores in expected.items():
        for response, value in scores.items():
            assert arithmetic.GROUPS[group](prompt, response) == pytest.approx(value), (group, response)

    def majority_prefers(x: str, y: str) -> bool:
        return sum(fn(prompt, x) > fn(prompt, y) for fn in arithmetic.GROUPS.values()) >= 2

    assert majority_prefers(a, b)  # correct and format
    assert majority_prefers(b, c)  # correct and concise
    assert majority_prefers(c, a)  # concise and format
    assert not majority_prefers(b, a) and not majority_prefers(c, b) and not majority_prefers(a, c)
    assert [ground_truth(prompt, r) for r in (a, b, c)] == [1.0, 0.0, 0.0]
