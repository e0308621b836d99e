"""Control messages between the driver, the learner and the rollout workers.

Weights themselves travel as a Ray object (a name -> tensor mapping put once in the object store);
the typed `WeightVersion` that accompanies them says which version they are and carries a
`SyncProbe` so the receiver can prove it serves what the learner trained.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, model_validator

from protocols.batches import FROZEN


class SyncProbe(BaseModel):
    """Fixed token sequences and the learner's logprob of each token after the first.

    After loading new weights a rollout worker recomputes these logprobs with its engine; a gap
    larger than the tolerance means the served policy is not the trained one.
    """

    model_config = FROZEN
    token_ids: tuple[tuple[int, ...], ...] = Field(min_length=1)
    logprobs: tuple[tuple[float, ...], ...] = Field(
        description="logprobs[i][t] = log p(token_ids[i][t+1] | token_ids[i][:t+1]) under the learner."
    )

    @model_validator(mode="after")
    def _shapes(self) -> SyncProbe:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError("token_ids and logprobs must have one entry per probe sequence")
        for i, (ids, lps) in enumerate(zip(self.token_ids, self.logprobs)):
            if len(ids) < 2 or len(lps) != len(ids) - 1:
                raise ValueError(f"probe {i}: need >= 2 tokens and len(logprobs) == len(token_ids) - 1")
        return self


class WeightVersion(BaseModel):
    """Identity of one set of policy weights published by the learner."""

    model_config = FROZEN
    version: int = Field(ge=0, description="0 = the starting policy; +1 per learner update.")
    step: int = Field(ge=0, description="Driver step whose update produced these weights.")
    num_tensors: int = Field(ge=1)
    num_bytes: int = Field(ge=1)
    probe: SyncProbe
    export_seconds: float = Field(default=0.0, ge=0.0, description="Learner seconds to gather the weights and probe them.")


class SyncReport(BaseModel):
    """What a rollout worker reports after loading a WeightVersion."""

    model_config = FROZEN
    worker: str
    version: int = Field(ge=0)
    seconds: float = Field(ge=0.0)
    max_abs_logprob_diff: float = Field(ge=0.0, description="Largest probe gap between engine and learner.")


class LearnerStepResult(BaseModel):
    """Outcome of one learner update (from rank 0)."""

    model_config = FROZEN
    step: int = Field(ge=0)
    policy_version: int = Field(ge=1, description="Version of the weights after this update.")
    trained_on_version: int = Field(ge=0, description="policy_version of the rollouts trained on.")
    metrics: dict[str, float] = Field(description="Named scalars, keys prefixed 'learner/'.")

    @model_validator(mode="after")
    def _finite_prefixed(self) -> LearnerStepResult:
        if self.trained_on_version >= self.policy_version:
            raise ValueError(
                f"trained_on_version {self.trained_on_version} must be older than policy_version {self.policy_version}"
            )
        for key, value in self.metrics.items():
            if not key.startswith("learner/"):
                raise ValueError(f"metric {key!r} must be prefixed 'learner/'")
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not finite: {value}")
        return self


class WinRate(BaseModel):
    """Held-out win rate of one policy against another, with a 95% confidence interval."""

    model_config = FROZEN
    win_rate: float = Field(ge=0.0, le=1.0, description="Mean P(policy response > baseline response).")
    ci_low: float = Field(ge=0.0, le=1.0)
    ci_high: float = Field(ge=0.0, le=1.0)
    num_prompts: int = Field(ge=1)
    num_comparisons: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> WinRate:
        if not self.ci_low <= self.win_rate <= self.ci_high:
            raise ValueError(f"need ci_low <= win_rate <= ci_high, got {self.ci_low}, {self.win_rate}, {self.ci_high}")
        return self


class EvalResult(BaseModel):
    """Final (or periodic) evaluation on held-out prompts."""

    model_config = FROZEN
    step: int = Field(ge=0)
    judge: str
    vs_start: WinRate
    mean_reward: float | None = Field(default=None, description="Mean eval-judge reward of the policy, if scalar.")
    start_mean_reward: float | None = None
    mean_response_tokens: float = Field(ge=0.0)
    start_mean_response_tokens: float = Field(ge=0.0)
    kl_to_reference: float | None = Field(default=None, description="Mean summed k1 KL on the eval samples.")
    pool_worst: WinRate | None = Field(
        default=None, description="MNPO: the lowest win rate against any opponent snapshot in the pool."
    )
    pool_versions: tuple[int, ...] = Field(default=(), description="Policy versions of the pool's snapshots.")
