"""The run configuration: one frozen section per component, composed into `RunConfig`.

Loaded from YAML (`deploy/configs/*.yaml`) with CLI overrides applied by the driver. Every field
has a description; `python -m driver --help` and docs/config.md are generated from the same text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# Config sections: frozen, no unknown fields, and no inf/nan anywhere (lr=inf used to pass `gt=0`
# and fail at the first step, after the actors had started).
FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

BUILTIN_MODEL = "builtin"
# Sampling temperatures a run accepts. vLLM treats anything below 0.01 as greedy (every sample of a
# prompt the same: no pairs to learn from), and above 10 a softmax over a real vocabulary is close
# to uniform noise whose logprobs overflow the learner's importance ratios.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 10.0
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _custom_only(resources: dict[str, float]) -> dict[str, float]:
    builtin = sorted(set(resources) & set(RAY_BUILTIN_RESOURCES))
    if builtin:
        raise ValueError(f"{', '.join(builtin)}: not a custom resource (CPUs and GPUs are num_cpus / num_gpus)")
    return resources


# Ray custom resources an actor asks for (`ray start --resources '{"rollout_node": 1}'` gives a node them)
CustomResources = Annotated[dict[str, Annotated[float, Field(gt=0.0)]], AfterValidator(_custom_only)]


class ModelConfig(BaseModel):
    """The policy checkpoint every component loads."""

    model_config = FROZEN
    path: str = Field(
        default=BUILTIN_MODEL,
        description="Local HF checkpoint dir or hub id; 'builtin' (tiny task model) or 'builtin:smollm2-135m-instruct'.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(default="float32", description="Weights dtype everywhere.")
    chat_template: Literal["auto", "on", "off"] = Field(
        default="auto", description="Prompts through the tokenizer's chat template: auto = when it has one."
    )


class TaskConfig(BaseModel):
    """Where prompts and the ground truth come from (rollout/tasks/, one module per task)."""

    model_config = FROZEN
    name: str = Field(default="wordlist", description="Task name (see --list-tasks): wordlist, instruct, arithmetic, jsonl.")
    path: str | None = Field(default=None, description="jsonl: the prompts file (one JSON object per line).")
    size: int = Field(default=2000, ge=10, description="Generated tasks: prompts generated before the split.")
    heldout_percent: int = Field(default=20, ge=1, le=90, description="Share of prompts held out for evaluation.")
    seed: int = Field(default=0, description="Seeds the task's prompt generator and split (not the run's seed).")


class RolloutConfig(BaseModel):
    """vLLM rollout workers: sampling, engine sizing, weight-sync checks, staleness."""

    model_config = FROZEN
    num_workers: int = Field(default=1, ge=1, description="vLLM rollout actors (data parallel).")
    prompts_per_step: int = Field(default=32, ge=1, description="Prompts sampled per training step.")
    samples_per_prompt: int = Field(default=4, ge=2, description="Responses per prompt (K), >= 2 for pairs.")
    temperature: float = Field(
        default=1.0,
        ge=MIN_TEMPERATURE,
        le=MAX_TEMPERATURE,
        description="Sampling temperature (1.0 = on-policy), in [0.01, 10].",
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1.0 = on-policy).")
    max_response_tokens: int = Field(default=24, ge=1, description="Response length cap in tokens.")
    max_model_len: int = Field(default=256, ge=16, description="vLLM context length.")
    kv_cache_gib: float = Field(default=1.0, gt=0.0, description="CPU KV cache size per worker (GiB).")
    gpu_memory_utilization: float = Field(default=0.5, gt=0.0, le=1.0, description="vLLM share of GPU memory.")
    num_cpus: float = Field(default=1.0, ge=0.0, description="Ray CPUs per rollout worker.")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per rollout worker.")
    resources: CustomResources = Field(
        default={},
        description="Ray custom resources per rollout worker, e.g. {rollout_node: 1}: pins the workers to the nodes "
        "started with them (`ray start --resources`; docs/deploy.md).",
    )
    sync_tolerance: float = Field(
        default=1e-3, gt=0.0, description="Max |engine - learner| probe logprob gap after a weight sync."
    )
    max_staleness: int = Field(default=0, ge=0, description="Batches sampled ahead of the learner (0 = strictly on-policy).")


class LoraConfig(BaseModel):
    """Low-rank adapters instead of full fine-tuning (off when rank is 0); see learner/lora.py."""

    model_config = FROZEN
    rank: int = Field(default=0, ge=0, description="Adapter rank r (0 = off: full fine-tuning).")
    alpha: float = Field(default=16.0, gt=0.0, description="Scale numerator: the update is (alpha / r) B A.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        min_length=1,
        description="Linear layers that get adapters (names of Llama-style modules).",
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
    micro_batch_size: int = Field(default=64, ge=2, description="Sequences per forward/backward pass (a pair is 2 sequences).")
    length_buckets: bool = Field(
        default=True,
        description="Fill each micro-batch with sequences (pairs) of similar length, so each is padded to less; "
        "false: micro-batches in sampling order. The update is the same sum either way.",
    )
    num_cpus: float = Field(default=1.0, ge=0.0, description="Ray CPUs per learner rank.")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per learner rank.")
    resources: CustomResources = Field(
        default={},
        description="Ray custom resources per learner rank, e.g. {learner_node: 1}: pins the ranks to the nodes "
        "started with them (`ray start --resources`; docs/deploy.md).",
    )
    master_port: int = Field(default=0, ge=0, le=65535, description="torch.distributed port (0 = pick a free one).")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters (learner/lora.py); off by default.")
    offpolicy_clip: float = Field(
        default=2.0,
        ge=0.0,
        description="Sequence family, samples of an older policy (rollout.max_staleness > 0): each token's advantage is "
        "weighted by min(pi / pi_sampler, offpolicy_clip), truncated importance sampling; 0 = no correction.",
    )
    weight_sync: Literal["object_store", "broadcast"] = Field(
        default="object_store",
        description="How each step's weights reach the rollout workers: object_store (rank 0 puts them once, every "
        "worker reads them; the learner goes on at once) or broadcast (a collective from rank 0 in buckets: NCCL when "
        "the learner and the rollout workers have GPUs, else gloo; the learner waits for every worker to take part). "
        "Self judges and recovery always use the object store.",
    )
    weight_bucket_mb: int = Field(default=64, ge=1, description="weight_sync broadcast: MiB per bucket.")

    @model_validator(mode="after")
    def _betas(self) -> LearnerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")
        return self


class EvalConfig(BaseModel):
    """Held-out evaluation against the starting policy (and, for MNPO, the opponent pool)."""

    model_config = FROZEN
    every: int = Field(default=100, ge=0, description="Steps between evaluations (0 = only the final one).")
    num_prompts: int = Field(default=128, ge=1, description="Held-out prompts (capped at what the task has).")
    samples_per_prompt: int = Field(default=4, ge=1, description="Responses per held-out prompt and policy.")
    temperature: float = Field(
        default=1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, description="Sampling temperature for evaluation, in [0.01, 10]."
    )


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


class PlacementConfig(BaseModel):
    """How the rollout workers and learner ranks are placed on a Ray cluster (docs/deploy.md)."""

    model_config = FROZEN
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="Ray placement-group strategy of the workers' and ranks' bundles: PACK (as few nodes as fit), "
        "SPREAD (as many as possible), STRICT_PACK (one node or fail), STRICT_SPREAD (one per node or fail).",
    )
    timeout_s: float = Field(
        default=120.0, gt=0.0, description="Seconds to wait for the cluster to place them before the run fails."
    )


class SecurityConfig(BaseModel):
    """What a judge manifest may reach, and where a local Ray cluster listens (docs/security.md).

    The allow-lists are part of the run's config, not of the manifest, so that whoever may edit the
    manifest mid-run cannot widen them; they are checked at start and on every manifest swap.
    """

    model_config = FROZEN
    allowed_modules: tuple[str, ...] | None = Field(
        default=None,
        description="Modules rule judges may import their function from (a package allows its submodules), e.g. "
        "[rollout.tasks]; none: any module on the path.",
    )
    allowed_http_hosts: tuple[str, ...] | None = Field(
        default=None,
        description="Hosts http judges may send prompts and their API key to ('host' or 'host:port' of base_url), "
        "e.g. [127.0.0.1:8000, api.example.com]; none: any.",
    )
    local_cluster_bind: Literal["loopback", "network"] = Field(
        default="loopback",
        description="A Ray cluster the driver starts itself: 'loopback' binds all its services (the unauthenticated "
        "Prometheus metrics endpoint included) to 127.0.0.1; 'network' is Ray's default, the node's address "
        "(the metrics endpoint on every interface), for scraping from another machine.",
    )


class ReliabilityConfig(BaseModel):
    """What a run does when an actor dies or a call does not return (docs/reliability.md)."""

    model_config = FROZEN
    max_restarts: int = Field(
        default=3,
        ge=0,
        description="Actor deaths a run recovers from before it stops: a dead rollout worker or judge replica is "
        "replaced and its lost work re-issued with the same seeds; a dead learner rank restores every rank from the "
        "last checkpoint (or the start) and the steps since are redone. 0 = the first death stops the run.",
    )
    sample_timeout_s: float = Field(default=900.0, gt=0.0, description="Seconds the driver waits for a step's samples.")
    judge_timeout_s: float = Field(
        default=900.0,
        gt=0.0,
        description="Seconds the driver waits for a judge's verdicts on a batch; a judge that overruns is a failure "
        "under its manifest's on_failure (fail: the run stops naming it; skip: the batch is unjudged by it and the "
        "replica is replaced).",
    )
    learn_timeout_s: float = Field(default=1800.0, gt=0.0, description="Seconds the driver waits for a learner step.")
    sync_timeout_s: float = Field(default=600.0, gt=0.0, description="Seconds the driver waits for a weight sync.")
    eval_timeout_s: float = Field(default=1800.0, gt=0.0, description="Seconds the driver waits for an evaluation.")
    checkpoint_timeout_s: float = Field(
        default=1800.0, gt=0.0, description="Seconds the driver waits for a checkpoint (or the final policy) to be saved."
    )
    start_timeout_s: float = Field(
        default=1800.0, gt=0.0, description="Seconds the driver waits for the actors to start and load their models."
    )
    kill_schedule: tuple[str, ...] = Field(
        default=(),
        description="Fault injection, for tests and bench/soak.py: 'STEP:ACTOR' entries (ACTOR rollout-I, "
        "learner-R, judge-NAME-I or eval-judge-NAME-I); the driver SIGKILLs that actor's process as step STEP "
        "begins, once per entry.",
    )

    @field_validator("kill_schedule")
    @classmethod
    def _kill_entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            step, _, actor = entry.partition(":")
            if not step.isdigit() or not actor:
                raise ValueError(f"kill_schedule entry {entry!r} is not 'STEP:ACTOR', e.g. '3:rollout-0'")
        return entries


class RunConfig(BaseModel):
    """Everything a run needs; saved resolved as OUTPUT/config.yaml.

    Besides the sections below, a run config holds the section of its algorithm's hyperparameters
    under the name the algorithm reads (`mnpo:`, `dpo:`, ...). Those sections are defined beside
    their losses (learner/algorithms/) and checked there (`learner.algorithms.algorithm_config`,
    which the driver calls before anything starts): protocols/ stays free of the learner. Here they
    are only required to be mappings, reachable through `sections`.
    """

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)
    algo: str = Field(default="mnpo", description="Algorithm name (see --list-algos).")
    steps: int = Field(default=300, ge=1, description="Training steps (sample -> judge -> learn -> sync).")
    seed: int = Field(default=0, description="Seeds prompts, sampling and initialisation.")
    judges: str | None = Field(
        default=None, description="Judge manifest (YAML); default: the task's ground truth (or the algorithm's own manifest)."
    )
    output: str | None = Field(default=None, description="Run directory (default runs/<algo>-<time>).")
    storage: str | None = Field(
        default=None,
        description="Where checkpoints, records and the final policy are kept for a run that spans machines: a "
        "directory every node sees or an fsspec URI (file:///shared/runs/x; s3://bucket/runs/x with s3fs). Learner "
        "ranks write checkpoints there themselves; the run directory is copied there at every checkpoint and at the "
        "end; `--resume` reads it back. Default: none (everything in the run directory; ranks on other nodes send "
        "their files to the driver).",
    )
    address: str | None = Field(default=None, description="Ray cluster to join (default: RAY_ADDRESS or a new local one).")
    log_every: int = Field(default=1, ge=1, description="Steps between progress log lines.")
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    tracking: TrackingConfig = TrackingConfig()
    placement: PlacementConfig = PlacementConfig()
    security: SecurityConfig = SecurityConfig()
    reliability: ReliabilityConfig = ReliabilityConfig()

    @model_validator(mode="before")
    @classmethod
    def _section_models_as_mappings(cls, data: Any) -> Any:
        """An algorithm section may be given as its config model (`mnpo=MNPOConfig(eta=1.0)`)."""
        if isinstance(data, dict):
            return {
                k: v.model_dump(mode="json") if isinstance(v, BaseModel) and k not in cls.model_fields else v
                for k, v in data.items()
            }
        return data

    @model_validator(mode="after")
    def _sections_are_mappings(self) -> RunConfig:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(
                    f"unknown field {name!r} (got {value!r}); an algorithm's section is a mapping, e.g. 'mnpo: {{eta: 0.5}}'"
                )
        return self

    @property
    def sections(self) -> dict[str, dict[str, Any]]:
        """The algorithm sections this config holds, by name (validated by the algorithm)."""
        return dict(self.model_extra or {})
