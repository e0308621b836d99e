"""Registry of training algorithms: one module each, registered here by name in a literal dict.

Adding an algorithm: docs/contributing.md (one module defining its config, loss and `SPEC`, one
entry below, one test file under tests/learner/algorithms/).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from learner.algorithms import dpo, grpo, inpo, ipo, mnpo, osp, ppo, rdpo, rloo, sppo
from learner.algorithms.base import AlgorithmSpec
from protocols import RunConfig

ALGORITHMS: dict[str, AlgorithmSpec[Any]] = {
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


def get_algorithm(name: str) -> AlgorithmSpec[Any]:
    """The spec registered as `name`; ValueError listing the valid names otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}") from None


class AlgorithmConfigError(ValueError):
    """A run config's algorithm section is invalid, or it sets another algorithm's section."""


def algorithm_config(run: RunConfig) -> BaseModel:
    """The hyperparameters of `run.algo`, validated from its section of the run config (defaults
    where unset). A section the algorithm does not read is an error, so that `--set mnpo.eta=0.9
    --algo dpo` (or a misspelt section) does not pass silently."""
    spec = get_algorithm(run.algo)
    sections = run.sections
    others = sorted(set(sections) - {spec.config_section})
    if others:
        readers = {name: sorted(a.name for a in ALGORITHMS.values() if a.config_section == name) for name in others}
        said = "; ".join(
            f"'{name}' is read by {', '.join(readers[name])}" if readers[name] else f"'{name}' is not a config section"
            for name in others
        )
        raise AlgorithmConfigError(
            f"the run config sets section(s) {', '.join(repr(o) for o in others)}, which algorithm {run.algo!r} does not "
            f"read ({said}); {run.algo} reads '{spec.config_section}': remove the others or change --algo"
        )
    try:
        config: BaseModel = spec.config.model_validate(sections.get(spec.config_section, {}))
        return config
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(x) for x in (spec.config_section, *first["loc"]))
        got = f" (got {first['input']!r})" if first["type"] != "missing" and not isinstance(first["input"], dict) else ""
        raise AlgorithmConfigError(f"run config field '{field}': {first['msg']}{got}") from None


def resolved(run: RunConfig) -> RunConfig:
    """`run` with its algorithm's section written out in full (what OUTPUT/config.yaml records)."""
    spec = get_algorithm(run.algo)
    return run.model_copy(update={spec.config_section: algorithm_config(run).model_dump(mode="json")})


__all__ = ["ALGORITHMS", "AlgorithmConfigError", "AlgorithmSpec", "algorithm_config", "get_algorithm", "resolved"]
