"""Registry of training algorithms: one module each, registered here by name in a literal dict.

Adding an algorithm = one module under learner/algorithms/ defining `SPEC`, one entry below, one
test file under tests/learner/algorithms/.
"""

from __future__ import annotations

from learner.algorithms import mnpo
from learner.algorithms.base import AlgorithmSpec

ALGORITHMS: dict[str, AlgorithmSpec] = {
    "mnpo": mnpo.SPEC,
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered as `name`; ValueError listing the valid names otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}") from None


__all__ = ["ALGORITHMS", "AlgorithmSpec", "get_algorithm"]
