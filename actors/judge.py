"""JudgeActor: a thin Ray shell around one judge built from a manifest spec."""

from __future__ import annotations

import logging
import time

import ray

from actors.telemetry import JudgeTelemetry
from protocols import Judgement, JudgeSpec, RolloutBatch
from rollout.judges import build_judge
from rollout.judges.base import judge_rollouts


@ray.remote
class JudgeActor:
    def __init__(self, spec: JudgeSpec, model_path: str | None):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.spec = spec
        self.judge = build_judge(spec, model_path)
        self.telemetry = JudgeTelemetry(spec.name)

    def judge_batch(self, batch: RolloutBatch) -> Judgement:
        """Score and/or compare the rollouts of one batch (one call per batch; the judge batches inside)."""
        start = time.perf_counter()
        rewards, preferences = judge_rollouts(self.judge, batch, getattr(self.spec, "comparisons", "all_pairs"))
        seconds = time.perf_counter() - start
        self.telemetry.observe(seconds, len(batch.rollouts))
        return Judgement(
            judge=self.spec.name,
            rewards=tuple(rewards) if rewards is not None else None,
            preferences=tuple(preferences) if preferences is not None else None,
            seconds=seconds,
        )
