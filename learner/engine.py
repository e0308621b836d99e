"""The learner: judged experience -> new policy weights, on a DeepSpeed ZeRO engine (no Ray here).

Wrapped by actors/learner.py, one instance per rank. The algorithm (learner/algorithms/, chosen by
`RunConfig.algo`) declares which forward passes it needs; the learner runs only those.

Pair family (DPO, IPO, rDPO, OSP, MNPO, INPO), one optimizer step per driver step:
    pairs = pairing(judged)            # learner/pairing.py, rule from the algorithm's config
    maybe push a snapshot              # opponent ring, every `snapshot_every` steps
    for each micro-batch of pairs:     # gradients accumulated
        ref / opponent logprobs        # no grad, only if declared
        policy logprobs -> pair_loss   # a pure function of the algorithm
        engine.backward(loss * share)
    engine.step()

Sequence family (PPO, GRPO, RLOO, SPPO): learner/sequence_step.py.

Every rank builds the same pairs / groups from the JudgedBatch (deterministic), trains on its
shard, and DeepSpeed averages the gradients.

With `learner.lora.rank > 0` the engine trains LoRA adapters and the reference is the frozen base
under them (learner/lora.py); weights leave the learner merged, under the base model's names.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from learner import distributed, lora
from learner.algorithms import get_algorithm
from learner.algorithms.base import PairInputs
from learner.collate import PairTensors, SequenceTensors, collate_pairs, collate_sequences, split_micro_batches
from learner.opponents import OpponentRing
from learner.ops import gather_token_logprobs, kl_k1, masked_sum, sequence_logprobs
from learner.pairing import get_pairing
from protocols import JudgedBatch, LearnerConfig, LearnerStepResult, RolloutBatch, RunConfig, SyncProbe

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
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
    """One learner rank holding the policy engine, the reference and the opponent ring."""

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
        self.algo_cfg = getattr(run, self.spec.config_section)
        self.pairing = get_pairing(self.algo_cfg.pairing) if self.spec.family == "pair" else None
        self.seed = run.seed
        self.version = 0
        torch.manual_seed(run.seed)
        distributed.init_distributed(rank, world_size, master_addr, master_port or distributed.free_port())
        self.device = distributed.device()
        torch_dtype = DTYPES[run.model.dtype]
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
        self.pad_token_id = _pad_token_id(model)
        self.lora = cfg.lora.rank > 0
        if self.lora:  # the reference is the frozen base under the adapters: no copy (learner/lora.py)
            snapshot_template = copy.deepcopy(model) if self.spec.needs_opponents else None
            model = lora.wrap(model, cfg.lora)
            self.reference: torch.nn.Module = lora.FrozenBase(model)
        else:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
            snapshot_template = self.reference
        self.opponents = None
        if self.spec.needs_opponents:
            self.snapshot_every = self.algo_cfg.snapshot_every
            self.opponents = OpponentRing(snapshot_template.to(self.device),
                                          self.spec.fixed_opponents or self.algo_cfg.num_opponents)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        )
        warmup = max(cfg.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        ds_config = deepspeed_config(cfg, run.model.dtype, world_size)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
        )
        if self.lora:
            lora.exclude_tied_frozen_from_checkpoints(self.engine)
        self.critic = None
        if self.spec.needs_values:
            from learner.critic import Critic

            self.critic = Critic(model_path, cfg, self.algo_cfg.critic_lr, ds_config, torch_dtype, self.device)
        logger.info(
            "learner rank %d: %s, ZeRO-%d, %.2fM parameters (%.2fM trained%s), algo %s",
            rank, model_path, cfg.zero_stage, sum(p.numel() for p in model.parameters()) / 1e6,
            lora.adapter_parameters(model) / 1e6, f", LoRA rank {cfg.lora.rank}" if self.lora else "", run.algo,
        )

    # ------------------------------------------------------------------ training
    def train_step(
        self, judged: Sequence[JudgedBatch], step: int, judge_weights: Mapping[str, float],
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
        if self.spec.family == "pair":
            metrics = self._train_pairs(judged, step, judge_weights, temperatures)
        else:
            from learner.sequence_step import train_sequences

            metrics = train_sequences(self, judged, step, judge_weights, temperatures)
        self.version += 1
        metrics["learner/lr"] = float(self.scheduler.get_last_lr()[0])
        metrics["learner/seconds"] = time.perf_counter() - start
        return LearnerStepResult(
            step=step, policy_version=self.version, trained_on_version=versions.pop(), metrics=metrics
        )

    def _train_pairs(self, judged: Sequence[JudgedBatch], step: int, judge_weights: Mapping[str, float],
                     temperatures: Mapping[str, float]) -> dict[str, float]:
        """One optimizer step on this rank's shard of the pairs built from `judged`."""
        if self.opponents is not None and step > 0 and step % self.snapshot_every == 0:
            self.opponents.push(self.state_dict(), self.version)
        pairs = [pair for batch in judged for pair in self.pairing(batch, judge_weights, temperatures)]
        groups = sum(len(batch.batch.groups()) for batch in judged)
        shard = pairs[self.rank :: self.world_size]
        self.engine.train()
        sums: dict[str, float] = {}
        chunks = split_micro_batches(shard, max(1, self.cfg.micro_batch_size // 2))  # a pair is two sequences
        for index, chunk in enumerate(chunks):
            tensors = collate_pairs(chunk, self.pad_token_id).to(self.device)
            loss, metrics = self._pair_loss(tensors)
            self.engine.set_gradient_accumulation_boundary(index == len(chunks) - 1)
            self.engine.backward(loss.sum() / len(shard))
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * len(chunk)
        if not shard:  # keep the collective in step with the other ranks: a zero gradient
            self.zero_backward()
        self.engine.step()
        metrics = {key: value / max(len(shard), 1) for key, value in sums.items()}
        metrics.update({
            "learner/pairs": float(len(pairs)),
            "learner/tied_groups": float(max(groups - len(pairs), 0)),
            "learner/grad_norm": self.grad_norm(),
        })
        return metrics

    def zero_backward(self) -> None:
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.backward(sum(p.sum() for p in self.engine.module.parameters()) * 0.0)

    def grad_norm(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def _pair_loss(self, t: PairTensors) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-pair loss [P] of the algorithm and metrics for one micro-batch of P pairs (2P sequences)."""
        n = t.input_ids.shape[0] // 2
        reduction = self.algo_cfg.logprob_reduction
        ref_tokens = ref = opp = None
        with torch.no_grad():
            if self.spec.needs_reference:
                ref_tokens = self.token_logprobs(self.reference, t)
                ref = sequence_logprobs(ref_tokens, t.response_mask, reduction)
            if self.opponents is not None:
                opp = torch.stack([sequence_logprobs(self.token_logprobs(m, t), t.response_mask, reduction)
                                   for m in self.opponents.models])
        policy_tokens = self.token_logprobs(self.engine, t)
        policy = sequence_logprobs(policy_tokens, t.response_mask, reduction)
        inputs = PairInputs(
            policy_chosen=policy[:n], policy_rejected=policy[n:],
            ref_chosen=None if ref is None else ref[:n], ref_rejected=None if ref is None else ref[n:],
            opponent_chosen=None if opp is None else opp[:, :n], opponent_rejected=None if opp is None else opp[:, n:],
            probability=t.probability.to(policy.dtype),
        )
        loss, metrics = self.spec.pair_loss(inputs, self.algo_cfg)
        metrics["learner/loss"] = float(loss.detach().mean())
        if ref_tokens is not None:
            # KL(pi || ref) on the sampled responses: k1 estimator summed over each sequence's tokens.
            kl = masked_sum(kl_k1(policy_tokens.detach(), ref_tokens), t.response_mask, dim=-1)
            metrics["learner/kl_to_reference"] = float(kl.mean())
        metrics["learner/response_tokens"] = float(t.response_mask.sum(-1).float().mean())
        return loss, metrics

    @staticmethod
    def token_logprobs(model: torch.nn.Module, t: PairTensors | SequenceTensors) -> torch.Tensor:
        """[2P, T-1] logprob of each next token (pad positions hold garbage; mask them)."""
        logits = model(input_ids=t.input_ids, attention_mask=t.attention_mask).logits
        return gather_token_logprobs(logits[:, :-1], t.input_ids[:, 1:])

    @torch.no_grad()
    def kl_to_reference(self, batches: Sequence[RolloutBatch]) -> float:
        """Mean over rollouts of sum_t (logp_pi - logp_ref) on their response tokens (k1)."""
        rollouts = [r for b in batches for r in b.rollouts]
        total = 0.0
        micro = max(1, self.cfg.micro_batch_size)
        self.engine.eval()
        with self._gathered():
            for lo in range(0, len(rollouts), micro):
                t = collate_sequences(rollouts[lo : lo + micro], self.pad_token_id).to(self.device)
                kl = kl_k1(self.token_logprobs(self.engine.module, t), self.token_logprobs(self.reference, t))
                total += float(masked_sum(kl, t.response_mask, dim=-1).sum())
        return total / max(len(rollouts), 1)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str) -> None:
        """Policy, optimizer, scheduler (DeepSpeed, every rank) and the opponent ring (rank 0)."""
        self.engine.save_checkpoint(  # with LoRA: the adapters and their optimizer state (the base is the start)
            directory, tag="learner", client_state={"version": self.version, "torch_rng": torch.get_rng_state()},
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
        rows = []
        with self._gathered():
            self.engine.module.eval()
            for seq in sequences:
                ids = torch.tensor([list(seq)], device=self.device)
                logits = self.engine.module(input_ids=ids).logits.float()
                rows.append(tuple(gather_token_logprobs(logits[:, :-1], ids[:, 1:])[0].tolist()))
        return SyncProbe(token_ids=tuple(tuple(s) for s in sequences), logprobs=tuple(rows))

    def save_pretrained(self, directory: str) -> None:
        """Write the policy as an HF checkpoint (rank 0 writes; collective under ZeRO-3)."""
        state = self.state_dict()
        if self.rank == 0:
            module: PreTrainedModel = self.engine.module.get_base_model() if self.lora else self.engine.module
            if self.lora:  # merged copies are separate tensors: drop tied aliases as save_pretrained would
                tied = getattr(module, "all_tied_weights_keys", None) or {}
                state = {k: v for k, v in state.items() if k not in tied}
            module.save_pretrained(directory, state_dict=state)  # with LoRA: merged, under the base names


def _pad_token_id(model: PreTrainedModel) -> int:
    pad = model.config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    if pad is None:
        raise ValueError("the model config has neither pad_token_id nor eos_token_id")
    return int(pad)
