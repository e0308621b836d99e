"""RolloutActor: a thin Ray shell around rollout.sampler.VLLMSampler."""

from __future__ import annotations

import logging

import ray
import torch

from actors.telemetry import RolloutTelemetry
from protocols import PromptBatch, RolloutBatch, RolloutConfig, SyncReport, WeightVersion


@ray.remote
class RolloutActor:
    def __init__(self, model_path: str, cfg: RolloutConfig, dtype: str, seed: int, name: str):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        from rollout.sampler import VLLMSampler  # vLLM reads its env vars at import time

        self.sampler = VLLMSampler(model_path, cfg, dtype=dtype, seed=seed, name=name)
        self.telemetry = RolloutTelemetry(name)

    def generate(self, batch: PromptBatch, seed: int, temperature: float | None = None) -> RolloutBatch:
        result = self.sampler.generate(batch, seed=seed, temperature=temperature)
        self.telemetry.generated(sum(len(r.response_token_ids) for r in result.rollouts))
        return result

    def load_weights(self, weights: dict[str, torch.Tensor], version: WeightVersion) -> SyncReport:
        report = self.sampler.load_weights(weights.items(), version)
        self.telemetry.synced(report.seconds)
        return report

    def policy_version(self) -> int:
        return self.sampler.policy_version
