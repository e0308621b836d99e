"""Judge kinds, one module each, built from manifest specs (protocols/judges.py).

    rule          rule.py          pointwise   a Python function
    reward_model  reward_model.py  pointwise   an HF sequence-classification model
    pairwise      pairwise.py      pairwise    a fixed causal LM's verdict (verdict.py)
    self          self_judge.py    pairwise    the policy's verdict, weights synced every step
    http          http.py          pairwise    an OpenAI-compatible completions endpoint
    population    population.py    pairwise    members of the kinds above, drawn or voted

Model kinds are imported only when built, so a rule-only run never imports torch/transformers.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols import (
    HttpJudgeSpec,
    JudgeSpec,
    PairwiseJudgeSpec,
    PopulationJudgeSpec,
    RewardModelJudgeSpec,
    RuleJudgeSpec,
    SelfJudgeSpec,
)
from rollout.judges.base import Judge, bradley_terry
from rollout.judges.rule import RuleJudge, resolve_function


def build_judge(
    spec: JudgeSpec,
    model_path: str | None = None,
    member_paths: Mapping[str, str | None] | None = None,
    *,
    policy_dtype: str = "float32",
    sync_tolerance: float = 1e-3,
) -> Judge:
    """Instantiate the judge a spec describes.

    model_path: the resolved checkpoint of reward_model and pairwise judges (their `path`, with
        'builtin:...' resolved by the driver); for a self judge, the run's policy path.
    member_paths: population only: member name -> its resolved model path (None or absent for
        kinds without a model).
    policy_dtype, sync_tolerance: self judge only: the run's `model.dtype` and the probe
        tolerance of weight syncs (`rollout.sync_tolerance`).
    """
    if isinstance(spec, RuleJudgeSpec):
        return RuleJudge(spec)
    if isinstance(spec, HttpJudgeSpec):
        from rollout.judges.http import HttpJudge  # the HTTP client: only when used

        return HttpJudge(spec)
    if isinstance(spec, PopulationJudgeSpec):
        from rollout.judges.population import PopulationJudge

        paths = member_paths or {}
        members = [build_judge(m, paths.get(m.name)) for m in spec.members]
        return PopulationJudge(spec, members)
    if model_path is None:
        what = "the run's policy path" if isinstance(spec, SelfJudgeSpec) else "a resolved model path"
        raise ValueError(f"judge {spec.name!r}: a {spec.kind} judge needs {what}")
    # torch + transformers below: only when used
    if isinstance(spec, RewardModelJudgeSpec):
        from rollout.judges.reward_model import RewardModelJudge

        return RewardModelJudge(spec, model_path)
    if isinstance(spec, PairwiseJudgeSpec):
        from rollout.judges.pairwise import PairwiseJudge

        return PairwiseJudge(spec, model_path)
    if isinstance(spec, SelfJudgeSpec):
        from rollout.judges.self_judge import SelfJudge

        return SelfJudge(spec, model_path, dtype=policy_dtype, sync_tolerance=sync_tolerance)
    raise TypeError(f"no judge implementation for spec {type(spec).__name__}")


__all__ = ["Judge", "RuleJudge", "bradley_terry", "build_judge", "resolve_function"]
