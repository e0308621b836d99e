"""Schema of the judge manifest (`deploy/judges/*.yaml`).

A manifest lists the judges that label training batches (`judges`, combined by `weight`) and,
optionally, the judge used for evaluation (`eval`, default: the task's ground truth). Each judge
kind has its own spec; `kind` selects it. Later kinds (pairwise, self, http, population) add a
spec class here and a module under rollout/judges/.

Example:
    judges:
      - name: ground-truth
        kind: rule
        function: rollout.tasks.wordlist:ground_truth
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from protocols.batches import FROZEN

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Common(BaseModel):
    model_config = FROZEN
    name: str = Field(pattern=NAME_PATTERN, description="Unique name; the actor is 'judge-<name>-<i>'.")
    weight: float = Field(default=1.0, gt=0.0, allow_inf_nan=False, description="Share of this judge in the combined reward.")
    replicas: int = Field(default=1, ge=1, description="Ray actors serving this judge.")
    num_cpus: float = Field(default=0.0, ge=0.0, description="Ray CPUs per replica.")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per replica.")
    temperature: float = Field(
        default=1.0, ge=0.0, allow_inf_nan=False,
        description="Bradley-Terry temperature turning rewards into P(a > b); 0 = hard comparison.",
    )


class RuleJudgeSpec(_Common):
    """A Python function `f(prompt: str, response: str) -> float` named by import path."""

    kind: Literal["rule"]
    function: str = Field(description="'package.module:function'")

    @field_validator("function")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is not of the form 'package.module:function'")
        return value


class RewardModelJudgeSpec(_Common):
    """An HF sequence-classification model scoring (prompt + response)."""

    kind: Literal["reward_model"]
    path: str = Field(description="Local checkpoint dir, or 'builtin:reward-model' for the task's RM.")
    batch_size: int = Field(default=64, ge=1, description="Sequences per forward pass.")


JudgeSpec = Annotated[Union[RuleJudgeSpec, RewardModelJudgeSpec], Field(discriminator="kind")]


class JudgeManifest(BaseModel):
    model_config = FROZEN
    judges: tuple[JudgeSpec, ...] = Field(min_length=1, description="Judges labelling training batches.")
    eval: JudgeSpec | None = Field(default=None, description="Evaluation judge (default: task ground truth).")

    @model_validator(mode="after")
    def _unique(self) -> JudgeManifest:
        names = [j.name for j in self.judges]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate judge names {dupes}")
        return self
