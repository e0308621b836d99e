"""Judge kinds, one module each, built from manifest specs (protocols/judges.py)."""

from __future__ import annotations

from protocols import RewardModelJudgeSpec, RuleJudgeSpec
from rollout.judges.base import Judge, bradley_terry
from rollout.judges.rule import RuleJudge, resolve_function


def build_judge(spec: RuleJudgeSpec | RewardModelJudgeSpec, model_path: str | None = None) -> Judge:
    """Instantiate the judge a spec describes; `model_path` is the resolved path of model kinds."""
    if isinstance(spec, RuleJudgeSpec):
        return RuleJudge(spec)
    if isinstance(spec, RewardModelJudgeSpec):
        if model_path is None:
            raise ValueError(f"judge {spec.name!r}: a reward_model judge needs a resolved model path")
        from rollout.judges.reward_model import RewardModelJudge  # torch + transformers: only when used

        return RewardModelJudge(spec, model_path)
    raise TypeError(f"no judge implementation for spec {type(spec).__name__}")


__all__ = ["Judge", "RuleJudge", "bradley_terry", "build_judge", "resolve_function"]
