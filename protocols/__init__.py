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
    LoraConfig,
    ModelConfig,
    PlacementConfig,
    RolloutConfig,
    RunConfig,
    TaskConfig,
    TrackingConfig,
)
from protocols.judges import (
    HttpJudgeSpec,
    JudgeManifest,
    JudgeSpec,
    PairwiseJudgeSpec,
    PopulationJudgeSpec,
    RewardModelJudgeSpec,
    RuleJudgeSpec,
    SelfJudgeSpec,
)
from protocols.messages import EvalResult, LearnerStepResult, SyncProbe, SyncReport, WeightVersion, WinRate

__all__ = [
    "BUILTIN_MODEL", "CheckpointConfig",
    "FROZEN", "EvalConfig", "EvalResult", "JudgeManifest", "JudgeSpec", "JudgedBatch",
    "Judgement", "LearnerConfig", "LearnerStepResult", "LoraConfig", "ModelConfig", "PairPreference", "PlacementConfig",
    "Prompt", "PromptBatch", "RewardModelJudgeSpec", "Rollout", "RolloutBatch", "RolloutConfig",
    "RuleJudgeSpec", "RunConfig", "HttpJudgeSpec", "PairwiseJudgeSpec", "PopulationJudgeSpec", "SelfJudgeSpec",
    "TaskConfig", "TrackingConfig", "SyncProbe", "SyncReport", "WeightVersion", "WinRate",
]
