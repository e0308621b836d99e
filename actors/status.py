"""What an actor is and what it last did, as one line: the actors' `__repr__`.

Ray takes an actor's repr once, when its `__init__` returns, and shows that string as the actor's
Repr in the dashboard's Actors table, in `ray list actors --detail` and as the prefix of the
actor's log lines. At that moment an actor has served nothing, so what Ray records is the part
that stays true for the actor's whole life: its name, its role and, for a judge, which judge and
of which kind (e.g. `judge-ground-truth-0 | judge ground-truth, kind rule`). Ray 2.60 does not
update the recorded string afterwards.

The live part is added as the actor works (policy version, the step of the last batch, its
throughput, judge failures) and is what `repr()` of the actor object returns at any later time,
e.g. `ray.get(handle.__ray_call__.remote(repr))`; docs/monitoring.md shows how to list every
actor of a run that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def actor_name(default: str) -> str:
    """The Ray actor name of the calling actor (placement gives every actor one), else `default`."""
    import ray

    if not ray.is_initialized():  # not in an actor; and get_runtime_context() would start Ray
        return default
    return ray.get_runtime_context().get_actor_name() or default


def model_label(path: str) -> str:
    """The last two parts of a checkpoint path or hub id: 'wordlist-4f20.../policy', 'org/model'."""
    return "/".join(Path(path).parts[-2:])


@dataclass
class ActorStatus:
    """`name | role | live fields...`; live fields appear once the actor has done something."""

    name: str
    role: str
    policy_version: int | None = None
    step: int | None = None  # driver step of the last batch served
    rate: float | None = None  # throughput on the last batch
    rate_unit: str = "items/s"
    details: dict[str, str] = field(default_factory=dict)  # further live fields by key, shown in insertion order

    def served(self, step: int, amount: float, seconds: float) -> None:
        """One batch of `step` done: `amount` items (tokens, rollouts, pairs) in `seconds`."""
        self.step = step
        self.rate = amount / seconds if seconds > 0 else None

    def __str__(self) -> str:
        parts = [self.name, self.role]
        if self.policy_version is not None:
            parts.append(f"policy v{self.policy_version}")
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.rate is not None:
            parts.append(f"{self.rate:.0f} {self.rate_unit}" if self.rate >= 10 else f"{self.rate:.2f} {self.rate_unit}")
        parts += self.details.values()
        return " | ".join(parts)
