"""Held-out win rate with a 95% confidence interval (pure Python).

Each held-out prompt has n responses from the policy and n from the baseline (the starting
policy); response i of one is compared with response i of the other. A prompt's score is the mean
P(policy > baseline) over its n comparisons; the win rate is the mean over prompts and its
interval is a normal interval on the prompt-level scores (prompts are the independent units, so
the interval does not pretend that n samples of one prompt are n independent draws).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from protocols import WinRate
from rollout.judges.base import bradley_terry

Z95 = 1.959963984540054


def win_rate(per_prompt: Sequence[Sequence[float]]) -> WinRate:
    """`per_prompt[i]` = P(policy > baseline) for each comparison made on prompt i."""
    if not per_prompt or any(len(row) == 0 for row in per_prompt):
        raise ValueError("win_rate needs at least one comparison for every prompt")
    scores = [sum(row) / len(row) for row in per_prompt]
    mean = sum(scores) / len(scores)
    half = Z95 * statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 1.0
    return WinRate(
        win_rate=mean,
        ci_low=max(0.0, mean - half),
        ci_high=min(1.0, mean + half),
        num_prompts=len(scores),
        num_comparisons=sum(len(row) for row in per_prompt),
    )


def win_rate_from_rewards(
    policy: Sequence[float], baseline: Sequence[float], samples_per_prompt: int, temperature: float
) -> WinRate:
    """Win rate from scalar rewards laid out prompt-major (`samples_per_prompt` per prompt)."""
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    if len(policy) != len(baseline) or len(policy) % samples_per_prompt:
        raise ValueError(f"need equal reward lists in groups of {samples_per_prompt}, got {len(policy)} and {len(baseline)}")
    k = samples_per_prompt
    rows = [[bradley_terry(policy[i + j], baseline[i + j], temperature) for j in range(k)] for i in range(0, len(policy), k)]
    return win_rate(rows)
