"""What a task supplies to a run, and the helpers every task shares.

A run sees its task only as a `Task` (built by `rollout.tasks.load_task` from the run config's
`task:` section); a task module never imports torch, Ray or vLLM.

A task is:
    train / heldout      prompts (raw user text; a chat model gets them through its chat template)
    ground_truth         import path 'module:function' of a rule `f(prompt, response) -> float` in
                         [0, 1] (higher is better), or None when the task has no checkable answer
    ground_truth_args    keyword arguments bound to that function (e.g. a JSONL file to look up)
    groups               annotator groups: name -> import path of a rule of the same shape; each
                         ranks responses transitively, but majority votes between groups can cycle,
                         which is what a `population` judge of them models
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from protocols import Prompt


@dataclass(frozen=True)
class Task:
    name: str
    train: tuple[Prompt, ...]
    heldout: tuple[Prompt, ...]
    ground_truth: str | None = None
    ground_truth_args: dict[str, object] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError(f"task {self.name!r} has no training prompts")
        if not self.heldout:
            raise ValueError(f"task {self.name!r} has no held-out prompts")
        ids = [p.prompt_id for p in (*self.train, *self.heldout)]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise ValueError(f"task {self.name!r}: prompt ids repeat: {dupes}")


def in_heldout(key: str, heldout_percent: int) -> bool:
    """Hash-based split: stable across processes, Python versions and RNG state."""
    digest = hashlib.sha256(key.encode()).digest()[:8]
    return int.from_bytes(digest, "big") % 100 < heldout_percent


def split(prompts: Sequence[Prompt], heldout_percent: int, salt: str) -> tuple[tuple[Prompt, ...], tuple[Prompt, ...]]:
    """(train, heldout) by a seeded hash of each prompt's id; order within each split is kept."""
    train, heldout = [], []
    for p in prompts:
        (heldout if in_heldout(f"{salt}:{p.prompt_id}", heldout_percent) else train).append(p)
    return tuple(train), tuple(heldout)


Drawn = TypeVar("Drawn")


def hashed_prompt_id(task: str, text: str) -> str:
    """Stable id of a generated prompt: the task's name and a hash of the text."""
    return f"{task}-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def draw_distinct(
    task: str, seed: int, size: int, draw: Callable[[random.Random], tuple[str, Drawn]]
) -> list[tuple[Prompt, Drawn]]:
    """`size` prompts with distinct texts from `draw(rng)` -> (text, what it was built from), with
    rng = random.Random(f"{task}:{seed}"); ValueError naming `task.size` if the generator cannot
    find that many."""
    rng = random.Random(f"{task}:{seed}")
    out: list[tuple[Prompt, Drawn]] = []
    seen: set[str] = set()
    for _ in range(100 * size):
        if len(out) == size:
            break
        text, drawn = draw(rng)
        if text not in seen:
            seen.add(text)
            out.append((Prompt(prompt_id=hashed_prompt_id(task, text), text=text), drawn))
    if len(out) < size:
        raise ValueError(f"task.size: the {task} generator found only {len(out)} distinct prompts of {size}")
    return out
