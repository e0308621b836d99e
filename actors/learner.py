"""LearnerActor: a thin Ray shell around learner.engine.PolicyLearner (one per rank).

Construction is cheap; `setup` joins the torch.distributed group once the driver knows rank 0's
address (`rendezvous` on rank 0 tells it).
"""

from __future__ import annotations

import logging
import os
import time

import ray

from actors.status import ActorStatus, actor_name
from learner import distributed, storage
from protocols import JudgedBatch, Judgement, LearnerStepResult, RolloutBatch, RunConfig, WeightVersion


@ray.remote
class LearnerActor:
    def __init__(self, rank: int, world_size: int):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.rank, self.world_size = rank, world_size
        self.learner = None
        self.weight_group = None  # rank 0 under learner.weight_sync broadcast (join_weight_group)
        self.status = ActorStatus(actor_name(f"learner-{rank}"), f"learner rank {rank}/{world_size}", rate_unit="pairs/s")

    def pid(self) -> int:
        """This actor's process id (what fault injection SIGKILLs: driver/faults.py)."""
        return os.getpid()

    def rendezvous(self, port: int = 0) -> tuple[str, int]:
        """Rank 0: the address other ranks join."""
        return ray.util.get_node_ip_address(), port or distributed.free_port()

    def setup(self, model_path: str, cfg: RunConfig, master_addr: str, master_port: int) -> None:
        from learner.engine import PolicyLearner  # imports DeepSpeed (seconds) only in learner processes

        self.learner = PolicyLearner(
            model_path,
            cfg,
            rank=self.rank,
            world_size=self.world_size,
            master_addr=master_addr,
            master_port=master_port,
        )
        self.status.role += f", {cfg.algo}, ZeRO-{cfg.learner.zero_stage}"
        self.status.policy_version = self.learner.version

    def train_step(
        self,
        step: int,
        judge_weights: dict[str, float],
        judge_temperatures: dict[str, float],
        judgements: list[tuple[Judgement, ...]],
        *batches: RolloutBatch,
    ) -> LearnerStepResult:
        judged = [JudgedBatch(batch=b, judgements=j) for b, j in zip(batches, judgements, strict=True)]
        result = self.learner.train_step(judged, step, judge_weights, judge_temperatures)
        self._track(result)
        return result

    def _track(self, result: LearnerStepResult) -> None:
        """The repr's live fields after one update: version, step, pairs (or sequences) per second, loss."""
        metrics = result.metrics
        unit = "pairs" if "learner/pairs" in metrics else "sequences"
        self.status.rate_unit = f"{unit}/s"
        self.status.served(result.step, metrics.get(f"learner/{unit}", 0.0), metrics.get("learner/seconds", 0.0))
        self.status.policy_version = result.policy_version
        if "learner/loss" in metrics:
            self.status.details["loss"] = f"loss {metrics['learner/loss']:.4f}"

    @ray.method(num_returns=2)
    def export(self, step: int, probe_sequences: list[list[int]]) -> tuple[WeightVersion | None, dict | None]:
        """Publish the current weights (collective under ZeRO-3; only rank 0 returns them)."""
        start = time.perf_counter()
        state = self.learner.state_dict()
        probe = self.learner.probe(probe_sequences)
        if self.rank != 0:
            return None, None
        version = WeightVersion(
            version=self.learner.version,
            step=step,
            num_tensors=len(state),
            num_bytes=sum(t.numel() * t.element_size() for t in state.values()),
            probe=probe,
            export_seconds=time.perf_counter() - start,
        )
        return version, state

    def join_weight_group(self, host: str, port: int, world_size: int, backend: str, timeout_s: float) -> None:
        """Rank 0: found the weight-broadcast group (common/weight_broadcast.py) at host:port, as its
        sender; returns once every member joined. A new group replaces the old one."""
        from common.weight_broadcast import WeightGroup

        self.weight_group = None  # (the old one's sockets close)
        self.weight_group = WeightGroup(host, port, 0, world_size, backend, timeout_s)

    @ray.method(num_returns=2)
    def broadcast_weights(self, step: int, probe_sequences: list[list[int]], bucket_bytes: int) -> tuple:
        """`export`, and the weights broadcast to the group's members as they go. A broadcast that
        fails (a member died or stalled past the group's timeout) is logged, not raised: the
        returned weights serve the driver's object-store fallback."""
        from common.weight_broadcast import send

        version, state = self.export(step, probe_sequences)
        if self.rank != 0:
            return version, state
        try:
            sent = send(self.weight_group, state, version.model_dump_json().encode(), bucket_bytes)
            logging.getLogger("learner").debug("broadcast %.1f MiB of version %d", sent / (1 << 20), version.version)
        except RuntimeError as err:
            logging.getLogger("learner").warning("the weight broadcast of version %d failed: %s", version.version, err)
        return version, state

    def kl_to_reference(self, *batches: RolloutBatch) -> float:
        return self.learner.kl_to_reference(batches)

    def node_id(self) -> str:
        """The Ray node this rank runs on (the driver tells ranks on other nodes to ship their files)."""
        return ray.get_runtime_context().get_node_id()

    def save_checkpoint(self, target: str | None) -> storage.Files | None:
        """Write this rank's checkpoint files to `target` (learner/storage.py: a path, a URI, or None
        to return them)."""
        return storage.save_staged(target, self.learner.save_checkpoint)

    def load_checkpoint(self, source: str, files: storage.Files | None = None) -> int:
        """Load a checkpoint from `source` (a path this node sees, or a URI), or from the shipped `files`."""
        version = storage.load_staged(source, files, self.learner.load_checkpoint)
        self.status.policy_version = version
        return version

    def opponent_versions(self) -> list[int]:
        return self.learner.opponent_versions()

    def save(self, target: str | None, tokenizer_path: str) -> storage.Files | None:
        """The policy as an HF checkpoint with its tokenizer (rank 0's files; every rank joins the
        gather under ZeRO-3), delivered as `save_checkpoint` delivers."""
        return storage.save_staged(target, lambda directory: self._save_pretrained(directory, tokenizer_path))

    def _save_pretrained(self, directory: str, tokenizer_path: str) -> None:
        from transformers import AutoTokenizer

        self.learner.save_pretrained(directory)
        if self.rank == 0:
            AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(directory)

    def __repr__(self) -> str:
        """Name, rank, algorithm; then the policy version, the last step, pairs/s and loss (actors/status.py)."""
        return str(self.status)
