"""Turn a RunConfig and a judge manifest into a checked RunPlan, before anything starts.

Every check here is cheap (no model is built or loaded, no Ray): the algorithm exists, the
judges' functions import and their model paths exist, the policy path exists, and the output
directory does not already hold a run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from driver.builtin import check_model_path
from learner.algorithms import get_algorithm
from protocols import JudgeManifest, RewardModelJudgeSpec, RuleJudgeSpec, RunConfig
from protocols.judges import POINTWISE_KINDS
from rollout.judges import resolve_function

GROUND_TRUTH = RuleJudgeSpec(
    name="ground-truth", kind="rule", function="rollout.tasks.wordlist:ground_truth", temperature=0.0
)


@dataclass(frozen=True)
class RunPlan:
    cfg: RunConfig
    manifest: JudgeManifest
    output: Path

    @property
    def eval_judge(self) -> RuleJudgeSpec | RewardModelJudgeSpec:
        """The manifest's `eval` judge, else the built-in task's ground truth."""
        return self.manifest.eval or GROUND_TRUTH

    @property
    def judge_weights(self) -> dict[str, float]:
        return {j.name: j.weight for j in self.manifest.judges}

    @property
    def judge_temperatures(self) -> dict[str, float]:
        """Bradley-Terry temperature of each judge, for turning its rewards into preferences."""
        return {j.name: j.temperature for j in self.manifest.judges}


def check_manifest(manifest: JudgeManifest, source: str) -> None:
    specs = list(manifest.judges) + ([manifest.eval] if manifest.eval else [])
    for spec in specs:
        where = f"{source}: judge {spec.name!r}"
        if isinstance(spec, RuleJudgeSpec):
            try:
                resolve_function(spec.function)
            except ValueError as err:
                raise ValueError(f"{where}: field 'function': {err}") from None
        elif isinstance(spec, RewardModelJudgeSpec):
            try:
                check_model_path(spec.path, "reward model path")
            except FileNotFoundError as err:
                raise FileNotFoundError(f"{where}: field 'path': {err}") from None


def default_judges(cfg: RunConfig) -> RunConfig:
    """The algorithm's own default manifest (OSP: a self judge) when the run names none."""
    spec = get_algorithm(cfg.algo)  # raises, listing the valid names
    if spec.default_judges and cfg.judges == RunConfig.model_fields["judges"].default:
        return cfg.model_copy(update={"judges": spec.default_judges})
    return cfg


def check_algorithm_judges(algo: str, manifest: JudgeManifest, source: str) -> None:
    """The judges give what the algorithm trains on (scalar rewards for PPO-style; a self judge for OSP)."""
    spec = get_algorithm(algo)
    if spec.needs_rewards:
        pairwise = [f"{j.name!r} ({j.kind})" for j in manifest.judges if j.kind not in POINTWISE_KINDS]
        if pairwise:
            raise ValueError(
                f"{source}: --algo {algo} trains on scalar rewards, but judges {', '.join(pairwise)} give only "
                f"preferences; use judges of kind {' or '.join(POINTWISE_KINDS)} (e.g. deploy/judges/default.yaml)"
            )
    if spec.needs_self_judge and not any(j.kind == "self" for j in manifest.judges):
        raise ValueError(
            f"{source}: --algo {algo} needs a judge of kind 'self' (the policy judging its own samples); "
            f"see deploy/judges/self.yaml"
        )


def resolve_plan(cfg: RunConfig, manifest: JudgeManifest, resume: bool = False) -> RunPlan:
    get_algorithm(cfg.algo)  # raises, listing the valid names
    check_model_path(cfg.model.path, "model path")
    check_manifest(manifest, cfg.judges)
    check_algorithm_judges(cfg.algo, manifest, cfg.judges)
    if cfg.rollout.prompts_per_step < cfg.rollout.num_workers:
        raise ValueError(
            f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} is smaller than "
            f"rollout.num_workers={cfg.rollout.num_workers}"
        )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(cfg.output) if cfg.output else Path("runs") / f"{cfg.algo}-{stamp}"
    if not resume and (output / "metrics.jsonl").exists():
        raise ValueError(f"output directory {str(output)!r} already holds a run (metrics.jsonl); choose another --output")
    return RunPlan(cfg=cfg, manifest=manifest, output=output)
