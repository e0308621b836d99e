"""SPPO: Self-Play Preference Optimization, a square loss on each response's log-ratio to pi_t.

Source: Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment", arXiv
2405.00675, the SPPO objective (Section 4, Algorithm 1), with log Z approximated by eta / 2:

    loss(y) = (logp_pi(y) - logp_{pi_t}(y) - eta * (P(y > pi_t) - 1/2))^2       (per response)

P(y > pi_t) is the estimated probability that y beats a fresh sample of pi_t: the learner takes
the mean judged win probability of y against the other K - 1 samples of its prompt and passes it
as `SequenceInputs.targets` (`target = "win_probability"`).

Deliberate choices:
1. pi_t is the policy before this learner step (`SequenceInputs.old_logprobs`): every online
   step is one SPPO iteration; the paper's iteration is a full pass over a dataset sampled from
   pi_t. With several epochs per step, the first sees log-ratio 0.
2. Every sample is trained on (the paper's experiments train on the best and worst sample of each
   prompt). No reference model enters the loss.
3. Sequence logprob reduction is a config choice (default "sum", the paper's log pi(y)).
4. old_logprobs and the targets are constants: detached here.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, Reduction, SequenceInputs, needed
from learner.algorithms.ppo import check_token_shapes
from learner.ops import sequence_logprobs
from protocols.config import FROZEN


class SPPOConfig(BaseModel):
    """Self-Play Preference Optimization (Wu et al. 2024)."""

    model_config = FROZEN
    eta: float = Field(default=2.0, gt=0.0, description="Step size: logp_pi - logp_t is pushed to eta (P - 1/2).")
    logprob_reduction: Reduction = Field(default="sum", description="Sequence logprob reduction.")


def sppo_loss(
    policy_logprobs: Tensor, old_logprobs: Tensor, win_probability: Tensor, eta: float
) -> tuple[Tensor, dict[str, float]]:
    """Per-response SPPO loss (logp - logp_t - eta (P - 1/2))^2 and metrics.

    Args:
        policy_logprobs: [N] sequence logprob of each response under pi (requires grad).
        old_logprobs: [N] same under pi_t (no grad), same reduction.
        win_probability: [N] estimated P(y > pi_t) in [0, 1] (> 0.5: y beats pi_t on average).
        eta: step size > 0; the target log-ratio is eta (P - 1/2).

    Returns:
        per_sequence_loss: [N] >= 0.
        metrics: floats keyed 'learner/sppo/...', means over the N responses: loss, log_ratio
            (logp - logp_t), target (eta (P - 1/2)), win_probability.
    """
    n = policy_logprobs.shape[0] if policy_logprobs.dim() == 1 else -1
    if n < 1:
        raise ValueError(f"policy_logprobs must be a non-empty [N] tensor, got shape {tuple(policy_logprobs.shape)}")
    for name, x in (("old_logprobs", old_logprobs), ("win_probability", win_probability)):
        if x.shape != (n,):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected ({n},)")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    if not bool(((win_probability >= 0) & (win_probability <= 1)).all()):  # NaN fails too
        raise ValueError(f"win_probability must be in [0, 1], got {win_probability.tolist()[:8]}")
    log_ratio = policy_logprobs - old_logprobs.detach()
    target = eta * (win_probability.detach().to(log_ratio.dtype) - 0.5)
    per_sequence_loss = (log_ratio - target) ** 2
    with torch.no_grad():
        named = {
            "loss": per_sequence_loss,
            "log_ratio": log_ratio,
            "target": target,
            "win_probability": win_probability.to(log_ratio.dtype),
        }
        values = torch.stack([v.detach().mean() for v in named.values()]).tolist()
    return per_sequence_loss, {f"learner/sppo/{k}": float(v) for k, v in zip(named, values)}


def sequence_loss(inputs: SequenceInputs, cfg: SPPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: token logprobs -> sequence logprobs (configured reduction) -> `sppo_loss`."""
    old = needed(inputs.old_logprobs, "SequenceInputs.old_logprobs", "sppo")
    check_token_shapes(inputs.mask, logprobs=inputs.logprobs, old_logprobs=old)
    policy = sequence_logprobs(inputs.logprobs, inputs.mask, cfg.logprob_reduction)
    old_sequence = sequence_logprobs(old, inputs.mask, cfg.logprob_reduction)
    return sppo_loss(policy, old_sequence, inputs.targets, eta=cfg.eta)


SPEC = AlgorithmSpec(
    name="sppo",
    description="SPPO (Wu et al. 2024): square loss pushing log(pi / pi_t) to eta (P(y > pi_t) - 1/2).",
    family="sequence",
    config=SPPOConfig,
    config_section="sppo",
    needs_reference=False,
    needs_old_logprobs=True,
    sequence_loss=sequence_loss,
    target="win_probability",
)
