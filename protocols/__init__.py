"""Typed contracts for everything that crosses a process boundary (imports pydantic and stdlib only)."""

from protocols.batches import (
    FROZEN,
    JudgedBatch,
    Judgement,
    PairPreference,
    Prompt,
    PromptBatch,
    Rollout,
    RolloutBatch,
)
from protocols.config import (
    BUILTIN_MODEL,
    CheckpointConfig,
    EvalConfig,
    LearnerConfig,
    MNPOConfig,
    ModelConfig,
    RolloutConfig,
    RunConfig,
    TrackingConfig,
)
from protocols.judges import JudgeManifest, JudgeSpec, RewardModelJudgeSpec, RuleJudgeSpec
from protocols.messages import EvalResult, LearnerStepResult, SyncProbe, SyncReport, WeightVersion, WinRate

__all__ = [
    "BUILTIN_MODEL", "CheckpointConfig", "FROZEN", "EvalConfig", "EvalResult", "JudgeManifest", "JudgeSpec", "JudgedBatch",
    "Judgement", "LearnerConfig", "LearnerStepResult", "MNPOConfig", "ModelConfig", "PairPreference",
    "Prompt", "PromptBatch", "RewardModelJudgeSpec", "Rollout", "RolloutBatch", "RolloutConfig",
    "RuleJudgeSpec", "RunConfig", "TrackingConfig", "SyncProbe", "SyncReport", "WeightVersion", "WinRate",
]
