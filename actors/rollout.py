"""RolloutActor: a thin Ray shell around rollout.sampler.VLLMSampler."""

from __future__ import annotations

import logging
import os
import time

import ray
import torch

from actors.status import ActorStatus, model_label
from actors.telemetry import RolloutTelemetry
from protocols import BatchSummary, PromptBatch, RolloutBatch, RolloutConfig, SyncReport, WeightVersion, summarize


@ray.remote
class RolloutActor:
    def __init__(self, model_path: str, cfg: RolloutConfig, dtype: str, seed: int, name: str, chat_template: str = "auto"):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        from rollout.sampler import VLLMSampler  # vLLM reads its env vars at import time

        # First, so that repr works even if the engine fails to start (Ray calls it to report the failure).
        self.status = ActorStatus(name, f"rollout worker, vLLM {model_label(model_path)} ({dtype})", rate_unit="tok/s")
        self.sampler = VLLMSampler(model_path, cfg, dtype=dtype, seed=seed, name=name, chat_template=chat_template)
        self.telemetry = RolloutTelemetry(name)
        self.weight_group = None  # under learner.weight_sync broadcast (join_weight_group)

    def generate(self, batch: PromptBatch, seed: int, temperature: float | None = None) -> RolloutBatch:
        start = time.perf_counter()
        result = self.sampler.generate(batch, seed=seed, temperature=temperature)
        tokens = sum(len(r.response_token_ids) for r in result.rollouts)
        self.telemetry.generated(tokens)
        self.status.served(batch.step, tokens, time.perf_counter() - start)
        self.status.policy_version = result.policy_version
        return result

    @ray.method(num_returns=2)
    def sample(self, batch: PromptBatch, seed: int, temperature: float | None = None) -> tuple[RolloutBatch, BatchSummary]:
        """`generate`, and the batch's summary: the driver reads only the summary; the batch goes to
        the judges and the learner by reference."""
        result = self.generate(batch, seed, temperature)
        return result, summarize(result)

    def load_weights(self, weights: dict[str, torch.Tensor], version: WeightVersion) -> SyncReport:
        report = self.sampler.load_weights(weights.items(), version)
        self.telemetry.synced(report.seconds)
        self.status.policy_version = report.version
        self.status.details["sync"] = f"synced v{report.version} in {report.seconds:.2f}s"
        return report

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        """Join learner rank 0's weight-broadcast group as member `rank` (common/weight_broadcast.py)."""
        from common.weight_broadcast import WeightGroup

        self.weight_group = None  # (the old one's sockets close)
        self.weight_group = WeightGroup(host, port, rank, world_size, backend, timeout_s)

    def receive_weights(self) -> SyncReport | None:
        """Take part in rank 0's broadcast and load what arrives, checked as `load_weights` checks;
        None (logged) when the broadcast failed: the driver then sends the weights by the object store."""
        from common.weight_broadcast import receive

        try:
            payload, weights = receive(self.weight_group)
        except RuntimeError as err:
            logging.getLogger("rollout").warning("%s: the weight broadcast failed: %s", self.status.name, err)
            return None
        version = WeightVersion.model_validate_json(payload)
        report = self.sampler.load_weights(weights, version)
        self.telemetry.synced(report.seconds)
        self.status.policy_version = report.version
        self.status.details["sync"] = f"synced v{report.version} in {report.seconds:.2f}s (broadcast)"
        return report

    def pid(self) -> int:
        """This actor's process id (what fault injection SIGKILLs: driver/faults.py)."""
        return os.getpid()

    def policy_version(self) -> int:
        return self.sampler.policy_version

    def __repr__(self) -> str:
        """Name, role and model; then the policy version served, the last step, tokens/s (actors/status.py)."""
        return str(self.status)
