"""JudgeActor: a thin Ray shell around one judge built from a manifest spec."""

from __future__ import annotations

import logging
import time

import ray

from actors.telemetry import JudgeTelemetry
from protocols import Judgement, RewardModelJudgeSpec, RolloutBatch, RuleJudgeSpec
from rollout.judges import build_judge


@ray.remote
class JudgeActor:
    def __init__(self, spec: RuleJudgeSpec | RewardModelJudgeSpec, model_path: str | None):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.judge = build_judge(spec, model_path)
        self.telemetry = JudgeTelemetry(spec.name)

    def judge_batch(self, batch: RolloutBatch) -> Judgement:
        """Score every rollout of the batch (one call per batch, the judge batches internally)."""
        start = time.perf_counter()
        rewards = self.judge.score([r.prompt_text for r in batch.rollouts], [r.response_text for r in batch.rollouts])
        seconds = time.perf_counter() - start
        self.telemetry.observe(seconds, len(batch.rollouts))
        return Judgement(judge=self.judge.name, rewards=tuple(rewards), seconds=seconds)
