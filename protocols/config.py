"""The run configuration: one frozen section per component, composed into `RunConfig`.

Loaded from YAML (`deploy/configs/*.yaml`) with CLI overrides applied by the driver. Every field
has a description; `python -m driver --help` and docs/config.md are generated from the same text.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from protocols.batches import FROZEN

BUILTIN_MODEL = "builtin"


class ModelConfig(BaseModel):
    """The policy checkpoint every component loads."""

    model_config = FROZEN
    path: str = Field(
        default=BUILTIN_MODEL,
        description="Local HF checkpoint dir or hub id; 'builtin' builds/caches the tiny task model.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(default="float32", description="Weights dtype everywhere.")


class RolloutConfig(BaseModel):
    """vLLM rollout workers: sampling, engine sizing, weight-sync checks, staleness."""

    model_config = FROZEN
    num_workers: int = Field(default=1, ge=1, description="vLLM rollout actors (data parallel).")
    prompts_per_step: int = Field(default=32, ge=1, description="Prompts sampled per training step.")
    samples_per_prompt: int = Field(default=4, ge=2, description="Responses per prompt (K), >= 2 for pairs.")
    temperature: float = Field(default=1.0, gt=0.0, description="Sampling temperature (1.0 = on-policy).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1.0 = on-policy).")
    max_response_tokens: int = Field(default=24, ge=1, description="Response length cap in tokens.")
    max_model_len: int = Field(default=256, ge=16, description="vLLM context length.")
    kv_cache_gib: float = Field(default=1.0, gt=0.0, description="CPU KV cache size per worker (GiB).")
    gpu_memory_utilization: float = Field(default=0.5, gt=0.0, le=1.0, description="vLLM share of GPU memory.")
    num_cpus: float = Field(default=1.0, ge=0.0, description="Ray CPUs per rollout worker.")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per rollout worker.")
    sync_tolerance: float = Field(
        default=1e-3, gt=0.0, description="Max |engine - learner| probe logprob gap after a weight sync."
    )
    max_staleness: int = Field(
        default=0, ge=0, description="Batches sampled ahead of the learner (0 = strictly on-policy)."
    )


class LearnerConfig(BaseModel):
    """The DeepSpeed learner: ranks, ZeRO stage, optimizer, micro-batching."""

    model_config = FROZEN
    num_workers: int = Field(default=1, ge=1, description="DeepSpeed ranks (Ray actors).")
    zero_stage: Literal[2, 3] = Field(default=2, description="DeepSpeed ZeRO stage.")
    lr: float = Field(default=2e-4, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas, each in [0, 1).")
    warmup_steps: int = Field(default=5, ge=0, description="Linear learning-rate warmup steps.")
    grad_clip: float = Field(default=1.0, gt=0.0, description="Global gradient-norm clip.")
    micro_batch_size: int = Field(
        default=64, ge=2, description="Sequences per forward/backward pass (a pair is 2 sequences)."
    )
    num_cpus: float = Field(default=1.0, ge=0.0, description="Ray CPUs per learner rank.")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per learner rank.")
    master_port: int = Field(default=0, ge=0, le=65535, description="torch.distributed port (0 = pick a free one).")

    @model_validator(mode="after")
    def _betas(self) -> LearnerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")
        return self


class MNPOConfig(BaseModel):
    """TD-MNPO (Wu et al. 2025, arXiv 2509.23102, eq. 15/17); see learner/algorithms/mnpo.py."""

    model_config = FROZEN
    eta: float = Field(default=0.5, gt=0.0, description="Mirror-descent step; the target margin is 1/(2 eta).")
    ratio: float = Field(default=1 / 3, ge=0.0, le=1.0, description="Reference share r of the opponent mix.")
    num_opponents: int = Field(default=2, ge=1, description="Past-policy snapshots m played against.")
    opponent_weights: tuple[float, ...] | None = Field(
        default=None, description="Weights w_j of pi_{t-1}..pi_{t-m} (normalised; None = uniform)."
    )
    snapshot_every: int = Field(default=10, ge=1, description="Steps between pushes of the policy into the ring.")
    logprob_reduction: Literal["sum", "mean"] = Field(
        default="mean", description="Sequence logprob: 'sum' over tokens or per-token 'mean' (reference code)."
    )

    @model_validator(mode="after")
    def _weights(self) -> MNPOConfig:
        w = self.opponent_weights
        if w is not None:
            if len(w) != self.num_opponents:
                raise ValueError(f"opponent_weights has {len(w)} entries for num_opponents={self.num_opponents}")
            if any(x < 0 or not math.isfinite(x) for x in w):
                raise ValueError(f"opponent_weights must be finite and >= 0, got {w}")
        return self

    def normalised_weights(self) -> tuple[float, ...]:
        """lambda_j = w_j / sum(w) (uniform when unset or all zero)."""
        w = self.opponent_weights or (1.0,) * self.num_opponents
        total = sum(w)
        if total == 0:
            return (1.0 / self.num_opponents,) * self.num_opponents
        return tuple(x / total for x in w)


class EvalConfig(BaseModel):
    """Held-out evaluation against the starting policy (and, for MNPO, the opponent pool)."""

    model_config = FROZEN
    every: int = Field(default=100, ge=0, description="Steps between evaluations (0 = only the final one).")
    num_prompts: int = Field(default=128, ge=1, description="Held-out prompts (capped at what the task has).")
    samples_per_prompt: int = Field(default=4, ge=1, description="Responses per held-out prompt and policy.")
    temperature: float = Field(default=1.0, gt=0.0, description="Sampling temperature for evaluation.")


class CheckpointConfig(BaseModel):
    """Atomic checkpoints of everything a run needs to continue (`python -m driver --resume DIR`)."""

    model_config = FROZEN
    every: int = Field(default=50, ge=0, description="Steps between checkpoints (0 = none).")
    keep_last: int = Field(default=2, ge=1, description="Checkpoints kept; older ones are deleted.")


class TrackingConfig(BaseModel):
    """Where metrics go besides OUTPUT/metrics.jsonl and the Ray metrics endpoint."""

    model_config = FROZEN
    tensorboard: bool = Field(default=True, description="Write TensorBoard event files to OUTPUT/tensorboard.")
    wandb_project: str | None = Field(default=None, description="Log to this W&B project (needs `wandb`).")
    plots: bool = Field(default=True, description="Write PNG learning curves to OUTPUT/plots at the end.")


class RunConfig(BaseModel):
    """Everything a run needs; saved resolved as OUTPUT/config.yaml."""

    model_config = FROZEN
    algo: str = Field(default="mnpo", description="Algorithm name (see --list-algos).")
    steps: int = Field(default=300, ge=1, description="Training steps (sample -> judge -> learn -> sync).")
    seed: int = Field(default=0, description="Seeds prompts, sampling and initialisation.")
    judges: str = Field(default="deploy/judges/default.yaml", description="Judge manifest (YAML).")
    output: str | None = Field(default=None, description="Run directory (default runs/<algo>-<time>).")
    address: str | None = Field(default=None, description="Ray cluster to join (default: RAY_ADDRESS or a new local one).")
    log_every: int = Field(default=1, ge=1, description="Steps between progress log lines.")
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    mnpo: MNPOConfig = MNPOConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    tracking: TrackingConfig = TrackingConfig()
