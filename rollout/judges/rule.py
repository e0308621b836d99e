"""Rule judge: a Python function `f(prompt, response) -> float` named by import path.

For verifiable rewards (unit tests, exact answers) and the tasks' ground truths
(`rollout.tasks.wordlist:ground_truth`). The spec's `args` are bound as keyword arguments, so one
function can serve several files or settings: f(prompt, response, **args).

Each rollout is one call: a call that raises, or returns something that is not a finite number
(None, NaN, a list, a string), leaves that rollout alone without a verdict (base.NoVerdict, with
the exception or what was returned); what happens then is the judge's `on_failure`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence

from protocols import RuleJudgeSpec
from rollout.judges.base import NoVerdict, Verdict, as_verdict

RuleFunction = Callable[[str, str], float]


def resolve_function(import_path: str) -> RuleFunction:
    """Import 'package.module:function'; errors say which part did not resolve."""
    module_name, _, attr = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} of {import_path!r}: {err}") from err
    function = getattr(module, attr, None)
    if function is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {import_path!r})")
    if not callable(function):
        raise ValueError(f"{import_path!r} is not callable")
    return function


class RuleJudge:
    def __init__(self, spec: RuleJudgeSpec):
        self.name = spec.name
        function = resolve_function(spec.function)
        self.function = functools.partial(function, **spec.args) if spec.args else function

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        return [self._one(p, r) for p, r in zip(prompts, responses, strict=True)]

    def _one(self, prompt: str, response: str) -> Verdict:
        try:
            value = self.function(prompt, response)
        except Exception as err:  # the user's function: any error is this rollout's missing verdict
            return NoVerdict(f"raised {type(err).__name__}: {err}", err)
        return as_verdict(value)
