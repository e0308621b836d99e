"""Online IPO: the squared-loss preference objective on judged on-policy pairs.

Source: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
Preferences", arXiv 2310.12036, eq. 17 (the sampled IPO loss), with tau = beta:

    h     = (logp_pi(y_w) - logp_pi(y_l)) - (logp_ref(y_w) - logp_ref(y_l))
    loss  = (h - 1 / (2 beta))^2                                          (per pair)

It reads the `dpo` config section (beta, logprob_reduction, pairing).

Deliberate choices:
1. The paper sums token logprobs ("sum", our default); TRL length-normalises them (our "mean"),
   which makes 1/(2 beta) a per-token margin: `logprob_reduction: mean` matches TRL.
2. The margin h is `dpo.preference_margin` (reference detached).
3. Online: pairs come from the current policy (MNPO with r = 1 is the same loss, eta = beta).
4. `PairInputs.probability` is ignored (hard labels).
"""

from __future__ import annotations

from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, PairInputs
from learner.algorithms.dpo import DPOConfig, check_beta, pair_metrics, preference_margin, reference_pair


def ipo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> tuple[Tensor, dict[str, float]]:
    """Per-pair IPO loss (h_pi - h_ref - 1/(2 beta))^2 and metrics.

    Args:
        policy_chosen, policy_rejected: [B] sequence logprobs of y_w / y_l under pi (require grad).
        ref_chosen, ref_rejected: [B] same under pi_ref.
        beta: regularisation tau > 0; the target log-ratio margin is 1 / (2 beta).

    Returns:
        per_pair_loss: [B] >= 0, zero when h_pi - h_ref equals the target.
        metrics: `dpo.pair_metrics` keyed 'learner/ipo/...' plus logits (mean h_pi - h_ref) and
            target (1 / (2 beta)).
    """
    check_beta(beta)
    logits = preference_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    target = 1.0 / (2.0 * beta)
    per_pair_loss = (logits - target) ** 2
    metrics = pair_metrics("ipo", per_pair_loss, beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected, logits=logits)
    metrics["learner/ipo/target"] = target
    return per_pair_loss, metrics


def pair_loss(inputs: PairInputs, cfg: DPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: `ipo_loss` with `cfg.beta`."""
    return ipo_loss(*reference_pair(inputs, "ipo"), beta=cfg.beta)


SPEC = AlgorithmSpec(
    name="ipo",
    description="Online IPO (Azar et al. 2023): squared loss pushing the log-ratio margin to 1/(2 beta).",
    family="pair",
    config=DPOConfig,
    config_section="dpo",
    needs_reference=True,
    pair_loss=pair_loss,
)
