"""The judge interfaces and the helpers every judge kind shares.

Two interfaces (typing.Protocol, no base class):
- PointwiseJudge: `score(prompts, responses) -> list[float]`, one scalar per response, higher is
  better (rule, reward_model).
- PairwiseComparer: `compare(prompts, first, second) -> list[float]`, P(first preferred over
  second) per triple; > 0.5 favours `first` (protocols/batches.py, PairPreference). Pairwise
  kinds (pairwise, self, http) average both presentation orders to cancel position bias:
      P = 0.5 * [p(first, second) + 1 - p(second, first)]
A judge may implement both. `judge_rollouts` turns either into a Judgement's rewards/preferences.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

from protocols import PairPreference, RolloutBatch
from protocols.preference import bradley_terry  # noqa: F401  (re-exported by rollout.judges)


@runtime_checkable
class PointwiseJudge(Protocol):
    """Any judge that scores one response at a time (rule, reward_model)."""

    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One scalar per (prompt, response); higher is better."""
        ...


@runtime_checkable
class PairwiseComparer(Protocol):
    """Any judge that compares two responses to a prompt (pairwise, self, http, population)."""

    name: str

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """P(first[i] preferred over second[i]) for each i, in [0, 1]."""
        ...


Judge = PointwiseJudge | PairwiseComparer

_PLACEHOLDER = re.compile(r"\{(prompt|first|second)\}")


def fill_template(template: str, prompt: str, first: str, second: str) -> str:
    """The judge prompt: {prompt}, {first} and {second} replaced in one pass.

    Other braces stay as written (unlike str.format), and placeholder-like text inside the
    inserted prompt or responses is not substituted again.
    """
    values = {"prompt": prompt, "first": first, "second": second}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


OneOrder = Callable[[Sequence[str], Sequence[str], Sequence[str]], list[float]]


def both_orders(one_order: OneOrder, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
    """P = 0.5 * [p(first, second) + 1 - p(second, first)], both orders in one call of `one_order`.

    `one_order(prompts, a, b)` gives p(a preferred over b) as presented (a shown first). The
    average cancels position bias, and compare(a, b) + compare(b, a) == 1 up to rounding.
    """
    n = len(prompts)
    if not n == len(first) == len(second):
        raise ValueError(f"got {n} prompts, {len(first)} first and {len(second)} second responses")
    p = one_order([*prompts, *prompts], [*first, *second], [*second, *first])
    if len(p) != 2 * n:
        raise ValueError(f"one_order returned {len(p)} probabilities for {2 * n} judge prompts")
    return [0.5 * (p[i] + 1.0 - p[n + i]) for i in range(n)]


def comparison_pairs(n: int, k: int, mode: Literal["all_pairs", "adjacent"]) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, inside each group of k consecutive rollouts out of n.

    "all_pairs": every pair of a group (k (k - 1) / 2 per group); "adjacent": (i, i + 1) (k - 1).
    """
    if n % k:
        raise ValueError(f"{n} rollouts is not a multiple of the group size {k}")
    pairs = []
    for start in range(0, n, k):
        if mode == "all_pairs":
            pairs += [(start + a, start + b) for a in range(k) for b in range(a + 1, k)]
        elif mode == "adjacent":
            pairs += [(start + a, start + a + 1) for a in range(k - 1)]
        else:
            raise ValueError(f"unknown comparisons mode {mode!r}; valid: all_pairs, adjacent")
    return pairs


def judge_rollouts(
    judge: Judge, batch: RolloutBatch, comparisons: Literal["all_pairs", "adjacent"] = "all_pairs"
) -> tuple[list[float] | None, list[PairPreference] | None]:
    """(rewards, preferences) of a batch: `score` on every rollout and/or `compare` on the pairs."""
    prompts = [r.prompt_text for r in batch.rollouts]
    responses = [r.response_text for r in batch.rollouts]
    rewards = judge.score(prompts, responses) if isinstance(judge, PointwiseJudge) else None
    preferences = None
    if isinstance(judge, PairwiseComparer):
        pairs = comparison_pairs(len(responses), batch.samples_per_prompt, comparisons)
        probabilities = judge.compare(
            [prompts[i] for i, _ in pairs], [responses[i] for i, _ in pairs], [responses[j] for _, j in pairs]
        )
        if len(probabilities) != len(pairs):
            raise ValueError(f"judge {judge.name!r} returned {len(probabilities)} probabilities for {len(pairs)} pairs")
        preferences = [PairPreference(first=i, second=j, probability=p) for (i, j), p in zip(pairs, probabilities)]
    if rewards is None and preferences is None:
        raise TypeError(f"judge {judge.name!r} implements neither score nor compare")
    return rewards, preferences
