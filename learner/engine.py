"""The learner: judged experience -> new policy weights, on a DeepSpeed ZeRO engine (no Ray here).

Wrapped by actors/learner.py, one instance per rank. The algorithm (learner/algorithms/, chosen by
`RunConfig.algo`) declares which models it needs; the learner builds only those, hands them to the
family's step as one `Models` handle (learner/models.py) and owns what is around the step: the
opponent snapshots' schedule, checkpoints and the weights that leave for the rollout workers.

    train_step: maybe push a snapshot (MNPO)  ->  pair_step | sequence_step  ->  version += 1

With `learner.lora.rank > 0` the engine trains LoRA adapters and the reference is the frozen base
under them (learner/lora.py); weights leave the learner merged, under the base model's names.
Without LoRA the reference is a frozen copy of the starting weights, built only when the algorithm
reads it under its config (`AlgorithmSpec.reads_reference`: not SPPO, not a zero KL weight);
`kl_to_reference` (the evaluation's KL) then loads it for the call.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from common.tensors import DTYPES, probe_logprobs
from learner import distributed, lora
from learner.algorithms import algorithm_config, get_algorithm
from learner.collate import collate_sequences
from learner.models import Models, takes_logits_to_keep
from learner.opponents import OpponentRing, snapshot_due
from learner.ops import kl_k1, masked_sum
from learner.pair_step import pair_step
from learner.sequence_step import sequence_step
from protocols import JudgedBatch, LearnerConfig, LearnerStepResult, RolloutBatch, RunConfig, SyncProbe

logger = logging.getLogger(__name__)

OPPONENTS_FILE = "opponents.pt"


def deepspeed_config(cfg: LearnerConfig, dtype: str, world_size: int) -> dict:
    """DeepSpeed JSON config. We drive micro-batching ourselves, so DeepSpeed sees micro = 1."""
    return {
        "train_batch_size": world_size,
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": dtype == "bfloat16"},
        "zero_allow_untested_optimizer": True,  # torch AdamW: no JIT-compiled op needed on CPU
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class PolicyLearner:
    """One learner rank holding the policy engine, the reference (when read) and the opponent ring."""

    def __init__(
        self,
        model_path: str,
        run: RunConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int = 0,
    ):
        import deepspeed  # deferred: see learner/distributed.py

        cfg = run.learner
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.spec = get_algorithm(run.algo)
        self.algo_cfg: Any = algorithm_config(run)  # the algorithm's own config model (learner/algorithms/)
        self.version = 0
        self.model_path, self.torch_dtype = model_path, DTYPES[run.model.dtype]
        torch.manual_seed(run.seed)
        distributed.init_distributed(rank, world_size, master_addr, master_port or distributed.free_port())
        self.device = distributed.device()
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.torch_dtype)
        self.pad_token_id = _pad_token_id(model)
        base_model = model  # the HF class, before any LoRA wrapping
        self.lora = cfg.lora.rank > 0
        reads_reference = self.spec.reads_reference(self.algo_cfg)  # the one decision (learner/algorithms/base.py)
        self.reference: torch.nn.Module | None = None
        if self.spec.needs_opponents:  # the ring starts full of the starting policy (pair family)
            self.snapshot_every: int = self.algo_cfg.snapshot_every
            self.opponents: OpponentRing | None = OpponentRing(  # the ring freezes copies of it
                model.to(self.device), self.spec.fixed_opponents or self.algo_cfg.num_opponents
            )
        else:
            self.opponents = None
        if self.lora:  # the reference is the frozen base under the adapters: no copy (learner/lora.py)
            model = lora.wrap(model, cfg.lora)
            self.reference = lora.FrozenBase(model)
        elif reads_reference:
            self.reference = _frozen(copy.deepcopy(model), self.device)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        )
        warmup = max(cfg.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        ds_config = deepspeed_config(cfg, run.model.dtype, world_size)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=ds_config,
        )
        if self.lora:
            lora.exclude_tied_frozen_from_checkpoints(self.engine)
        self.critic = None
        if self.spec.needs_values:
            from learner.critic import Critic

            self.critic = Critic(model_path, cfg, self.algo_cfg.critic_lr, ds_config, self.torch_dtype, self.device)
        self.models = Models(
            policy=self.engine,
            reference=self.reference if reads_reference else None,
            opponents=self.opponents,
            critic=self.critic,
            device=self.device,
            pad_token_id=self.pad_token_id,
            micro_batch_size=cfg.micro_batch_size,
            rank=rank,
            world_size=world_size,
            seed=run.seed,
            logits_to_keep=takes_logits_to_keep(base_model),
            offpolicy_clip=cfg.offpolicy_clip,
            length_buckets=cfg.length_buckets,
        )
        logger.info(
            "learner rank %d: %s, on %s, ZeRO-%d, %.2fM parameters (%.2fM trained%s), algo %s",
            rank,
            model_path,
            self.device,
            cfg.zero_stage,
            sum(p.numel() for p in model.parameters()) / 1e6,
            lora.adapter_parameters(model) / 1e6,
            f", LoRA rank {cfg.lora.rank}" if self.lora else "",
            run.algo,
        )

    # ------------------------------------------------------------------ training
    def train_step(
        self,
        judged: Sequence[JudgedBatch],
        step: int,
        judge_weights: Mapping[str, float],
        judge_temperatures: Mapping[str, float] | None = None,
    ) -> LearnerStepResult:
        """Train on `judged` (one JudgedBatch per rollout worker, all of one policy_version).

        `judge_weights` / `judge_temperatures`: the manifest's weight and Bradley-Terry temperature
        of each judge (learner/pairing.py combines the judges with them).
        """
        start = time.perf_counter()
        versions = {j.batch.policy_version for j in judged}
        if len(versions) != 1:
            raise ValueError(f"a step must train on one policy version, got {sorted(versions)}")
        temperatures = dict(judge_temperatures or {})
        if self.opponents is not None and snapshot_due(self.version, self.snapshot_every):
            self.opponents.push(self.state_dict(), self.version)
        if self.spec.family == "pair":
            metrics = pair_step(self.models, self.spec, self.algo_cfg, judged, judge_weights, temperatures)
        else:
            metrics = sequence_step(
                self.models, self.spec, self.algo_cfg, judged, step, judge_weights, temperatures, version=self.version
            )
        self.version += 1
        metrics["learner/lr"] = float(self.scheduler.get_last_lr()[0])
        metrics["learner/seconds"] = time.perf_counter() - start
        return LearnerStepResult(step=step, policy_version=self.version, trained_on_version=versions.pop(), metrics=metrics)

    @torch.no_grad()
    def kl_to_reference(self, batches: Sequence[RolloutBatch]) -> float:
        """Mean over rollouts of sum_t (logp_pi - logp_ref) on their response tokens (k1).

        Works for every algorithm: a learner that trains without a reference (SPPO, a zero KL
        weight) loads the starting weights for this call and drops them after (`_reference_for_call`),
        so the evaluation's KL stays comparable across algorithms at the price of one load per call."""
        rollouts = [r for b in batches for r in b.rollouts]
        total = 0.0
        micro = max(1, self.cfg.micro_batch_size)
        self.engine.eval()
        with self._gathered(), self._reference_for_call() as reference:
            for lo in range(0, len(rollouts), micro):
                t = collate_sequences(rollouts[lo : lo + micro], self.pad_token_id).to(self.device)
                kl = kl_k1(self.models.token_logprobs(self.engine.module, t), self.models.token_logprobs(reference, t))
                total += float(masked_sum(kl, t.response_mask, dim=-1).sum())
        return total / max(len(rollouts), 1)

    @contextlib.contextmanager
    def _reference_for_call(self) -> Iterator[torch.nn.Module]:
        """The reference: the learner's own, or the starting weights loaded from `model_path` for
        the duration of the block (a training step then never holds them)."""
        if self.reference is not None:
            yield self.reference
            return
        logger.info("learner rank %d: loading the reference from %s for the KL (not kept)", self.rank, self.model_path)
        reference = _frozen(AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.torch_dtype), self.device)
        try:
            yield reference
        finally:
            del reference

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str) -> None:
        """Policy, optimizer, scheduler (DeepSpeed, every rank) and the opponent ring (rank 0)."""
        self.engine.save_checkpoint(  # with LoRA: the adapters and their optimizer state (the base is the start)
            directory,
            tag="learner",
            client_state={"version": self.version, "torch_rng": torch.get_rng_state()},
            exclude_frozen_parameters=self.lora,
        )
        if self.critic is not None:
            self.critic.save_checkpoint(directory)
        if self.rank == 0 and self.opponents is not None:
            ring = {"versions": self.opponents.versions, "models": [m.state_dict() for m in self.opponents.models]}
            torch.save(ring, Path(directory) / OPPONENTS_FILE)

    def load_checkpoint(self, directory: str) -> int:
        """Restore what `save_checkpoint` wrote; returns the restored policy version."""
        path, client = self.engine.load_checkpoint(directory, tag="learner", load_module_strict=not self.lora)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint 'learner' under {directory}")
        self.version = int(client["version"])
        torch.set_rng_state(client["torch_rng"])
        if self.critic is not None:
            self.critic.load_checkpoint(directory)
        if self.opponents is not None:
            ring = torch.load(Path(directory) / OPPONENTS_FILE, map_location="cpu")
            for model, state in zip(self.opponents.models, ring["models"], strict=True):
                model.load_state_dict(state, strict=True)
            self.opponents.versions = list(ring["versions"])
        return self.version

    def opponent_versions(self) -> list[int]:
        return list(self.opponents.versions) if self.opponents is not None else []

    # ------------------------------------------------------------------ weights out
    def _gathered(self):
        """Context in which every rank sees full parameters (ZeRO-3 partitions them)."""
        if self.cfg.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None)
        return contextlib.nullcontext()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full policy weights as CPU tensors in HF checkpoint names (tied heads included).

        Collective under ZeRO-3: every rank must call it.
        """
        with self._gathered():
            if self.lora:
                return lora.merged_state_dict(self.engine.module)
            return {k: v.detach().to("cpu", copy=True) for k, v in self.engine.module.state_dict().items()}

    @torch.no_grad()
    def probe(self, sequences: Sequence[Sequence[int]]) -> SyncProbe:
        """The policy's logprob of each token after the first, for the rollout workers' check."""
        with self._gathered():
            self.engine.module.eval()
            rows = probe_logprobs(self.engine.module, sequences)
        return SyncProbe(token_ids=tuple(tuple(s) for s in sequences), logprobs=tuple(tuple(r) for r in rows))

    def save_pretrained(self, directory: str) -> None:
        """Write the policy as an HF checkpoint (rank 0 writes; collective under ZeRO-3)."""
        state = self.state_dict()
        if self.rank == 0:
            module: PreTrainedModel = self.engine.module.get_base_model() if self.lora else self.engine.module
            if self.lora:  # merged copies are separate tensors: drop tied aliases as save_pretrained would
                tied = getattr(module, "all_tied_weights_keys", None) or {}
                state = {k: v for k, v in state.items() if k not in tied}
            module.save_pretrained(directory, state_dict=state)  # with LoRA: merged, under the base names


def _frozen(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` in eval mode on `device`, without gradients: a reference (pi_ref) for no-grad passes."""
    return model.eval().requires_grad_(False).to(device)


def _pad_token_id(model: PreTrainedModel) -> int:
    pad = model.config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    if pad is None:
        raise ValueError("the model config has neither pad_token_id nor eos_token_id")
    return int(pad)
