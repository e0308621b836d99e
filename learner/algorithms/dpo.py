"""Online DPO, and the preference margin shared by the DPO-style pair losses (IPO, rDPO, OSP).

Source: Rafailov et al. 2023, "Direct Preference Optimization", arXiv 2305.18290, eq. 7:

    Delta = beta * [(logp_pi(y_w) - logp_pi(y_l)) - (logp_ref(y_w) - logp_ref(y_l))]
    loss  = -log sigma(Delta)                                              (per pair)

Online: the pairs are on-policy samples of the current policy ordered by the judges (pairing rule
`DPOConfig.pairing`), not a fixed offline dataset (Guo et al. 2024, arXiv 2402.04792).

Shared with ipo.py, rdpo.py and osp.py: `preference_margin` (h_pi - h_ref, reference detached;
times beta is Delta), `pair_metrics` and `reference_pair` (unpacks `PairInputs`, loud when the
reference is missing).

Deliberate choices:
1. Sequence logprob reduction is a config choice (default "sum", the paper's log p(y)).
2. The reference logprobs are detached here, so only the policy gets gradient.
3. -log sigma is computed as -F.logsigmoid (stable for large |Delta|).
4. `PairInputs.probability` is ignored: DPO trains on hard labels (OSP uses it, see osp.py).
5. An empty response has sequence logprob 0, so a pair of two empty responses has Delta = 0
   and loss log 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, PairingName, PairInputs, Reduction, pairing_field
from protocols.config import FROZEN


class DPOConfig(BaseModel):
    """Online DPO, IPO and rDPO on pairs of on-policy samples."""

    model_config = FROZEN
    beta: float = Field(default=0.1, gt=0.0, description="KL strength beta; the margin is beta * (h_pi - h_ref).")
    logprob_reduction: Reduction = Field(
        default="sum", description="Sequence logprob: 'sum' over tokens (the papers) or per-token 'mean'."
    )
    flip_rate: float = Field(default=0.1, ge=0.0, lt=0.5, description="rDPO: assumed label flip rate eps < 0.5.")
    pairing: PairingName = pairing_field("best_vs_worst")


def check_pair_shapes(policy_chosen: Tensor, **others: Tensor) -> int:
    """B, after checking `policy_chosen` is a non-empty [B] tensor and every other tensor is [B]."""
    b = policy_chosen.shape[0] if policy_chosen.dim() == 1 else -1
    if b < 1:
        raise ValueError(f"policy_chosen must be a non-empty [B] tensor, got shape {tuple(policy_chosen.shape)}")
    for name, x in others.items():
        if x.shape != (b,):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected ({b},)")
    return b


def check_beta(beta: float) -> None:
    if not beta > 0.0:  # NaN fails too
        raise ValueError(f"beta must be > 0, got {beta}")


def preference_margin(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor) -> Tensor:
    """h_pi(y_w, y_l) - h_ref(y_w, y_l) per pair; DPO's Delta is beta times this.

    Args:
        policy_chosen, policy_rejected: [B] sequence logprobs under pi (require grad).
        ref_chosen, ref_rejected: [B] sequence logprobs under pi_ref (detached here).
        All four must use the same reduction (sum or mean).

    Returns:
        [B] log-ratio margin; > 0 means pi prefers y_w over y_l more than pi_ref does.
    """
    check_pair_shapes(policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    return (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected).detach()


def pair_metrics(
    algo: str,
    per_pair_loss: Tensor,
    beta: float,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    **extra: Tensor,
) -> dict[str, float]:
    """Batch means keyed 'learner/<algo>/<name>' as floats (one host transfer).

    loss; chosen_rewards = beta (logp_pi - logp_ref)(y_w); rejected_rewards likewise for y_l;
    margin = chosen_rewards - rejected_rewards (= Delta); accuracy = fraction of margin > 0;
    policy_chosen_logprobs, policy_rejected_logprobs; plus the mean of each `extra` tensor.
    """
    with torch.no_grad():
        chosen = beta * (policy_chosen - ref_chosen)
        rejected = beta * (policy_rejected - ref_rejected)
        margin = chosen - rejected
        named = {
            "loss": per_pair_loss,
            "margin": margin,
            "accuracy": (margin > 0).to(margin.dtype),
            "chosen_rewards": chosen,
            "rejected_rewards": rejected,
            "policy_chosen_logprobs": policy_chosen,
            "policy_rejected_logprobs": policy_rejected,
            **extra,
        }
        values = torch.stack([v.detach().to(margin.dtype).mean() for v in named.values()]).tolist()
    return {f"learner/{algo}/{k}": float(v) for k, v in zip(named, values)}


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> tuple[Tensor, dict[str, float]]:
    """Per-pair DPO loss -log sigma(beta (h_pi - h_ref)) and metrics.

    Args:
        policy_chosen, policy_rejected: [B] sequence logprobs of y_w / y_l under pi (require grad).
        ref_chosen, ref_rejected: [B] same under pi_ref.
        beta: KL strength > 0.

    Returns:
        per_pair_loss: [B] >= 0; log 2 when the margin is 0.
        metrics: `pair_metrics` keyed 'learner/dpo/...'.
    """
    check_beta(beta)
    delta = beta * preference_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    per_pair_loss = -F.logsigmoid(delta)
    return per_pair_loss, pair_metrics("dpo", per_pair_loss, beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)


def reference_pair(inputs: PairInputs, algo: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(policy_chosen, policy_rejected, ref_chosen, ref_rejected); ValueError if the reference is missing."""
    if inputs.ref_chosen is None or inputs.ref_rejected is None:
        raise ValueError(f"{algo} needs reference logprobs (ref_chosen, ref_rejected), got None")
    return inputs.policy_chosen, inputs.policy_rejected, inputs.ref_chosen, inputs.ref_rejected


def pair_loss(inputs: PairInputs, cfg: DPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: `dpo_loss` with `cfg.beta`."""
    return dpo_loss(*reference_pair(inputs, "dpo"), beta=cfg.beta)


SPEC = AlgorithmSpec(
    name="dpo",
    description="Online DPO (Rafailov et al. 2023): -log sigma(beta * margin) on judged on-policy pairs.",
    family="pair",
    config=DPOConfig,
    config_section="dpo",
    needs_reference=True,
    pair_loss=pair_loss,
)
