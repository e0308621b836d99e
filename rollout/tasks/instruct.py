"""Instruction following with verifiable constraints (IFEval-style), for small chat models.

A built-in task for a pretrained chat model such as SmolLM2-135M-Instruct: each prompt is a short
writing request plus one to three constraints that a rule can check, e.g.

    Describe the ocean. Answer in exactly 6 words. Do not use any commas. Include the word "blue".

The prompt is the user's message (the runtime applies the chat template); responses are free text
of up to ~64 tokens, so every constraint is satisfiable in a few words. Loaded by
`rollout.tasks.load_task` (`task: {name: instruct}`); rule judges and populations import the
functions below by path. Nothing here imports torch.

Prompt grammar: `<request> <constraint sentence>{1,3}`, where request is one of `REQUESTS` filled
with a topic from `TOPICS`, and each constraint sentence is its kind's fixed phrasing in `PHRASES`:

    word_exact   Answer in exactly {n} words.                 n in 5..10
    word_max     Answer in at most {n} words.                 n in WORD_MAX_CHOICES
    bullets      Format your answer as exactly {n} bullet points starting with "- ".   n in 2..4
    no_commas    Do not use any commas.
    lowercase    Write in lowercase letters only.
    keyword      Include the word "{k}".                      k in KEYWORDS
    start_word   Start your answer with the word "{w}".       w in START_WORDS
    end_phrase   End your answer with the words "{p}".        p in END_PHRASES

A prompt has at most one constraint of each kind and none of the pairs in `CONFLICTS`.
`parse_constraints` reads the constraints back from the prompt TEXT alone: every sentence of the
phrasings above, anywhere in the text, in order (so a user prompt written with these phrasings is
scored too). Text with none of them is not a task prompt and every function scores it 0.0.

Scoring. A word is a maximal run of letters or digits, apostrophes inside it allowed ("don't" is
one word, "well-known" two, a "- " bullet marker none). Every constraint has a graded
satisfaction in [0, 1] (`satisfaction`), and is met when that is exactly 1:

    word_exact   max(0, 1 - |words - n| / n)
    word_max     1 if words <= n, else max(0, 1 - (words - n) / n)
    bullets      max(0, 1 - |b - n| / n), b = lines of the form `- text` (leading spaces allowed)
    no_commas    1 / (1 + number of ",")
    lowercase    lowercase letters / cased letters (0 when there are none)
    keyword      1 if some word equals k (case-insensitive), else 0
    start_word   1 if the first word equals w (case-insensitive; punctuation before it is ignored)
    end_phrase   1 if the last words equal p's words (case-insensitive; punctuation ignored)

A response with no words satisfies nothing (0 for every kind), so an empty answer cannot collect
"no commas" or "lowercase". `ground_truth` = fraction of the prompt's constraints met.

Annotator groups (`GROUPS`): three criteria that weight the constraint kinds differently. Group g
scores the weighted mean of the graded satisfactions of the prompt's constraints, with weight
`OWN_WEIGHT` for its own kinds (`GROUP_KINDS[g]`) and `OTHER_WEIGHT` for the rest:

    form      no_commas, lowercase                 (punctuation and case)
    length    word_exact, word_max, bullets        (counts)
    content   keyword, start_word, end_phrase      (required words)

A group with none of its kinds in a prompt therefore judges like a lenient ground truth (the
plain mean of graded satisfactions). Each group ranks responses transitively, but their majority
can cycle (tests/rollout/test_instruct.py shows a prompt and three responses with A > B > C > A).
No function here raises on arbitrary text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import NamedTuple

from protocols import Prompt, TaskConfig
from rollout.tasks.base import Task, draw_distinct, hashed_prompt_id, split

REQUESTS: tuple[str, ...] = (
    "Describe {topic}.",
    "Tell me about {topic}.",
    "Write about {topic}.",
    "Write a short note about {topic}.",
    "Say something about {topic}.",
)
TOPICS: tuple[str, ...] = (
    "the ocean",
    "the moon",
    "a rainy day",
    "your morning",
    "cats",
    "dogs",
    "coffee",
    "a city at night",
    "winter",
    "summer",
    "a good friend",
    "music",
    "the forest",
    "trains",
    "books",
    "the mountains",
    "bread",
    "a garden",
    "the sky",
    "rivers",
    "school",
    "a birthday",
    "the wind",
    "a small village",
    "football",
    "the desert",
    "bicycles",
    "snow",
    "the stars",
    "cooking",
    "a lighthouse",
    "tea",
    "bees",
    "an old house",
    "the beach",
    "autumn leaves",
    "a market",
    "robots",
    "birds",
    "the sun",
)
KEYWORDS: tuple[str, ...] = (
    "blue",
    "quiet",
    "friend",
    "light",
    "water",
    "happy",
    "small",
    "green",
    "home",
    "warm",
    "bright",
    "slow",
    "gold",
    "soft",
    "old",
    "tree",
    "dream",
    "river",
    "smile",
    "stone",
    "wind",
    "song",
    "time",
    "sweet",
)
START_WORDS: tuple[str, ...] = ("Yes", "Today", "Imagine", "Sometimes", "Here", "Once", "Every", "Honestly")
END_PHRASES: tuple[str, ...] = ("that is all", "thank you", "the end", "see you soon", "good night")
WORD_EXACT_RANGE = (5, 10)
WORD_MAX_CHOICES: tuple[int, ...] = (8, 10, 12, 15, 20)
BULLETS_RANGE = (2, 4)

PHRASES: dict[str, str] = {
    "word_exact": "Answer in exactly {} words.",
    "word_max": "Answer in at most {} words.",
    "bullets": 'Format your answer as exactly {} bullet points starting with "- ".',
    "no_commas": "Do not use any commas.",
    "lowercase": "Write in lowercase letters only.",
    "keyword": 'Include the word "{}".',
    "start_word": 'Start your answer with the word "{}".',
    "end_phrase": 'End your answer with the words "{}".',
}
KINDS: tuple[str, ...] = tuple(PHRASES)
# Never in one prompt: contradictory counts, and bullets (which start with "- ") with a count or a
# start word.
CONFLICTS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair)
    for pair in (
        ("word_exact", "word_max"),
        ("word_exact", "bullets"),
        ("word_max", "bullets"),
        ("bullets", "start_word"),
    )
)
MAX_CONSTRAINTS = 3

GROUP_KINDS: dict[str, tuple[str, ...]] = {
    "form": ("no_commas", "lowercase"),
    "length": ("word_exact", "word_max", "bullets"),
    "content": ("keyword", "start_word", "end_phrase"),
}
assert sorted(k for kinds in GROUP_KINDS.values() for k in kinds) == sorted(KINDS)
OWN_WEIGHT = 1.0
OTHER_WEIGHT = 0.25


class Constraint(NamedTuple):
    kind: str
    arg: int | str | None = None  # n for counts, the word or phrase for content kinds, else None


# --------------------------------------------------------------------------- prompts


def sentence(constraint: Constraint) -> str:
    """The fixed phrasing of one constraint."""
    phrase = PHRASES[constraint.kind]
    return phrase.format(constraint.arg) if "{}" in phrase else phrase


def _draw_arg(rng: random.Random, kind: str) -> int | str | None:
    if kind == "word_exact":
        return rng.randint(*WORD_EXACT_RANGE)
    if kind == "word_max":
        return rng.choice(WORD_MAX_CHOICES)
    if kind == "bullets":
        return rng.randint(*BULLETS_RANGE)
    if kind == "keyword":
        return rng.choice(KEYWORDS)
    if kind == "start_word":
        return rng.choice(START_WORDS)
    if kind == "end_phrase":
        return rng.choice(END_PHRASES)
    return None


def draw_constraints(rng: random.Random) -> tuple[Constraint, ...]:
    """1..MAX_CONSTRAINTS constraints of distinct, non-conflicting kinds, in prompt order."""
    kinds: list[str] = []
    for _ in range(rng.randint(1, MAX_CONSTRAINTS)):
        options = [k for k in KINDS if k not in kinds and all(frozenset((k, o)) not in CONFLICTS for o in kinds)]
        kinds.append(rng.choice(options))
    return tuple(Constraint(kind, _draw_arg(rng, kind)) for kind in kinds)


def prompt_id(text: str) -> str:
    """Stable id of a prompt: a hash of its text."""
    return hashed_prompt_id("instruct", text)


def _draw(rng: random.Random) -> tuple[str, tuple[Constraint, ...]]:
    request = rng.choice(REQUESTS).format(topic=rng.choice(TOPICS))
    constraints = draw_constraints(rng)
    return " ".join((request, *map(sentence, constraints))), constraints


def generate(seed: int, size: int) -> list[tuple[Prompt, tuple[Constraint, ...]]]:
    """`size` distinct prompts with the constraints each was built from, from random.Random(f"instruct:{seed}")."""
    return draw_distinct("instruct", seed, size, _draw)


def load(cfg: TaskConfig) -> Task:
    """`cfg.size` generated prompts, `cfg.heldout_percent` of them held out by a hash of their ids."""
    prompts = [p for p, _ in generate(cfg.seed, cfg.size)]
    train, heldout = split(prompts, cfg.heldout_percent, salt=f"instruct:{cfg.seed}")
    return Task(
        name="instruct",
        train=train,
        heldout=heldout,
        ground_truth="rollout.tasks.instruct:ground_truth",
        groups={name: f"rollout.tasks.instruct:{name}" for name in GROUPS},
        description="writing requests with 1-3 verifiable constraints; ground truth: fraction of constraints met",
    )


# --------------------------------------------------------------------------- parsing


def _phrase_pattern(kind: str) -> str:
    arg = {"word_exact": r"(\d{1,3})", "word_max": r"(\d{1,3})", "bullets": r"(\d{1,3})"}.get(kind, r'([^"\n]{1,40})')
    return re.escape(PHRASES[kind]).replace(r"\{\}", arg)


_CONSTRAINT_RE = re.compile("|".join(f"(?P<{kind}>{_phrase_pattern(kind)})" for kind in KINDS))
_COUNT_KINDS = ("word_exact", "word_max", "bullets")


def parse_constraints(text: str) -> tuple[Constraint, ...]:
    """Every constraint sentence in `text`, in order; () when there is none (not a task prompt).
    A count below 1 is skipped (nothing to satisfy)."""
    found: list[Constraint] = []
    for match in _CONSTRAINT_RE.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        raw = match.group(match.re.groupindex[kind] + 1) if "{}" in PHRASES[kind] else None
        if kind in _COUNT_KINDS:
            assert raw is not None
            if int(raw) < 1:
                continue
            found.append(Constraint(kind, int(raw)))
        else:
            found.append(Constraint(kind, raw))
    return tuple(found)


# --------------------------------------------------------------------------- checks


_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_BULLET_RE = re.compile(r"^[ \t]*-[ \t]+\S", re.MULTILINE)


def words(text: str) -> list[str]:
    """The words of `text` (see the module docstring)."""
    return _WORD_RE.findall(text)


def satisfaction(constraint: Constraint, response: str) -> float:
    """Graded satisfaction of one constraint by `response`, in [0, 1]; 1 exactly when it is met."""
    ws = words(response)
    if not ws:
        return 0.0
    kind, arg = constraint
    if kind in _COUNT_KINDS:
        n = int(arg) if isinstance(arg, int) else 0
        if n < 1:
            return 0.0
        count = len(_BULLET_RE.findall(response)) if kind == "bullets" else len(ws)
        if kind == "word_max" and count <= n:
            return 1.0
        return max(0.0, 1.0 - abs(count - n) / n)
    if kind == "no_commas":
        return 1.0 / (1 + response.count(","))
    if kind == "lowercase":
        lower = sum(c.islower() for c in response)
        cased = lower + sum(c.isupper() for c in response)
        return lower / cased if cased else 0.0
    target = [w.casefold() for w in words(str(arg))]
    if not target:
        return 0.0
    folded = [w.casefold() for w in ws]
    if kind == "keyword":
        return float(len(target) == 1 and target[0] in folded)
    if kind == "start_word":
        return float(folded[: len(target)] == target)
    if kind == "end_phrase":
        return float(folded[-len(target) :] == target)
    return 0.0


def met(constraint: Constraint, response: str) -> bool:
    return satisfaction(constraint, response) == 1.0


def ground_truth(prompt: str, response: str) -> float:
    """Fraction of the prompt's constraints met by the response; 0.0 for a prompt with none."""
    constraints = parse_constraints(prompt)
    if not constraints:
        return 0.0
    return sum(met(c, response) for c in constraints) / len(constraints)


def _group_score(group: str, prompt: str, response: str) -> float:
    constraints = parse_constraints(prompt)
    if not constraints:
        return 0.0
    weights = [OWN_WEIGHT if c.kind in GROUP_KINDS[group] else OTHER_WEIGHT for c in constraints]
    total = sum(w * satisfaction(c, response) for w, c in zip(weights, constraints, strict=True))
    return total / sum(weights)


def form(prompt: str, response: str) -> float:
    """Annotators who care most about punctuation and case (no_commas, lowercase)."""
    return _group_score("form", prompt, response)


def length(prompt: str, response: str) -> float:
    """Annotators who care most about counts (word_exact, word_max, bullets)."""
    return _group_score("length", prompt, response)


def content(prompt: str, response: str) -> float:
    """Annotators who care most about required words (keyword, start_word, end_phrase)."""
    return _group_score("content", prompt, response)


GROUPS: dict[str, Callable[[str, str], float]] = {"form": form, "length": length, "content": content}
assert GROUPS.keys() == GROUP_KINDS.keys()
