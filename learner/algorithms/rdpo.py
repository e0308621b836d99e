"""Robust DPO (rDPO): DPO de-biased for a known rate of flipped preference labels.

Source: Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy
Feedback", arXiv 2403.00409, eq. 9. With Delta the DPO margin (dpo.py) and eps the flip rate:

    loss = [-(1 - eps) log sigma(Delta) + eps log sigma(-Delta)] / (1 - 2 eps)     (per pair)

i.e. [(1 - eps) l(y_w, y_l) - eps l(y_l, y_w)] / (1 - 2 eps) with l the DPO loss: its expectation
under labels flipped with probability eps equals the DPO loss on the clean labels. eps = 0 is DPO.

It reads the `dpo` config section; eps = `DPOConfig.flip_rate` (< 0.5).

Deliberate choices:
1. The margin is `dpo.preference_margin` (reference detached).
2. eps is a fixed configured rate (the paper assumes it known), not estimated online.
3. The per-pair loss can be negative (eps log sigma(-Delta) is unbounded below as
   Delta -> -inf); only its expectation is a proper loss. We log it as is.
4. `PairInputs.probability` is ignored (hard labels, noisy at rate eps by assumption).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, PairInputs
from learner.algorithms.dpo import DPOConfig, check_beta, pair_metrics, preference_margin, reference_pair


def rdpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    flip_rate: float,
) -> tuple[Tensor, dict[str, float]]:
    """Per-pair rDPO loss and metrics.

    Args:
        policy_chosen, policy_rejected: [B] sequence logprobs of y_w / y_l under pi (require grad).
        ref_chosen, ref_rejected: [B] same under pi_ref.
        beta: KL strength > 0.
        flip_rate: eps in [0, 0.5), the assumed probability that a label is flipped.

    Returns:
        per_pair_loss: [B] (may be negative, see the module docstring).
        metrics: `dpo.pair_metrics` keyed 'learner/rdpo/...'.
    """
    check_beta(beta)
    if not 0.0 <= flip_rate < 0.5:
        raise ValueError(f"flip_rate must be in [0, 0.5), got {flip_rate}")
    delta = beta * preference_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    weighted = -(1.0 - flip_rate) * F.logsigmoid(delta) + flip_rate * F.logsigmoid(-delta)
    per_pair_loss = weighted / (1.0 - 2.0 * flip_rate)
    return per_pair_loss, pair_metrics("rdpo", per_pair_loss, beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)


def pair_loss(inputs: PairInputs, cfg: DPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: `rdpo_loss` with `cfg.beta` and eps = `cfg.flip_rate`."""
    return rdpo_loss(*reference_pair(inputs, "rdpo"), beta=cfg.beta, flip_rate=cfg.flip_rate)


SPEC = AlgorithmSpec(
    name="rdpo",
    description="Robust DPO (Chowdhury et al. 2024): DPO de-biased for a known label flip rate.",
    family="pair",
    config=DPOConfig,
    config_section="dpo",
    needs_reference=True,
    pair_loss=pair_loss,
)
