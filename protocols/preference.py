"""The preference link shared by judges (rollout/) and pairing (learner/): rewards -> P(first > second).

Lives in protocols because both sides of the sign convention must use one definition: P > 0.5
favours `first` (protocols/batches.py, PairPreference). Pure stdlib math.
"""

from __future__ import annotations

import math


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
