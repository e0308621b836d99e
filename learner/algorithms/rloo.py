"""RLOO: REINFORCE Leave-One-Out, here with the PPO-clip surrogate.

Source: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback in LLMs", arXiv 2402.14740, Section 3 (the RLOO estimator, after
Kool et al. 2019), with the sequence-level KL penalty in the reward:

    R_i = r_i - kl_coef * sum_t (logp_pi - logp_ref)_t
    A_i = R_i - (1 / (K - 1)) sum_{j != i} R_j                   (advantages.leave_one_out_estimator)
    per token: max(-A_i r_t, -A_i clip(r_t, 1 - eps, 1 + eps))   (ppo.clipped_policy_loss)

Deliberate deviations:
1. The paper's RLOO is plain REINFORCE (one update per batch). We use the PPO-clip surrogate (as
   TRL's RLOOTrainer) so that `epochs` / `minibatches` > 1 stay proximal; with one epoch and one
   minibatch the ratio is 1 and the gradient is REINFORCE's.
2. Reduction: token mean within each sequence, then over sequences (the paper sums token
   logprobs; this rescales each sequence's gradient by 1/|y|).
3. With kl_coef = 0 the reward is the judged one: no reference model, no reference pass
   (`AlgorithmSpec.reads_reference`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, SequenceInputs
from learner.algorithms.ppo import clipped_sequence_loss
from protocols.config import FROZEN


class RLOOConfig(BaseModel):
    """RLOO (Ahmadian et al. 2024): leave-one-out baseline, sequence KL penalty in the reward."""

    model_config = FROZEN
    kl_coef: float = Field(default=0.05, ge=0.0, description="Sequence KL (sum of k1) subtracted from the reward.")
    clip_eps: float = Field(default=0.2, gt=0.0, description="PPO ratio clip epsilon.")
    epochs: int = Field(default=1, ge=1, description="Passes over each step's rollouts.")
    minibatches: int = Field(default=1, ge=1, description="Optimizer steps per epoch.")


def sequence_loss(inputs: SequenceInputs, cfg: RLOOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: `ppo.clipped_sequence_loss` on leave-one-out advantages.

    Metrics: `ppo.policy_metrics` keyed 'learner/rloo/...'.
    """
    return clipped_sequence_loss(inputs, cfg.clip_eps, "rloo")


SPEC = AlgorithmSpec(
    name="rloo",
    description="RLOO (Ahmadian et al. 2024): leave-one-out baseline, KL in the reward, clipped ratio.",
    family="sequence",
    config=RLOOConfig,
    config_section="rloo",
    needs_reference=True,
    kl_weight=lambda cfg: cfg.kl_coef,  # 0: no reference model, no reference pass (AlgorithmSpec.reads_reference)
    needs_old_logprobs=True,
    sequence_loss=sequence_loss,
    advantage="leave_one_out",
    needs_rewards=True,
)
