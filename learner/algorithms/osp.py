"""OSP: Online Self-Preferring, trained with the soft-preference cross-entropy (SPCE) loss.

Source: Zhai et al. 2024, "Online Self-Preferring Language Models", arXiv 2405.14103: the policy
judges its own K samples per prompt, a ranked pairing gives pairs with a preference strength p,
and SPCE trains on them:

    Delta = beta * [h_pi(y_w, y_l) - h_ref(y_w, y_l)]          (the DPO margin, dpo.py)
    loss  = -[p log sigma(Delta) + (1 - p) log sigma(-Delta)]   (per pair)

the cross-entropy between p and the implicit reward model's Bradley-Terry probability; p = 1 is DPO.

OUR SPECIFICATION where the paper's template and pairing rule were not available to us
(docs/algorithms.md, OSP); none of it is claimed to be the paper's:
1. Self-judgement (rollout/judges/self_judge.py, deploy/judges/self.yaml): the current policy
   answers a fixed judge template; p(A > B) = P("A") / (P("A") + P("B")) at the verdict position,
   averaged over both orders: p = 0.5 * [p_AB(A) + 1 - p_BA(A)].
2. Ranked pairing (`OSPConfig.pairing = "ranked"`): samples sorted by mean self-judged win
   probability, rank 1 paired with rank K, 2 with K - 1, ...; each pair keeps its judged p
   (`PairInputs.probability`).
3. The loss above, with the configured sequence logprob reduction (default "sum").
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, PairingName, PairInputs, Reduction, pairing_field
from learner.algorithms.dpo import check_beta, check_pair_shapes, pair_metrics, preference_margin, reference_pair
from protocols.config import FROZEN


class OSPConfig(BaseModel):
    """Online Self-Preferring (Zhai et al. 2024): self-judged strengths, ranked pairs, SPCE loss."""

    model_config = FROZEN
    beta: float = Field(default=0.1, gt=0.0, description="KL strength beta of the SPCE margin.")
    logprob_reduction: Reduction = Field(default="sum", description="Sequence logprob reduction.")
    pairing: PairingName = pairing_field("ranked")


def spce_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    probability: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, float]]:
    """Per-pair soft-preference cross-entropy and metrics.

    Args:
        policy_chosen, policy_rejected: [B] sequence logprobs of y_w / y_l under pi (require grad).
        ref_chosen, ref_rejected: [B] same under pi_ref.
        probability: [B] judged strength p = P(y_w preferred over y_l) in [0, 1] (no grad).
        beta: KL strength > 0.

    Returns:
        per_pair_loss: [B] >= 0; minimised at sigma(Delta) = p.
        metrics: `dpo.pair_metrics` keyed 'learner/osp/...' plus probability (mean p).
    """
    check_beta(beta)
    check_pair_shapes(policy_chosen, probability=probability)
    if not bool(((probability >= 0) & (probability <= 1)).all()):  # NaN fails too
        raise ValueError(f"probability must be in [0, 1], got {probability.tolist()[:8]}")
    delta = beta * preference_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    p = probability.detach().to(delta.dtype)
    per_pair_loss = -(p * F.logsigmoid(delta) + (1.0 - p) * F.logsigmoid(-delta))
    return per_pair_loss, pair_metrics(
        "osp", per_pair_loss, beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected, probability=p
    )


def pair_loss(inputs: PairInputs, cfg: OSPConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: `spce_loss` with the pairing's strengths and `cfg.beta`."""
    return spce_loss(*reference_pair(inputs, "osp"), probability=inputs.probability, beta=cfg.beta)


SPEC = AlgorithmSpec(
    name="osp",
    description="Online Self-Preferring (Zhai et al. 2024): self-judged soft preferences, SPCE loss.",
    family="pair",
    config=OSPConfig,
    config_section="osp",
    needs_reference=True,
    pair_loss=pair_loss,
    needs_self_judge=True,
    default_judges="deploy/judges/self.yaml",
)
