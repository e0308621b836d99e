"""Registry of training algorithms: one module each, registered here by name in a literal dict.

Adding an algorithm = one module under learner/algorithms/ defining `SPEC`, one entry below, one
test file under tests/learner/algorithms/.
"""

from __future__ import annotations

from learner.algorithms import dpo, grpo, inpo, ipo, mnpo, osp, ppo, rdpo, rloo, sppo
from learner.algorithms.base import AlgorithmSpec

ALGORITHMS: dict[str, AlgorithmSpec] = {
    # Nash family (pairs, opponent snapshots)
    "mnpo": mnpo.SPEC,
    "inpo": inpo.SPEC,
    # direct preference family (pairs)
    "dpo": dpo.SPEC,
    "ipo": ipo.SPEC,
    "rdpo": rdpo.SPEC,
    "osp": osp.SPEC,
    # sequence family
    "sppo": sppo.SPEC,
    "ppo": ppo.SPEC,
    "grpo": grpo.SPEC,
    "rloo": rloo.SPEC,
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered as `name`; ValueError listing the valid names otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}") from None


__all__ = ["ALGORITHMS", "AlgorithmSpec", "get_algorithm"]
