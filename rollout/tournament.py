"""Round-robin tournament of policies under a preference judge (pure Python, no torch).

Used by bench/nash_lm.py; docs/nash.md ("Tournament") says how to read the numbers. With non-transitive
preferences a win rate against the starting policy says little (A beats the start, B beats the
start, and B may still lose to A, which loses to C); what a Nash method promises is a policy that
no other policy beats by much, so the tournament measures every policy against every other.

Inputs:
- `responses[name][i]`: entrant `name`'s responses to prompt i (one or more per prompt);
- a `Compare`: compare(prompts, first, second) -> [P(first[j] > second[j])], one call for a
  whole batch. That is the judges' `compare` signature, so a population judge's bound method
  serves as is; `pointwise` turns a scoring function (a task's annotator group) into one.

Win rate of A against B: on prompt i, the mean P(a > b) over every pair (a of A's responses, b of
B's); over prompts, the mean and a 95% normal interval (`rollout.evaluation.win_rate`: prompts are
the independent units). The matrix needs an order-symmetric judge, P(a > b) + P(b > a) = 1 (a
pointwise judge's Bradley-Terry preference and a draw- or vote-mode population of them are): each
unordered pair is judged once and M[B][A] = 1 - M[A][B], with the mirrored interval.

Majority cycles (`majority_cycles`): among distinct responses to one prompt, the triples whose three
pairs all have a strict preference (P != 1/2), split into cyclic (a > b > c > a) and transitive ones:
how non-transitive the judge is on the responses the policies actually write.

Worst case of A: min over B != A of M[A][B], with B named. 1/2 - worst case is an exploitability
estimate restricted to the entrants (how far the strongest counter-policy among them gets against
A; a policy no entrant beats has worst case >= 1/2). The minimum of several noisy rates is biased
low, more so with more entrants; the interval reported is that of the minimising entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from protocols import WinRate
from protocols.preference import bradley_terry
from rollout.evaluation import win_rate

Compare = Callable[[Sequence[str], Sequence[str], Sequence[str]], Sequence[float]]
Responses = Mapping[str, Sequence[Sequence[str]]]


def pointwise(score: Callable[[str, str], float], temperature: float = 0.0) -> Compare:
    """A `Compare` from a scoring function f(prompt, response): P = bradley_terry(f(first), f(second),
    temperature); temperature 0 is the hard 1 / 0.5 / 0 vote of a population member."""

    def compare(prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        cache: dict[tuple[str, str], float] = {}

        def f(prompt: str, response: str) -> float:
            key = (prompt, response)
            if key not in cache:
                cache[key] = score(prompt, response)
            return cache[key]

        return [bradley_terry(f(p, a), f(p, b), temperature) for p, a, b in zip(prompts, first, second, strict=True)]

    return compare


def prompt_scores(
    compare: Compare, prompts: Sequence[str], first: Sequence[Sequence[str]], second: Sequence[Sequence[str]]
) -> list[list[float]]:
    """`out[i]` = P(a > b) for every (a in first[i], b in second[i]), a-major; one `compare` call."""
    if not len(prompts) == len(first) == len(second):
        raise ValueError(f"got {len(prompts)} prompts but {len(first)} and {len(second)} response lists")
    flat_p, flat_a, flat_b, sizes = [], [], [], []
    for prompt, xs, ys in zip(prompts, first, second):
        if not xs or not ys:
            raise ValueError(f"prompt {prompt!r}: every entrant needs at least one response")
        for a in xs:
            for b in ys:
                flat_p.append(prompt)
                flat_a.append(a)
                flat_b.append(b)
        sizes.append(len(xs) * len(ys))
    values = list(compare(flat_p, flat_a, flat_b))
    if len(values) != len(flat_p):
        raise ValueError(f"compare returned {len(values)} preferences for {len(flat_p)} pairs")
    out, start = [], 0
    for size in sizes:
        out.append(values[start : start + size])
        start += size
    return out


def head_to_head(
    compare: Compare, prompts: Sequence[str], first: Sequence[Sequence[str]], second: Sequence[Sequence[str]]
) -> WinRate:
    """Win rate of `first`'s responses against `second`'s, with its 95% interval over prompts."""
    return win_rate(prompt_scores(compare, prompts, first, second))


def mirror(rate: WinRate) -> WinRate:
    """The same comparison from the other side: 1 - rate, interval (1 - high, 1 - low)."""
    return rate.model_copy(update={"win_rate": 1.0 - rate.win_rate, "ci_low": 1.0 - rate.ci_high, "ci_high": 1.0 - rate.ci_low})


@dataclass(frozen=True)
class Tournament:
    """Every entrant against every other; `rates[(a, b)]` is a's win rate against b (a != b)."""

    names: tuple[str, ...]
    rates: Mapping[tuple[str, str], WinRate]

    def rate(self, a: str, b: str) -> WinRate:
        return self.rates[(a, b)]

    def worst_case(self, a: str, among: Sequence[str] | None = None) -> tuple[str, WinRate]:
        """(opponent, a's win rate against it) for the opponent a does worst against, among `among`
        (default: every other entrant); ties go to the first in `names` order."""
        pool = [b for b in (among if among is not None else self.names) if b != a]
        if not pool:
            raise ValueError(f"{a!r} has no opponent")
        best = min(pool, key=lambda b: (self.rates[(a, b)].win_rate, self.names.index(b)))
        return best, self.rates[(a, best)]

    def mean(self, a: str) -> float:
        """a's mean win rate over the other entrants (a Borda-like score; transitive by construction)."""
        others = [b for b in self.names if b != a]
        return sum(self.rates[(a, b)].win_rate for b in others) / len(others)


def round_robin(compare: Compare, prompts: Sequence[str], responses: Responses) -> Tournament:
    """The tournament of every entrant in `responses` (in its order) under `compare`."""
    names = tuple(responses)
    if len(names) < 2:
        raise ValueError(f"a tournament needs at least two entrants, got {list(names)}")
    rates: dict[tuple[str, str], WinRate] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rates[(a, b)] = head_to_head(compare, prompts, responses[a], responses[b])
            rates[(b, a)] = mirror(rates[(a, b)])
    return Tournament(names=names, rates=rates)


Standing = Literal["better", "overlapping", "worse"]


def standing(a: WinRate, b: WinRate) -> Standing:
    """How a's interval sits against b's: entirely above ('better'), entirely below ('worse'), or
    overlapping (a shared endpoint counts as overlapping)."""
    if a.ci_low > b.ci_high:
        return "better"
    if a.ci_high < b.ci_low:
        return "worse"
    return "overlapping"


def majority_cycles(compare: Compare, prompt: str, responses: Sequence[str]) -> tuple[int, int]:
    """(cyclic, transitive): triples of the distinct `responses` to `prompt` whose three pairs are
    all strictly preferred one way by `compare` (P > 1/2), cyclic or not. One `compare` call on
    every unordered pair; triples are counted with bit sets, O(n^2) set operations."""
    distinct = list(dict.fromkeys(responses))
    n = len(distinct)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not pairs:
        return 0, 0
    values = list(compare([prompt] * len(pairs), [distinct[i] for i, _ in pairs], [distinct[j] for _, j in pairs]))
    if len(values) != len(pairs):
        raise ValueError(f"compare returned {len(values)} preferences for {len(pairs)} pairs")
    beats = [0] * n  # bit k of beats[i]: i is strictly preferred to k
    for (i, j), p in zip(pairs, values):
        if p > 0.5:
            beats[i] |= 1 << j
        elif p < 0.5:
            beats[j] |= 1 << i
    beaten_by = [0] * n
    for i in range(n):
        for k in range(n):
            if beats[i] >> k & 1:
                beaten_by[k] |= 1 << i
    cyclic3 = transitive = 0
    for i in range(n):
        for j in range(n):
            if beats[i] >> j & 1:  # edge i > j
                cyclic3 += (beats[j] & beaten_by[i]).bit_count()  # j > k > i: each cycle once per edge
                transitive += (beats[i] & beats[j]).bit_count()  # i > k, j > k: once, at (source, middle)
    return cyclic3 // 3, transitive
