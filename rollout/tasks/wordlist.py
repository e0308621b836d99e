"""The built-in toy task: "list 3 fruits:" -> " apple pear plum".

A task a ~1M-parameter model can learn in seconds on a CPU and that online RL measurably improves.
It is where prompts, the default judge and the warm-start data come from when the run uses the
built-in model (`driver/builtin.py`); nothing here imports torch.

Prompt:   one of `TEMPLATES` filled with a count n in 1..6 and a category, e.g. "list 3 fruits:".
Response: space-separated lowercase words, starting with one space, e.g. " apple pear plum".

Three criteria stand for three annotator groups, each `f(prompt, response) -> float` in [0, 1]:
    topical      fraction of response words that belong to the requested category
    exact_count  1 when the word count equals n, falling off linearly: max(0, 1 - |count - n| / n)
    varied       distinct words / words
Each criterion ranks responses transitively, but majority votes between groups can cycle
(see tests/rollout/test_wordlist.py), which is what makes the task useful for preference methods.
`ground_truth` is the `GROUP_WEIGHTS`-weighted sum and the default judge, named in manifests as
`rollout.tasks.wordlist:ground_truth`. No function here raises on arbitrary text.

The warm-start corpus (`sft_corpus`) is deliberately mediocre (wrong counts, off-topic words,
repeats) so the starting policy writes task-shaped text and RL has room to improve it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence

from protocols import Prompt, TaskConfig
from rollout.tasks.base import Task

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "pear", "plum", "peach", "grape", "mango", "lemon", "cherry", "melon", "kiwi", "banana", "apricot"),
    "animals": ("cat", "dog", "horse", "cow", "sheep", "goat", "tiger", "lion", "zebra", "mouse", "rabbit", "bear"),
    "colors": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "gray", "violet", "beige"),
    "tools": ("hammer", "saw", "drill", "wrench", "pliers", "chisel", "axe", "shovel", "rake", "trowel", "clamp", "spanner"),
    "vegetables": (
        "carrot",
        "potato",
        "onion",
        "garlic",
        "celery",
        "spinach",
        "lettuce",
        "cabbage",
        "pea",
        "bean",
        "radish",
        "turnip",
    ),
    "countries": (
        "france",
        "spain",
        "italy",
        "germany",
        "japan",
        "china",
        "india",
        "brazil",
        "mexico",
        "canada",
        "egypt",
        "peru",
    ),
    "sports": (
        "soccer",
        "tennis",
        "golf",
        "hockey",
        "rugby",
        "boxing",
        "cricket",
        "baseball",
        "cycling",
        "rowing",
        "skiing",
        "surfing",
    ),
    "instruments": ("piano", "guitar", "violin", "drum", "flute", "harp", "cello", "trumpet", "organ", "banjo", "oboe", "tuba"),
    "metals": ("iron", "copper", "gold", "silver", "tin", "zinc", "lead", "nickel", "cobalt", "platinum", "aluminum", "titanium"),
    "birds": ("robin", "crow", "eagle", "owl", "sparrow", "hawk", "swan", "duck", "goose", "parrot", "pigeon", "finch"),
}
TEMPLATES: tuple[str, ...] = ("list {n} {cat}:", "name {n} {cat}:", "give {n} {cat}:", "write {n} {cat}:")
COUNTS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
HELDOUT_PERCENT = 20

GROUP_WEIGHTS: dict[str, float] = {"topical": 0.5, "exact_count": 0.3, "varied": 0.2}

# Corpus noise (see `sft_corpus`): response length ~ U{1..8}, on-topic and repeat probabilities.
CORPUS_MAX_WORDS = 8
CORPUS_ON_TOPIC = 0.6
CORPUS_REPEAT = 0.25

_PROMPT_RE = re.compile(r"^\s*(?:list|name|give|write)\s+(\d{1,3})\s+([a-z]+)\s*:\s*$")
_ITEM_CATEGORY = {item: cat for cat, items in CATEGORIES.items() for item in items}
assert len(_ITEM_CATEGORY) == sum(map(len, CATEGORIES.values())), "an item is in two categories"


# --------------------------------------------------------------------------- prompts and splits


def _is_heldout(template_index: int, category: str, n: int) -> bool:
    """Hash-based split: stable across processes, Python versions and RNG state."""
    key = f"wordlist:{template_index}:{category}:{n}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100 < HELDOUT_PERCENT


def _all_prompts(heldout: bool) -> list[Prompt]:
    out = []
    for t, template in enumerate(TEMPLATES):
        for cat in CATEGORIES:
            for n in COUNTS:
                if _is_heldout(t, cat, n) == heldout:
                    out.append(Prompt(prompt_id=f"wordlist-t{t}-{cat}-{n}", text=template.format(n=n, cat=cat)))
    return out


def train_prompts() -> list[Prompt]:
    """The ~80% of all (template, category, n) prompts used for training, in a fixed order."""
    return _all_prompts(heldout=False)


def heldout_prompts() -> list[Prompt]:
    """The ~20% never trained on (warm start, RM data or RL); used for evaluation."""
    return _all_prompts(heldout=True)


def load(cfg: TaskConfig) -> Task:
    """The word-list task. Its prompts are a fixed grid (template x category x count), so
    `size`, `heldout_percent` and `seed` do not apply: the split is `HELDOUT_PERCENT`, fixed,
    because the built-in model's tokenizer and warm start are built from it."""
    return Task(
        name="wordlist",
        train=tuple(train_prompts()),
        heldout=tuple(heldout_prompts()),
        ground_truth="rollout.tasks.wordlist:ground_truth",
        groups={name: f"rollout.tasks.wordlist:{name}" for name in GROUPS},
        description='"list 3 fruits:" -> " apple pear plum"; ground truth: topical 0.5, exact_count 0.3, varied 0.2',
    )


def parse_prompt(text: str) -> tuple[str, int] | None:
    """(category, n) of a task prompt, or None if `text` is not one (unknown category, n < 1)."""
    match = _PROMPT_RE.match(text)
    if match is None:
        return None
    n, cat = int(match.group(1)), match.group(2)
    if cat not in CATEGORIES or n < 1:
        return None
    return cat, n


# --------------------------------------------------------------------------- criteria (judges)


def _words(response: str) -> list[str]:
    return response.split()


def topical(prompt: str, response: str) -> float:
    """Fraction of response words in the requested category; 0 for an empty response or a prompt
    that is not a task prompt."""
    parsed, words = parse_prompt(prompt), _words(response)
    if parsed is None or not words:
        return 0.0
    return sum(_ITEM_CATEGORY.get(w) == parsed[0] for w in words) / len(words)


def exact_count(prompt: str, response: str) -> float:
    """max(0, 1 - |count - n| / n): 1 for exactly n words, 0 for none or for 2n or more."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return 0.0
    n = parsed[1]
    return max(0.0, 1.0 - abs(len(_words(response)) - n) / n)


def varied(prompt: str, response: str) -> float:
    """Distinct words / words; 0 for an empty response. Ignores the prompt (kept for the signature)."""
    words = _words(response)
    return len(set(words)) / len(words) if words else 0.0


GROUPS: dict[str, Callable[[str, str], float]] = {"topical": topical, "exact_count": exact_count, "varied": varied}
assert GROUPS.keys() == GROUP_WEIGHTS.keys()


def ground_truth(prompt: str, response: str) -> float:
    """The default judge: sum over groups of GROUP_WEIGHTS[g] * GROUPS[g](prompt, response), in [0, 1]."""
    return sum(weight * GROUPS[name](prompt, response) for name, weight in GROUP_WEIGHTS.items())


# --------------------------------------------------------------------------- warm-start data


def _noisy_response(rng: random.Random, category: str) -> str:
    """One corpus-style response: length ~ U{1..8} independent of n; each word repeats the previous
    one with prob CORPUS_REPEAT, else is on-topic with prob CORPUS_ON_TOPIC, else from another
    category. Always starts with a single space."""
    others = [c for c in CATEGORIES if c != category]
    words: list[str] = []
    for _ in range(rng.randint(1, CORPUS_MAX_WORDS)):
        if words and rng.random() < CORPUS_REPEAT:
            words.append(words[-1])
        elif rng.random() < CORPUS_ON_TOPIC:
            words.append(rng.choice(CATEGORIES[category]))
        else:
            words.append(rng.choice(CATEGORIES[rng.choice(others)]))
    return " " + " ".join(words)


def _category_of(prompt: Prompt) -> str:
    parsed = parse_prompt(prompt.text)
    assert parsed is not None, f"not a task prompt: {prompt.text!r}"
    return parsed[0]


def sft_corpus(seed: int, size: int, prompts: Sequence[Prompt] | None = None) -> list[tuple[str, str]]:
    """`size` (prompt, response) pairs of mixed quality over `prompts` (default: train prompts).

    Mean ground truth of these responses is about 0.58: good enough to make the warm-started model
    write task-shaped text, far enough from 1 to leave room for RL.
    """
    prompts = list(prompts) if prompts is not None else train_prompts()
    rng = random.Random(f"wordlist-sft:{seed}")
    out = []
    for _ in range(size):
        prompt = rng.choice(prompts)
        out.append((prompt.text, _noisy_response(rng, _category_of(prompt))))
    return out


def reward_model_pairs(seed: int, size: int, prompts: Sequence[Prompt] | None = None) -> list[tuple[str, str, str]]:
    """`size` (prompt, chosen, rejected) triples: two corpus-style responses to one prompt
    (default: train prompts), ordered so ground_truth(chosen) > ground_truth(rejected); ties are
    skipped (and redrawn), so every triple carries a strict preference."""
    prompts = list(prompts) if prompts is not None else train_prompts()
    rng = random.Random(f"wordlist-rm:{seed}")
    out: list[tuple[str, str, str]] = []
    while len(out) < size:
        prompt = rng.choice(prompts)
        cat = _category_of(prompt)
        a, b = _noisy_response(rng, cat), _noisy_response(rng, cat)
        score_a, score_b = ground_truth(prompt.text, a), ground_truth(prompt.text, b)
        if score_a == score_b:
            continue
        out.append((prompt.text, a, b) if score_a > score_b else (prompt.text, b, a))
    return out


def population_pairs(
    seed: int, size: int, weights: dict[str, float] | None = None, prompts: Sequence[Prompt] | None = None
) -> list[tuple[str, str, str]]:
    """`size` (prompt, chosen, rejected) triples labelled the way a draw-mode population of the
    annotator groups labels a pair (deploy/judges/population-draw.yaml): two corpus-style responses
    to one prompt (default: train prompts), one group drawn with probability weights[g] / sum
    (default: equal weights), chosen = the response that group scores higher. Pairs the drawn group
    ties are skipped (the population's label would be 0.5) and redrawn, so every triple carries a
    strict preference. Fitting a Bradley-Terry reward model to these is the classic pipeline on a
    crowd whose majority can cycle: the fitted reward is transitive, the crowd is not."""
    weights = dict(weights) if weights is not None else {name: 1.0 for name in GROUPS}
    if set(weights) - GROUPS.keys() or not weights or min(weights.values()) <= 0:
        raise ValueError(f"weights must be positive and name groups of {list(GROUPS)}, got {weights}")
    prompts = list(prompts) if prompts is not None else train_prompts()
    names, shares = list(weights), list(weights.values())
    rng = random.Random(f"wordlist-population:{seed}")
    out: list[tuple[str, str, str]] = []
    while len(out) < size:
        prompt = rng.choice(prompts)
        cat = _category_of(prompt)
        a, b = _noisy_response(rng, cat), _noisy_response(rng, cat)
        group = GROUPS[rng.choices(names, weights=shares)[0]]
        score_a, score_b = group(prompt.text, a), group(prompt.text, b)
        if score_a == score_b:
            continue
        out.append((prompt.text, a, b) if score_a > score_b else (prompt.text, b, a))
    return out
