"""PPO for RLHF: clipped policy loss on GAE advantages, clipped value loss for the critic.

Source: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv 1707.06347, eq. 7
(L^CLIP), in the RLHF form of Ziegler et al. 2019 / TRL / OpenRLHF (docs/algorithms.md, PPO):

    ratio_t = exp(logp_new - logp_old)_t
    policy  = max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))        (per token)
    value   = 0.5 * max((V_t - R_t)^2, (V_clipped_t - R_t)^2),
              V_clipped = V_old + clamp(V - V_old, -value_clip, value_clip)      (per token)

The policy trains on `sequence_loss` (GAE advantages: learner/advantages.py `gae_estimator`), the
critic on `critic_loss` (`SPEC.critic_loss`, over `CriticInputs`). `clipped_policy_loss`,
`policy_metrics` and `clipped_sequence_loss` are shared with grpo.py and rloo.py.

Deliberate choices:
1. Reduction: per-token losses are averaged over each sequence's response tokens
   (ops.masked_mean, dim=-1), then over sequences (as GRPO's 1/|o_i|); TRL and
   OpenRLHF average all tokens of a batch instead, which weights long responses more.
2. The KL penalty lives in the reward (advantages.kl_penalised_rewards), not in this loss; with
   kl_coef = 0 there is none and no reference model or pass (`AlgorithmSpec.reads_reference`).
3. Positions outside the mask may hold garbage (NaN): inputs are zeroed there before any
   arithmetic, so neither the loss nor its gradient sees them.
4. old_logprobs, advantages and old values are constants: detached here.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, CriticInputs, SequenceInputs, needed
from learner.ops import kl_k3, masked_mean
from protocols.config import FROZEN


class PPOConfig(BaseModel):
    """PPO for RLHF with a critic and GAE."""

    model_config = FROZEN
    kl_coef: float = Field(default=0.05, ge=0.0, description="Per-token KL penalty (k1) in the reward.")
    clip_eps: float = Field(default=0.2, gt=0.0, description="PPO ratio clip epsilon.")
    value_clip: float = Field(default=0.2, gt=0.0, description="Value clip around the old values.")
    gamma: float = Field(default=1.0, ge=0.0, le=1.0, description="Discount.")
    gae_lambda: float = Field(default=0.95, ge=0.0, le=1.0, description="GAE lambda.")
    epochs: int = Field(default=2, ge=1, description="Passes over each step's rollouts.")
    minibatches: int = Field(default=2, ge=1, description="Optimizer steps per epoch (rollouts split evenly).")
    reward_clip: float = Field(default=10.0, gt=0.0, description="Judge rewards are clipped to +-reward_clip.")
    whiten_advantages: bool = Field(default=True, description="Normalise advantages over the step's tokens.")
    critic_lr: float = Field(default=1e-3, gt=0.0, description="Critic AdamW learning rate.")


def check_token_shapes(mask: Tensor, **tensors: Tensor) -> None:
    """ValueError unless the mask is [N, T] and every tensor has its shape."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [N, T], got shape {tuple(mask.shape)}")
    for name, x in tensors.items():
        if x.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(mask.shape)} (the mask's)")


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, Tensor]:
    """Per-token PPO-clip loss max(-A r, -A clip(r, 1 - eps, 1 + eps)) (eq. 7, negated).

    Args:
        logprobs: [N, T] policy logprobs of the sampled tokens (require grad).
        old_logprobs: [N, T] logprobs under the policy that sampled / before this step (no grad).
        advantages: [N, T] A_t (no grad); > 0 means the token should become more likely.
        mask: [N, T] bool response mask.
        clip_eps: eps > 0.

    Returns:
        per_token_loss: [N, T], 0 outside the mask.
        ratio: [N, T] exp(logprobs - old_logprobs) (detached), 1 outside the mask.
    """
    mask = mask.bool()
    check_token_shapes(mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    log_ratio = torch.where(mask, logprobs, 0.0) - torch.where(mask, old_logprobs.detach(), 0.0)
    ratio = torch.exp(log_ratio)
    adv = torch.where(mask, advantages.detach(), 0.0)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    per_token_loss = torch.where(mask, torch.maximum(unclipped, clipped), 0.0)
    return per_token_loss, ratio.detach()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float) -> Tensor:
    """Per-token clipped value loss 0.5 max((V - R)^2, (V_clipped - R)^2).

    Args:
        values: [N, T] critic outputs (require grad).
        old_values: [N, T] critic outputs before this step's updates (no grad).
        returns: [N, T] targets R_t (advantages.gae), no grad.
        mask: [N, T] bool response mask.
        clip: V_clipped = old_values + clamp(values - old_values, -clip, clip), clip > 0.

    Returns:
        [N, T] per-token loss, 0 outside the mask (the caller reduces, e.g. ops.masked_mean).
    """
    mask = mask.bool()
    check_token_shapes(mask, values=values, old_values=old_values, returns=returns)
    if not clip > 0:
        raise ValueError(f"value clip must be > 0, got {clip}")
    v = torch.where(mask, values, 0.0)
    old = torch.where(mask, old_values.detach(), 0.0)
    target = torch.where(mask, returns.detach(), 0.0)
    v_clipped = old + (v - old).clamp(-clip, clip)
    per_token = 0.5 * torch.maximum((v - target) ** 2, (v_clipped - target) ** 2)
    return torch.where(mask, per_token, 0.0)


def policy_metrics(
    algo: str,
    per_sequence_loss: Tensor,
    ratio: Tensor,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    **extra_token_means: Tensor,
) -> dict[str, float]:
    """Metrics keyed 'learner/<algo>/<name>', floats (one host transfer).

    loss: mean over sequences of the per-sequence loss; over all response tokens of the batch:
    clip_fraction (tokens whose clipped branch is active, i.e. zero gradient: A > 0 and
    r > 1 + eps, or A < 0 and r < 1 - eps), ratio (mean r), approx_kl (k3 estimate of
    KL(pi_old || pi) = r - 1 - log r), advantages (mean A); plus a masked mean of each extra [N, T].
    """
    mask = mask.bool()
    with torch.no_grad():
        new = torch.where(mask, logprobs.detach(), 0.0)
        old = torch.where(mask, old_logprobs, 0.0)
        adv = torch.where(mask, advantages, 0.0)
        active = ((adv > 0) & (ratio > 1.0 + clip_eps)) | ((adv < 0) & (ratio < 1.0 - clip_eps))
        named = {
            "loss": per_sequence_loss.detach().mean(),
            "clip_fraction": masked_mean(active.to(new.dtype), mask),
            "ratio": masked_mean(ratio, mask),
            "approx_kl": masked_mean(kl_k3(old, new), mask),
            "advantages": masked_mean(adv, mask),
            **{k: masked_mean(v.detach(), mask) for k, v in extra_token_means.items()},
        }
        values = torch.stack([v.to(new.dtype) for v in named.values()]).tolist()
    return {f"learner/{algo}/{k}": float(v) for k, v in zip(named, values)}


def clipped_sequence_loss(inputs: SequenceInputs, clip_eps: float, algo: str) -> tuple[Tensor, dict[str, float]]:
    """Per-sequence PPO-clip loss [N] (token mean per sequence) and `policy_metrics`; PPO and RLOO."""
    old = needed(inputs.old_logprobs, "SequenceInputs.old_logprobs", algo)
    advantages = needed(inputs.advantages, "SequenceInputs.advantages", algo)
    per_token, ratio = clipped_policy_loss(inputs.logprobs, old, advantages, inputs.mask, clip_eps)
    per_sequence = masked_mean(per_token, inputs.mask, dim=-1)
    return per_sequence, policy_metrics(algo, per_sequence, ratio, inputs.logprobs, old, advantages, inputs.mask, clip_eps)


def sequence_loss(inputs: SequenceInputs, cfg: PPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's policy entry point (GAE advantages, `cfg.clip_eps`); the critic's is `critic_loss`."""
    return clipped_sequence_loss(inputs, cfg.clip_eps, "ppo")


def critic_loss(inputs: CriticInputs, cfg: PPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The critic's entry point: `value_loss` (clip `cfg.value_clip`) averaged over each sequence's tokens."""
    old = needed(inputs.old_values, "the critic's old values", "ppo")
    returns = needed(inputs.returns, "GAE returns", "ppo")
    per_sequence = masked_mean(value_loss(inputs.values, old, returns, inputs.mask, cfg.value_clip), inputs.mask, dim=-1)
    return per_sequence, {"learner/ppo/value_loss": float(per_sequence.detach().mean())}


SPEC = AlgorithmSpec(
    name="ppo",
    description="PPO (Schulman et al. 2017) for RLHF: critic, GAE, KL penalty in the reward, clipped ratio.",
    family="sequence",
    config=PPOConfig,
    config_section="ppo",
    needs_reference=True,
    kl_weight=lambda cfg: cfg.kl_coef,  # 0: no reference model, no reference pass (AlgorithmSpec.reads_reference)
    needs_old_logprobs=True,
    critic_loss=critic_loss,
    sequence_loss=sequence_loss,
    advantage="gae",
    needs_rewards=True,
)
