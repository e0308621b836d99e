"""Short arithmetic and unit-conversion questions with one exact integer answer, for chat models.

A built-in task for a small pretrained chat model such as SmolLM2-135M-Instruct, e.g.

    What is 17 + 25?                                          -> 42
    Calculate 84 divided by 7. Answer with the number only.   -> 12
    How many minutes are in 3 hours?                          -> 180

The prompt is the user's message (the runtime applies the chat template); responses are free text
of up to ~64 tokens. Loaded by `rollout.tasks.load_task` (`task: {name: arithmetic}`); rule
judges and populations import the functions below by path. Nothing here imports torch.

Prompt grammar: `<question>[ <instruction>]`; half the prompts end with one of `INSTRUCTIONS`.
The question (its kind drawn uniformly from `KINDS`) is one of
    <frame> <a> <op> <b><end>        frame: What is (end "?") | Calculate | Compute (end ".")
                                     op: + plus | - minus | times * multiplied by | divided by /
    How many <small> are [there ]in <n> <big>?      (small, big) in UNITS, n in 2..12
Generated operands: add a, b in 2..99; sub 10 <= a <= 99, 2 <= b <= a - 2, a - b != b;
mul a, b in 2..12; div a = b * q with b, q in 2..12, q != b. So the answer is never one of the
question's numbers, which the answer rule below relies on. `parse_question` reads a question back
from the prompt TEXT alone (the first one anywhere in the text); text without one, a conversion
between units not in `UNITS`, or a division without an integer result is not a task prompt, and
every function scores it 0.0.

The response's answer (`extract_answer`): the first number in the response whose value is not one
of the question's own numbers (a and b; for a conversion n, the factor and 1). A number is written
in digits, not right after a letter, digit, "_" or ".": an optional "-", digits with optional
thousands commas ("1,000"), an optional decimal part ("42.0" is 42, "42.5" is not an integer);
"42." is 42 with a full stop, "17-5" is 17 and 5, "x42" has no number. So on "What is 17 + 25?"
"42", "42.", "= 42", "The answer is 42" and "17 + 25 = 42" all answer 42, "40 or 42" answers 40;
on "How many minutes are in 3 hours?" "There are 60 minutes in 1 hour, so 3 hours is 180" answers
180. Numbers written in words ("forty-two") are not read.

Scoring: `ground_truth` is 1.0 when the answer equals the question's answer, else 0.0, and nothing
else: it is the held-out evaluation metric and reads as accuracy. A format bonus (e.g. for the bare
number the instruction asks for) is deliberately not mixed in; a run that wants that shaping names
the `format` or `concise` group as a weighted rule judge next to it.

Annotator groups (`GROUPS`), each in [0, 1]; a word here is a run of letters or digits, with
"," "." or an apostrophe allowed inside ("1,000" and "42.5" are one word each, "+" and "=" none):
    correct   1 for the exact answer; else, when there is an answer x, partial credit for a near
              miss: 0.5 * max(0, 1 - |x - answer| / max(|answer|, 1)); 0 without one
    concise   max(0, 1 - (words - 1) / 20): 1 for a one-word reply, 0 from 21 words on
    format    share of the words that are numbers: 1 for the bare number, lower for prose
              (function `number_format`)
A response with no words scores 0 in every group. Each group ranks responses transitively, but
their majority can cycle (tests/rollout/test_arithmetic.py: A > B > C > A on "What is 17 + 25?").
No function here raises on arbitrary text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from decimal import Decimal
from typing import NamedTuple

from protocols import Prompt, TaskConfig
from rollout.tasks.base import Task, draw_distinct, hashed_prompt_id, split

FRAMES: tuple[tuple[str, str], ...] = (("What is", "?"), ("Calculate", "."), ("Compute", "."))
OPERATORS: dict[str, tuple[str, ...]] = {
    "add": ("+", "plus"),
    "sub": ("-", "minus"),
    "mul": ("times", "*", "multiplied by"),
    "div": ("divided by", "/"),
}
UNITS: dict[tuple[str, str], int] = {  # (small, big) -> small units in one big unit
    ("seconds", "minutes"): 60,
    ("minutes", "hours"): 60,
    ("hours", "days"): 24,
    ("days", "weeks"): 7,
    ("months", "years"): 12,
    ("millimeters", "centimeters"): 10,
    ("centimeters", "meters"): 100,
    ("meters", "kilometers"): 1000,
    ("grams", "kilograms"): 1000,
}
UNIT_QUESTIONS: tuple[str, ...] = ("How many {small} are in {n} {big}?", "How many {small} are there in {n} {big}?")
INSTRUCTIONS: tuple[str, ...] = (
    "Answer with the number only.",
    "Reply with just the number.",
    "Give only the final number.",
)
KINDS: tuple[str, ...] = ("add", "sub", "mul", "div", "convert")
CONCISE_WORDS = 20


class Question(NamedTuple):
    kind: str  # add, sub, mul, div, or "<small>/<big>" for a unit conversion
    a: int  # first operand, or n for a conversion
    b: int  # second operand, or the conversion factor
    answer: int

    def own_numbers(self) -> frozenset[int]:
        """Numbers the question itself involves, other than its answer: skipped in a response."""
        numbers = {self.a, self.b} | ({1} if self.kind not in OPERATORS else set())
        return frozenset(numbers - {self.answer})


# --------------------------------------------------------------------------- prompts


def draw_question(rng: random.Random) -> tuple[str, Question]:
    """(question text, Question) for one uniformly drawn kind; see the module docstring for ranges."""
    kind = rng.choice(KINDS)
    if kind == "convert":
        small, big = rng.choice(list(UNITS))
        n, factor = rng.randint(2, 12), UNITS[(small, big)]
        text = rng.choice(UNIT_QUESTIONS).format(small=small, n=n, big=big)
        return text, Question(f"{small}/{big}", n, factor, n * factor)
    if kind == "add":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        answer = a + b
    elif kind == "sub":
        a = rng.randint(10, 99)
        b = rng.choice([b for b in range(2, a - 1) if a - b != b])
        answer = a - b
    elif kind == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        answer = a * b
    else:
        b = rng.randint(2, 12)
        answer = rng.choice([q for q in range(2, 13) if q != b])
        a = b * answer
    frame, end = rng.choice(FRAMES)
    return f"{frame} {a} {rng.choice(OPERATORS[kind])} {b}{end}", Question(kind, a, b, answer)


def prompt_id(text: str) -> str:
    """Stable id of a prompt: a hash of its text."""
    return hashed_prompt_id("arithmetic", text)


def _draw(rng: random.Random) -> tuple[str, Question]:
    question_text, question = draw_question(rng)
    instruction = rng.choice(INSTRUCTIONS) if rng.random() < 0.5 else None
    return (question_text if instruction is None else f"{question_text} {instruction}"), question


def generate(seed: int, size: int) -> list[tuple[Prompt, Question]]:
    """`size` distinct prompts with the question each was built from, from random.Random(f"arithmetic:{seed}")."""
    return draw_distinct("arithmetic", seed, size, _draw)


def load(cfg: TaskConfig) -> Task:
    """`cfg.size` generated prompts, `cfg.heldout_percent` of them held out by a hash of their ids."""
    prompts = [p for p, _ in generate(cfg.seed, cfg.size)]
    train, heldout = split(prompts, cfg.heldout_percent, salt=f"arithmetic:{cfg.seed}")
    return Task(
        name="arithmetic",
        train=train,
        heldout=heldout,
        ground_truth="rollout.tasks.arithmetic:ground_truth",
        groups={name: f"rollout.tasks.arithmetic:{fn.__name__}" for name, fn in GROUPS.items()},
        description='"What is 17 + 25?" -> 42; ground truth: 1 for the exact answer (first new number), else 0',
    )


# --------------------------------------------------------------------------- parsing

_OPERATOR_KIND = {symbol: kind for kind, symbols in OPERATORS.items() for symbol in symbols}
_ARITHMETIC_RE = re.compile(
    r"(?:What is|Calculate|Compute) (\d{1,6}) ("
    + "|".join(re.escape(s) for s in sorted(_OPERATOR_KIND, key=len, reverse=True))
    + r") (\d{1,6})[?.]"
)
_UNIT_RE = re.compile(r"How many ([a-z]{1,20}) are (?:there )?in (\d{1,6}) ([a-z]{1,20})\?")


def parse_question(text: str) -> Question | None:
    """The first question in `text` (arithmetic or conversion, whichever comes first), or None."""
    matches = [m for m in (_ARITHMETIC_RE.search(text), _UNIT_RE.search(text)) if m is not None]
    if not matches:
        return None
    match = min(matches, key=lambda m: m.start())
    if match.re is _UNIT_RE:
        small, n, big = match.group(1), int(match.group(2)), match.group(3)
        factor = UNITS.get((small, big))
        return None if factor is None else Question(f"{small}/{big}", n, factor, n * factor)
    a, kind, b = int(match.group(1)), _OPERATOR_KIND[match.group(2)], int(match.group(3))
    if kind == "add":
        return Question(kind, a, b, a + b)
    if kind == "sub":
        return Question(kind, a, b, a - b)
    if kind == "mul":
        return Question(kind, a, b, a * b)
    if b == 0 or a % b:
        return None
    return Question(kind, a, b, a // b)


_NUMBER_RE = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")
_WORD_RE = re.compile(r"[^\W_]+(?:[',.’][^\W_]+)*")
_NUMBER_WORD_RE = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def numbers(response: str) -> list[Decimal]:
    """The numbers written in digits in `response`, in order (see the module docstring)."""
    return [Decimal(sign + digits.replace(",", "") + (frac or "")) for sign, digits, frac in _NUMBER_RE.findall(response)]


def extract_answer(question: Question, response: str) -> Decimal | None:
    """The first number in `response` that is not one of `question.own_numbers()`, or None."""
    skip = question.own_numbers()
    return next((x for x in numbers(response) if x not in skip), None)


def ground_truth(prompt: str, response: str) -> float:
    """1.0 when the response's answer (see `extract_answer`) is the question's answer, else 0.0."""
    question = parse_question(prompt)
    if question is None:
        return 0.0
    return float(extract_answer(question, response) == question.answer)


def _words(response: str) -> list[str]:
    return _WORD_RE.findall(response)


def correct(prompt: str, response: str) -> float:
    """1 for the exact answer, up to 0.5 for a near miss (see the module docstring)."""
    question = parse_question(prompt)
    if question is None:
        return 0.0
    x = extract_answer(question, response)
    if x is None:
        return 0.0
    if x == question.answer:
        return 1.0
    miss = abs(x - question.answer) / max(abs(question.answer), 1)
    return 0.5 * max(0.0, 1.0 - float(miss))


def concise(prompt: str, response: str) -> float:
    """max(0, 1 - (words - 1) / CONCISE_WORDS); 0 without words or for a non-task prompt."""
    ws = _words(response)
    if parse_question(prompt) is None or not ws:
        return 0.0
    return max(0.0, 1.0 - (len(ws) - 1) / CONCISE_WORDS)


def number_format(prompt: str, response: str) -> float:
    """Share of the response's words that are numbers; 0 without words or for a non-task prompt."""
    ws = _words(response)
    if parse_question(prompt) is None or not ws:
        return 0.0
    return sum(_NUMBER_WORD_RE.fullmatch(w) is not None for w in ws) / len(ws)


GROUPS: dict[str, Callable[[str, str], float]] = {"correct": correct, "concise": concise, "format": number_format}
