"""The judge interfaces and the helpers every judge kind shares.

Two interfaces (typing.Protocol, no base class):
- PointwiseJudge: `score(prompts, responses) -> list[Verdict]`, one scalar per response, higher is
  better (rule, reward_model).
- PairwiseComparer: `compare(prompts, first, second) -> list[Verdict]`, P(first preferred over
  second) per triple; > 0.5 favours `first` (protocols/batches.py, PairPreference). Pairwise
  kinds (pairwise, self, http) average both presentation orders to cancel position bias:
      P = 0.5 * [p(first, second) + 1 - p(second, first)]
A judge may implement both.

Missing verdicts. A judge that cannot give a verdict for an item returns `NoVerdict(reason)` in
its place (the rule judge for a function that raised, the http judge for an answer naming neither
choice, a population for a member's missing verdict); never a made-up 0.5. `collect_verdicts`,
at the judge actor's boundary, checks every kind's output: a result that is not a list of the
right length, and items that are None, not numbers, non-finite or (preferences) outside [0, 1],
are missing verdicts too, each with what was wrong; a judge call that raises leaves every item of
the batch without one. The judge's `on_failure` then decides (`judgement`): 'fail' raises
JudgeOutputError naming the judge, its kind, the step and what was wrong; 'skip' returns a
Judgement that marks them (`failed`, `unjudged`), and the driver drops their prompt groups from
training (driver/judge_failures.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from protocols import Judgement, JudgeSpec, PairPreference, RolloutBatch
from protocols.preference import bradley_terry  # noqa: F401  (re-exported by rollout.judges)


@dataclass(frozen=True)
class NoVerdict:
    """In place of a verdict a judge could not give: why (and the exception, if one was raised)."""

    reason: str
    error: BaseException | None = field(default=None, compare=False)


Verdict = float | NoVerdict


class JudgeOutputError(ValueError):
    """A judge with on_failure 'fail' left verdicts missing; the message names the judge, kind, step and cause."""


@runtime_checkable
class PointwiseJudge(Protocol):
    """Any judge that scores one response at a time (rule, reward_model)."""

    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Sequence[Verdict]:
        """One scalar per (prompt, response); higher is better; NoVerdict where it has none."""
        ...


@runtime_checkable
class PairwiseComparer(Protocol):
    """Any judge that compares two responses to a prompt (pairwise, self, http, population)."""

    name: str

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> Sequence[Verdict]:
        """P(first[i] preferred over second[i]) for each i, in [0, 1]; NoVerdict where it has none."""
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


OneOrder = Callable[[Sequence[str], Sequence[str], Sequence[str]], Sequence[Verdict]]


def both_orders(one_order: OneOrder, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[Verdict]:
    """P = 0.5 * [p(first, second) + 1 - p(second, first)], both orders in one call of `one_order`.

    `one_order(prompts, a, b)` gives p(a preferred over b) as presented (a shown first). The
    average cancels position bias, and compare(a, b) + compare(b, a) == 1 up to rounding. A pair
    whose verdict is missing in either order (NoVerdict, or not a finite number) has none.
    """
    n = len(prompts)
    if not n == len(first) == len(second):
        raise ValueError(f"got {n} prompts, {len(first)} first and {len(second)} second responses")
    p = one_order([*prompts, *prompts], [*first, *second], [*second, *first])
    if len(p) != 2 * n:
        raise ValueError(f"one_order returned {len(p)} probabilities for {2 * n} judge prompts")
    out: list[Verdict] = []
    for i in range(n):
        forward, backward = as_verdict(p[i]), as_verdict(p[n + i])
        if isinstance(forward, NoVerdict) or isinstance(backward, NoVerdict):
            out.append(forward if isinstance(forward, NoVerdict) else backward)
        else:
            out.append(0.5 * (forward + 1.0 - backward))
    return out


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


def as_verdict(value: object) -> Verdict:
    """One item of a judge's output as a finite float, or NoVerdict saying what was wrong with it."""
    if isinstance(value, NoVerdict):
        return value
    if value is None:
        return NoVerdict("returned None")
    if isinstance(value, str | bytes) or not hasattr(type(value), "__float__"):
        return NoVerdict(f"returned {type(value).__name__} {_short(value)}, not a number")
    try:
        number = float(value)  # type: ignore[arg-type]  # has __float__ (numpy and torch scalars too)
    except (TypeError, ValueError) as err:
        return NoVerdict(f"returned {type(value).__name__} {_short(value)}, not a number ({err})")
    return number if math.isfinite(number) else NoVerdict(f"returned {number}")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Verdicts:
    """What a judge said about a batch, checked item by item (`collect_verdicts`)."""

    rewards: list[float] | None  # one per rollout; NaN where missing
    preferences: list[PairPreference] | None  # the compared pairs that have a verdict
    asked: int  # verdicts asked: rewards plus compared pairs
    missing: list[tuple[str, NoVerdict]]  # ("rollout 3" / "pair (0, 1)", why)
    unjudged: list[int]  # rollouts some missing verdict is about, ascending


def _checked(values: object, n: int, what: str, items: str) -> list[Verdict]:
    """A judge call's result as n verdicts; a result of the wrong type or length leaves all n missing."""
    if not isinstance(values, list | tuple):
        return [NoVerdict(f"returned {type(values).__name__} {_short(values)} instead of a list of {n} {what}")] * n
    if len(values) != n:
        return [NoVerdict(f"returned {len(values)} {what} for {n} {items}")] * n
    return [as_verdict(v) for v in values]


def collect_verdicts(judge: Judge, batch: RolloutBatch, comparisons: Literal["all_pairs", "adjacent"] = "all_pairs") -> Verdicts:
    """`score` on every rollout and/or `compare` on the pairs, every item checked; never raises for
    a judge's failure (a call that raises leaves its items without a verdict, naming the error)."""
    prompts = [r.prompt_text for r in batch.rollouts]
    responses = [r.response_text for r in batch.rollouts]
    missing: list[tuple[str, NoVerdict]] = []
    unjudged: set[int] = set()
    rewards = preferences = None
    asked = 0
    if isinstance(judge, PointwiseJudge):
        try:
            scores = _checked(judge.score(prompts, responses), len(responses), "rewards", "rollouts")
        except Exception as err:
            scores = [NoVerdict(f"raised {type(err).__name__}: {err}", err)] * len(responses)
        rewards = []
        for i, v in enumerate(scores):
            if isinstance(v, NoVerdict):
                missing.append((f"rollout {i}", v))
                unjudged.add(i)
                rewards.append(math.nan)
            else:
                rewards.append(v)
        asked += len(scores)
    if isinstance(judge, PairwiseComparer):
        pairs = comparison_pairs(len(responses), batch.samples_per_prompt, comparisons)
        try:
            probabilities = _checked(
                judge.compare([prompts[i] for i, _ in pairs], [responses[i] for i, _ in pairs], [responses[j] for _, j in pairs]),
                len(pairs),
                "probabilities",
                "pairs",
            )
        except Exception as err:
            probabilities = [NoVerdict(f"raised {type(err).__name__}: {err}", err)] * len(pairs)
        preferences = []
        for (i, j), p in zip(pairs, probabilities):
            if not isinstance(p, NoVerdict) and not 0.0 <= p <= 1.0:
                p = NoVerdict(f"returned probability {p}, outside [0, 1]")
            if isinstance(p, NoVerdict):
                missing.append((f"pair ({i}, {j})", p))
                unjudged.update((i, j))
            else:
                preferences.append(PairPreference(first=i, second=j, probability=p))
        asked += len(pairs)
    if rewards is None and preferences is None:
        raise TypeError(f"judge {judge.name!r} implements neither score nor compare")
    return Verdicts(rewards, preferences, asked, missing, sorted(unjudged))


def describe_missing(verdicts: Verdicts, limit: int = 3) -> str:
    """'no verdict for 2 of 8: rollout 1: returned None; rollout 5: returned nan'."""
    reasons: dict[str, list[str]] = {}
    for item, no in verdicts.missing:
        reasons.setdefault(no.reason, []).append(item)
    if len(reasons) == 1 and len(verdicts.missing) == verdicts.asked:
        return f"no verdict for any of its {verdicts.asked}: {next(iter(reasons))}"
    parts = [
        f"{', '.join(items[:3])}{', ...' if len(items) > 3 else ''}: {reason}" for reason, items in list(reasons.items())[:limit]
    ]
    more = f"; and {len(reasons) - limit} other reasons" if len(reasons) > limit else ""
    return f"no verdict for {len(verdicts.missing)} of {verdicts.asked}: " + "; ".join(parts) + more


def judgement(spec: JudgeSpec, verdicts: Verdicts, step: int | None, seconds: float | None = None) -> Judgement:
    """The Judgement of `verdicts` under the judge's `on_failure`: 'fail' raises JudgeOutputError if
    any verdict is missing; 'skip' marks them in the Judgement (`failed`, `unjudged`, `failure`)."""
    if verdicts.missing and spec.on_failure != "skip":
        where = f" at step {step}" if step is not None else ""
        cause = next((no.error for _, no in verdicts.missing if no.error is not None), None)
        raise JudgeOutputError(
            f"judge {spec.name!r} (kind {spec.kind}){where}: {describe_missing(verdicts)} "
            f"(on_failure: fail; 'skip' would drop their prompt groups from training instead)"
        ) from cause
    return Judgement(
        judge=spec.name,
        rewards=tuple(verdicts.rewards) if verdicts.rewards is not None else None,
        preferences=tuple(verdicts.preferences) if verdicts.preferences is not None else None,
        seconds=seconds,
        failed=len(verdicts.missing),
        unjudged=tuple(verdicts.unjudged),
        failure=describe_missing(verdicts)[:500] if verdicts.missing else None,
    )


def judge_rollouts(
    judge: Judge, batch: RolloutBatch, comparisons: Literal["all_pairs", "adjacent"] = "all_pairs"
) -> tuple[list[float] | None, list[PairPreference] | None]:
    """(rewards, preferences) of a batch: `score` on every rollout and/or `compare` on the pairs.

    Every verdict must be there (JudgeOutputError naming the judge otherwise): for callers without
    a failure policy (benchmarks, tests).
    """
    verdicts = collect_verdicts(judge, batch, comparisons)
    if verdicts.missing:
        cause = next((no.error for _, no in verdicts.missing if no.error is not None), None)
        raise JudgeOutputError(f"judge {judge.name!r}: {describe_missing(verdicts)}") from cause
    return verdicts.rewards, verdicts.preferences
