"""Turn a judged batch into (chosen, rejected) pairs for the preference losses.

Where it sits: rollout workers + judges -> `protocols.JudgedBatch` -> **pairing** -> collate ->
forward passes -> loss. A pairing rule is a function `(judged, judge_weights) -> list[Pair]`,
registered by name in `PAIRINGS`; algorithms name theirs in `AlgorithmSpec.pairing`.

Reward convention: every judge's scalar rewards are "higher is better"; the combined reward of a
rollout is the weighted mean over the judges that gave rewards (weights from the judge manifest).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocols.batches import JudgedBatch


@dataclass(frozen=True)
class Pair:
    """Two responses to one prompt, ordered by the judges.

    Attributes:
        prompt_token_ids: prompt tokens (shared by both responses).
        chosen_token_ids: response tokens of the preferred response y_w (EOS included if sampled).
        rejected_token_ids: response tokens of the other response y_l.
        chosen_reward: combined judged reward of y_w.
        rejected_reward: combined judged reward of y_l.
        probability: P(chosen preferred over rejected) in [0.5, 1]; 1.0 for a hard comparison.
        policy_version: weight version that sampled both responses.
    """

    prompt_token_ids: tuple[int, ...]
    chosen_token_ids: tuple[int, ...]
    rejected_token_ids: tuple[int, ...]
    chosen_reward: float
    rejected_reward: float
    probability: float
    policy_version: int


PairingFn = Callable[[JudgedBatch, Mapping[str, float]], list[Pair]]


def combined_rewards(judged: JudgedBatch, judge_weights: Mapping[str, float]) -> list[float]:
    """Weighted mean reward per rollout over the judges that gave scalar rewards.

    Args:
        judged: the batch and its judgements.
        judge_weights: judge name -> weight > 0 (`JudgeSpec.weight` from the manifest). Judges that
            gave only preferences are ignored here and need no weight.

    Returns:
        One float per rollout, in batch order: sum_j w_j r_j / sum_j w_j.

    Raises:
        ValueError: no judge gave rewards, or a rewarding judge has no (or a non-positive) weight.
        (JudgedBatch itself refuses two judgements with one judge name.)
    """
    names = [j.judge for j in judged.judgements]
    rewarding = [j for j in judged.judgements if j.rewards is not None]
    if not rewarding:
        raise ValueError(f"no judge gave scalar rewards (judges: {names}); reward-based pairing needs at least one")
    weights = []
    for j in rewarding:
        if j.judge not in judge_weights:
            raise ValueError(
                f"judge {j.judge!r} gave rewards but has no weight; weights given for {sorted(judge_weights)}"
            )
        w = judge_weights[j.judge]
        if not w > 0.0:
            raise ValueError(f"judge {j.judge!r} has weight {w}; weights must be > 0")
        weights.append(w)
    total = sum(weights)
    n = len(judged.batch.rollouts)
    return [sum(w * j.rewards[i] for w, j in zip(weights, rewarding)) / total for i in range(n)]


def best_vs_worst(judged: JudgedBatch, judge_weights: Mapping[str, float]) -> list[Pair]:
    """One pair per prompt: the highest combined reward (chosen) vs the lowest (rejected).

    Groups are the K contiguous rollouts of a prompt. A group whose best and worst rewards are equal
    carries no signal and is skipped, so the result may be shorter than the number of prompts (or
    empty). Among equal rewards the lowest index wins both picks, so the result is deterministic.
    `probability` is 1.0 (a hard comparison), as in the MNPO reference code.
    """
    rewards = combined_rewards(judged, judge_weights)
    k = judged.batch.samples_per_prompt
    pairs = []
    for g, group in enumerate(judged.batch.groups()):
        group_rewards = rewards[g * k : (g + 1) * k]
        best = max(range(k), key=lambda i: (group_rewards[i], -i))
        worst = min(range(k), key=lambda i: (group_rewards[i], i))
        if group_rewards[best] == group_rewards[worst]:
            continue
        if group[best].prompt_token_ids != group[worst].prompt_token_ids:
            raise ValueError(f"prompt {group[best].prompt_id!r}: its rollouts carry different prompt_token_ids")
        pairs.append(Pair(
            prompt_token_ids=group[best].prompt_token_ids,
            chosen_token_ids=group[best].response_token_ids,
            rejected_token_ids=group[worst].response_token_ids,
            chosen_reward=group_rewards[best],
            rejected_reward=group_rewards[worst],
            probability=1.0,
            policy_version=group[best].policy_version,
        ))
    return pairs


PAIRINGS: dict[str, PairingFn] = {
    "best_vs_worst": best_vs_worst,
}


def get_pairing(name: str) -> PairingFn:
    """The pairing rule registered as `name`; ValueError listing the valid names otherwise."""
    try:
        return PAIRINGS[name]
    except KeyError:
        raise ValueError(f"unknown pairing {name!r}; valid: {', '.join(sorted(PAIRINGS))}") from None
