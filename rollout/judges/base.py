"""The judge interface and the Bradley-Terry link shared by every scalar judge.

A judge is anything with a `name` and a `score(prompts, responses) -> list[float]` (pointwise,
higher is better). Pairwise kinds (later) add `compare(prompts, first, second) -> list[float]`
returning P(first preferred over second); > 0.5 favours `first` (protocols/batches.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


class Judge(Protocol):
    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One scalar per (prompt, response); higher is better."""
        ...


def bradley_terry(first: float, second: float, temperature: float) -> float:
    """P(first > second) = sigmoid((r_first - r_second) / temperature); temperature 0 = hard 1/0.5/0."""
    diff = first - second
    if temperature == 0.0:
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    z = diff / temperature
    if z >= 0:  # numerically stable logistic
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)
