"""JudgeActor: a thin Ray shell around one judge built from a manifest spec.

The boundary where every kind's output is checked (rollout/judges/base.py `collect_verdicts`) and
the spec's `on_failure` applied (`judgement`): 'fail' raises JudgeOutputError naming the judge,
its kind, the step and what was wrong; 'skip' returns a Judgement marking the missing verdicts.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import ray

from actors.status import ActorStatus, actor_name
from actors.telemetry import JudgeTelemetry
from protocols import Judgement, JudgeSpec, RolloutBatch, SyncReport, WeightVersion, merge_judgements
from rollout.judges import build_judge
from rollout.judges.base import collect_verdicts, judgement

if TYPE_CHECKING:
    import torch  # only for annotations: a rule-only judge actor never imports torch


@ray.remote
class JudgeActor:
    def __init__(
        self,
        spec: JudgeSpec,
        model_path: str | None,
        member_paths: dict[str, str | None] | None = None,
        policy_dtype: str = "float32",
        sync_tolerance: float = 1e-3,
    ):
        """Arguments as `rollout.judges.build_judge`: `model_path` is the resolved checkpoint of a
        reward_model/pairwise judge or the run's policy path for a self judge; `member_paths` maps
        population members to their resolved checkpoints."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.spec = spec
        name = actor_name(f"judge-{spec.name}")
        role = "eval judge" if name.startswith("eval-") else "judge"  # deploy/placement.py: 'eval-judge-<name>-<i>'
        # First, so that repr works even if building the judge fails (Ray calls it to report the failure).
        self.status = ActorStatus(name, f"{role} {spec.name}, kind {spec.kind}", rate_unit="rollouts/s")
        self.judged = self.failed = self.skipped = 0
        self.judge = build_judge(spec, model_path, member_paths, policy_dtype=policy_dtype, sync_tolerance=sync_tolerance)
        self.telemetry = JudgeTelemetry(spec.name)

    def judge_batch(self, batch: RolloutBatch, trial: bool = False, part: tuple[int, int] | None = None) -> Judgement:
        """Score and/or compare the rollouts of one batch (one call per batch; the judge batches inside).

        `trial`: this judge's trial before it is trusted (driver/cluster.py `try_judges`): judged and
        checked the same way, but not counted in the actor's status or metrics. `part` (index,
        parts): only that part of the batch's prompt groups (`RolloutBatch.part`), its indices its
        own (the replicas' parts are joined by `merge_parts`).
        """
        if part is not None:
            batch = batch.part(*part)
        start = time.perf_counter()
        verdicts = collect_verdicts(self.judge, batch, getattr(self.spec, "comparisons", "all_pairs"))
        seconds = time.perf_counter() - start
        try:
            out = judgement(self.spec, verdicts, batch.step, seconds)
        except Exception as err:
            if not trial:
                self.failed += 1
                self.status.details["failed"] = f"{self.failed} failed (last at step {batch.step}: {type(err).__name__})"
            raise
        if trial:
            return out
        self.telemetry.observe(seconds, len(batch.rollouts))
        self.judged += len(batch.rollouts)
        self.status.served(batch.step, len(batch.rollouts), seconds)
        self.status.details["judged"] = f"{self.judged} judged"
        if out.failed:
            self.skipped += out.failed
            self.status.details["skipped"] = f"{self.skipped} without a verdict (last at step {batch.step})"
        return out

    def load_weights(self, weights: dict[str, torch.Tensor], version: WeightVersion) -> SyncReport:
        """The learner's new policy weights, for judges that judge with the policy (kind 'self')."""
        load = getattr(self.judge, "load_weights", None)
        if load is None:
            raise TypeError(
                f"judge {self.spec.name!r} of kind {self.spec.kind!r} does not take policy weights (only kind 'self' does)"
            )
        report = load(weights, version)
        self.status.policy_version = report.version
        return report

    def pid(self) -> int:
        """This actor's process id (what fault injection SIGKILLs: driver/faults.py)."""
        return os.getpid()

    def policy_version(self) -> int | None:
        """The policy version a self judge judges with; None for judges that do not follow the policy."""
        return getattr(self.judge, "policy_version", None)

    def __repr__(self) -> str:
        """Name, judge and kind; then the last step, rollouts/s, rollouts judged, failures (actors/status.py)."""
        return str(self.status)


@ray.remote(num_cpus=0)
def merge_parts(sizes: list[int], *parts: Judgement) -> Judgement:
    """One judge's judgement of a batch whose consecutive parts (`sizes` rollouts each) its replicas judged."""
    return merge_judgements(parts, sizes)
