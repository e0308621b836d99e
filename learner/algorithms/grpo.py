"""GRPO: Group Relative Policy Optimization (PPO-clip on group-normalised rewards, k3 KL in the loss).

Source: Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, eq. 3 (objective) and eq. 4 (the k3
KL estimator); outcome supervision, Section 4.1.2 (advantages.group_normalised):

    A_i      = (r_i - mean_group(r)) / (std_group(r) + std_eps)   (same for every token of y_i)
    per token: max(-A r_t, -A clip(r_t, 1 - eps, 1 + eps)) + kl_coef * k3_t,
               k3_t = exp(d) - d - 1, d = logp_ref - logp_pi

Deliberate choices:
1. The clipped term is `ppo.clipped_policy_loss` and the KL is `ops.kl_k3` (no duplicated math).
2. Reduction: token mean within each sequence (the paper's 1/|o_i|), then the mean over sequences.
3. With kl_coef = 0 the reference is not read: the learner builds no reference model and runs no
   reference pass (`SPEC.kl_weight`, decided by `AlgorithmSpec.reads_reference`), so ref_logprobs
   is None and `learner/kl_to_reference` is not reported.
4. Positions outside the mask may hold garbage: zeroed before the KL (and inside the clip loss).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from learner.advantages import optional_reference
from learner.algorithms.base import AlgorithmSpec, SequenceInputs, needed
from learner.algorithms.ppo import check_token_shapes, clipped_policy_loss, policy_metrics
from learner.ops import kl_k3, masked_mean
from protocols.config import FROZEN


class GRPOConfig(BaseModel):
    """GRPO (Shao et al. 2024): group-normalised advantages, PPO-clip, k3 KL in the loss."""

    model_config = FROZEN
    kl_coef: float = Field(default=0.04, ge=0.0, description="Weight of the k3 KL to the reference in the loss.")
    clip_eps: float = Field(default=0.2, gt=0.0, description="PPO ratio clip epsilon.")
    epochs: int = Field(default=1, ge=1, description="Passes over each step's rollouts.")
    minibatches: int = Field(default=1, ge=1, description="Optimizer steps per epoch.")
    std_eps: float = Field(default=1e-4, gt=0.0, description="A = (r - mean) / (std + std_eps) within a group.")


def grpo_token_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    kl_coef: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token GRPO loss (eq. 3, negated).

    Args:
        logprobs: [N, T] policy logprobs (require grad).
        old_logprobs: [N, T] before this step's updates (no grad).
        ref_logprobs: [N, T] under pi_ref (no grad); may be None only when kl_coef == 0.
        advantages: [N, T] group-normalised A, constant over each sequence.
        mask: [N, T] bool response mask.
        clip_eps: eps > 0; kl_coef: weight >= 0 of the k3 KL.

    Returns:
        per_token_loss: [N, T], 0 outside the mask.
        ratio: [N, T] detached, 1 outside the mask.
        kl: [N, T] k3 estimate of KL(pi || pi_ref) (detached; zeros when not computed).
    """
    mask = mask.bool()
    per_token, ratio = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)
    ref_logprobs = optional_reference(ref_logprobs, kl_coef, "grpo_token_loss")
    if ref_logprobs is None:
        return per_token, ratio, torch.zeros_like(ratio)
    check_token_shapes(mask, ref_logprobs=ref_logprobs)
    kl = kl_k3(torch.where(mask, logprobs, 0.0), torch.where(mask, ref_logprobs.detach(), 0.0))
    per_token = per_token + torch.where(mask, kl_coef * kl, 0.0)
    return per_token, ratio, kl.detach()


def sequence_loss(inputs: SequenceInputs, cfg: GRPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: per-sequence token mean of `grpo_token_loss`, and metrics.

    Metrics: `ppo.policy_metrics` keyed 'learner/grpo/...' plus kl (token mean of k3 to pi_ref).
    """
    old = needed(inputs.old_logprobs, "SequenceInputs.old_logprobs", "grpo")
    advantages = needed(inputs.advantages, "SequenceInputs.advantages", "grpo")
    per_token, ratio, kl = grpo_token_loss(
        inputs.logprobs, old, inputs.ref_logprobs, advantages, inputs.mask, cfg.clip_eps, cfg.kl_coef
    )
    per_sequence = masked_mean(per_token, inputs.mask, dim=-1)
    metrics = policy_metrics("grpo", per_sequence, ratio, inputs.logprobs, old, advantages, inputs.mask, cfg.clip_eps, kl=kl)
    return per_sequence, metrics


SPEC = AlgorithmSpec(
    name="grpo",
    description="GRPO (Shao et al. 2024): group-normalised rewards, PPO-clip, k3 KL to the reference in the loss.",
    family="sequence",
    config=GRPOConfig,
    config_section="grpo",
    needs_reference=True,
    kl_weight=lambda cfg: cfg.kl_coef,  # 0: no reference model, no reference pass (AlgorithmSpec.reads_reference)
    needs_old_logprobs=True,
    sequence_loss=sequence_loss,
    advantage="group",
    needs_rewards=True,
)
