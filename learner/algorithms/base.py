"""What an algorithm declares about itself, so the learner knows which forward passes to run.

Each module under learner/algorithms/ defines one `SPEC = AlgorithmSpec(...)`; the literal dict in
learner/algorithms/__init__.py registers it by name. This is data only: no behaviour, no base class
for losses to inherit from (composition over inheritance, STYLE.md rule 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlgorithmSpec:
    """Declaration of one algorithm.

    Attributes:
        name: registry key, also `RunConfig.algo`.
        description: one line for `--list-algos`.
        needs_reference: the loss takes reference-model logprobs (a frozen pi_ref forward pass).
        needs_opponents: the loss takes logprobs of frozen past-policy snapshots (an opponent ring).
        needs_old_logprobs: the loss takes the logprobs of the policy that sampled (PPO ratio).
        needs_values: the loss takes critic values (a value head forward pass).
        pairing: key into learner.pairing.PAIRINGS, or "none" for per-sequence algorithms.
        loss: the pure loss function; its signature is algorithm specific (see its module).
        config: the protocols config section class that parameterises it, if any.
    """

    name: str
    description: str
    needs_reference: bool
    needs_opponents: bool
    needs_old_logprobs: bool
    needs_values: bool
    pairing: str
    loss: Callable[..., Any]
    config: type | None = None
