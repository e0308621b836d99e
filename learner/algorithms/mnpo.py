"""TD-MNPO: Multiplayer Nash Preference Optimization, time-dependent opponents.

Source: Wu et al. 2025, "Multiplayer Nash Preference Optimization", arXiv 2509.23102, eq. 15
(multiplayer mirror-descent objective) and eq. 17 (TD variant: the opponents are the reference and
the last m frozen policy snapshots). Reference code: github.com/smiles724/MNPO (mnpo_trainer.py).

With h_X = logp_X(y_w) - logp_X(y_l) for a pair (y_w chosen, y_l rejected):

    logits = h_pi - r * h_ref - (1 - r) * sum_j lambda_j * h_{pi_{t-j}}
    loss   = (logits - 1 / (2 eta))^2                                   (per pair)

Deliberate choices (docs/algorithms.md, MNPO, lists the pitfalls of the reference code):
1. Sequence logprob reduction is a config choice (`MNPOConfig.logprob_reduction`, applied once by
   `ops.sequence_logprobs`). The reference code length-averages ("mean"), so its target
   1/(2 eta) is a per-token margin; with "sum" (the paper's logp) eta must be re-tuned.
2. Opponent weights are used as configured (normalised, `MNPOConfig.normalised_weights`); the
   reference code silently ignored configured history weights.
3. The reference code silently drops the opponent term when no snapshot exists yet; here an empty
   opponent set is an error unless r = 1 (the ring starts full of pi_0 = pi_ref).
4. Reference and opponent logprobs are detached here: only the policy receives gradient.
5. No beta: in the reference code beta only scales logged implicit rewards; we log raw margins.
6. No preference probability enters the loss; the pair order comes from the pairing rule
   (default best vs worst, as the reference code; `sampled` draws the order as the paper does).
7. The loss is returned per pair, unreduced (the learner takes the mean over the step's pairs).

Special cases: m = 1 is INPO with r = tau / eta; r = 1 is online IPO with beta = eta; r = 0
plays only against past snapshots.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, PairingName, PairInputs, Reduction, needed, pairing_field
from protocols.config import FROZEN

WEIGHT_TOLERANCE = 1e-4


class MNPOConfig(BaseModel):
    """TD-MNPO (Wu et al. 2025, arXiv 2509.23102, eq. 15/17)."""

    model_config = FROZEN
    eta: float = Field(default=0.5, gt=0.0, description="Mirror-descent step; the target margin is 1/(2 eta).")
    ratio: float = Field(default=1 / 3, ge=0.0, le=1.0, description="Reference share r of the opponent mix.")
    num_opponents: int = Field(default=2, ge=1, description="Past-policy snapshots m played against.")
    opponent_weights: tuple[float, ...] | None = Field(
        default=None, description="Weights w_j of pi_{t-1}..pi_{t-m} (normalised; None = uniform)."
    )
    snapshot_every: int = Field(default=10, ge=1, description="Steps between pushes of the policy into the ring.")
    logprob_reduction: Reduction = Field(
        default="mean", description="Sequence logprob: 'sum' over tokens or per-token 'mean' (reference code)."
    )
    pairing: PairingName = pairing_field("best_vs_worst")

    @model_validator(mode="after")
    def _weights(self) -> MNPOConfig:
        w = self.opponent_weights
        if w is not None:
            if len(w) != self.num_opponents:
                raise ValueError(f"opponent_weights has {len(w)} entries for num_opponents={self.num_opponents}")
            if any(x < 0 or not math.isfinite(x) for x in w):
                raise ValueError(f"opponent_weights must be finite and >= 0, got {w}")
        return self

    def normalised_weights(self) -> tuple[float, ...]:
        """lambda_j = w_j / sum(w) (uniform when unset or all zero)."""
        w = self.opponent_weights or (1.0,) * self.num_opponents
        total = sum(w)
        if total == 0:
            return (1.0 / self.num_opponents,) * self.num_opponents
        return tuple(x / total for x in w)


def mnpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    opponent_chosen: Tensor,
    opponent_rejected: Tensor,
    opponent_weights: Tensor,
    ratio: float,
    eta: float,
) -> tuple[Tensor, dict[str, float]]:
    """Per-pair TD-MNPO loss and metrics.

    Args:
        policy_chosen: [B] sequence logprob of the chosen response under pi (requires grad).
        policy_rejected: [B] same for the rejected response.
        ref_chosen: [B] sequence logprob of the chosen response under pi_ref.
        ref_rejected: [B] same for the rejected response.
        opponent_chosen: [M, B] row j = sequence logprob of the chosen response under pi_{t-1-j}
            (row 0 is the most recent snapshot). M may be 0 only when ratio == 1.
        opponent_rejected: [M, B] same for the rejected response.
        opponent_weights: [M] lambda_j >= 0 summing to 1 (row j weighs opponent row j).
        ratio: r in [0, 1], the reference's share of the opponent mix.
        eta: mirror-descent step > 0; the target margin is 1 / (2 eta).
        All sequence logprobs must use the same reduction (sum or mean) and share dtype/device.

    Returns:
        per_pair_loss: [B] (logits - 1/(2 eta))^2, differentiable w.r.t. the policy logprobs.
        metrics: floats keyed 'learner/mnpo/...', means over the B pairs:
            loss, logits, target, accuracy (fraction of logits > 0), policy_margin (h_pi),
            ref_margin (h_ref), opponent_margin (sum_j lambda_j h_j), margin_vs_ref
            (h_pi - h_ref), ref_accuracy (fraction h_pi > h_ref), policy_chosen_logprobs,
            policy_rejected_logprobs, opponent{j}_margin (h of opponent row j-1, j = 1..M).
    """
    _check_inputs(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, opponent_chosen, opponent_rejected, opponent_weights, ratio, eta
    )
    h_policy = policy_chosen - policy_rejected  # [B]
    h_ref = (ref_chosen - ref_rejected).detach()  # [B]
    h_opponents = (opponent_chosen - opponent_rejected).detach()  # [M, B]
    lambdas = opponent_weights.detach().to(h_opponents.dtype)
    h_mix = (lambdas[:, None] * h_opponents).sum(dim=0)  # [B]; zeros when M == 0
    logits = h_policy - ratio * h_ref - (1.0 - ratio) * h_mix
    target = 1.0 / (2.0 * eta)
    per_pair_loss = (logits - target) ** 2
    metrics = _metrics(per_pair_loss, logits, target, h_policy, h_ref, h_mix, h_opponents, policy_chosen, policy_rejected)
    return per_pair_loss, metrics


def _check_inputs(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    opponent_chosen: Tensor,
    opponent_rejected: Tensor,
    opponent_weights: Tensor,
    ratio: float,
    eta: float,
) -> None:
    """Loud shape/range errors; cheap next to the forward passes that produced the inputs."""
    b = policy_chosen.shape[0] if policy_chosen.dim() == 1 else -1
    if b < 1:
        raise ValueError(f"policy_chosen must be a non-empty [B] tensor, got shape {tuple(policy_chosen.shape)}")
    for name, x in (("policy_rejected", policy_rejected), ("ref_chosen", ref_chosen), ("ref_rejected", ref_rejected)):
        if x.shape != (b,):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected ({b},)")
    m = opponent_weights.shape[0] if opponent_weights.dim() == 1 else -1
    if m < 0:
        raise ValueError(f"opponent_weights must be [M], got shape {tuple(opponent_weights.shape)}")
    for name, x in (("opponent_chosen", opponent_chosen), ("opponent_rejected", opponent_rejected)):
        if x.shape != (m, b):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected ({m}, {b}) = (M, B)")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if not eta > 0.0:
        raise ValueError(f"eta must be > 0, got {eta}")
    if m == 0:
        if ratio != 1.0:
            raise ValueError(f"no opponents given but ratio={ratio} < 1 puts weight {1 - ratio} on them")
        return
    total = float(opponent_weights.sum())
    if bool((opponent_weights < 0).any()) or not abs(total - 1.0) <= WEIGHT_TOLERANCE:  # NaN fails too
        raise ValueError(f"opponent_weights must be >= 0 and sum to 1, got {opponent_weights.tolist()}")


def _metrics(
    per_pair_loss: Tensor,
    logits: Tensor,
    target: float,
    h_policy: Tensor,
    h_ref: Tensor,
    h_mix: Tensor,
    h_opponents: Tensor,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
) -> dict[str, float]:
    """Batch means as Python floats; one host transfer for all of them."""
    with torch.no_grad():
        named = {
            "loss": per_pair_loss.mean(),
            "logits": logits.mean(),
            "accuracy": (logits > 0).to(logits.dtype).mean(),
            "policy_margin": h_policy.mean(),
            "ref_margin": h_ref.mean(),
            "opponent_margin": h_mix.mean(),
            "margin_vs_ref": (h_policy - h_ref).mean(),
            "ref_accuracy": (h_policy > h_ref).to(logits.dtype).mean(),
            "policy_chosen_logprobs": policy_chosen.mean(),
            "policy_rejected_logprobs": policy_rejected.mean(),
        }
        for j in range(h_opponents.shape[0]):
            named[f"opponent{j + 1}_margin"] = h_opponents[j].mean()
        values = torch.stack([v.detach().to(logits.dtype) for v in named.values()]).tolist()
    metrics = {f"learner/mnpo/{k}": float(v) for k, v in zip(named, values)}
    metrics["learner/mnpo/target"] = target
    return metrics


def pair_loss(inputs: PairInputs, cfg: MNPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The learner's entry point: `mnpo_loss` with the configured opponent weights."""
    weights = torch.tensor(cfg.normalised_weights(), dtype=inputs.policy_chosen.dtype, device=inputs.policy_chosen.device)
    return mnpo_loss(
        inputs.policy_chosen,
        inputs.policy_rejected,
        needed(inputs.ref_chosen, "ref_chosen", "mnpo"),
        needed(inputs.ref_rejected, "ref_rejected", "mnpo"),
        needed(inputs.opponent_chosen, "opponent_chosen", "mnpo"),
        needed(inputs.opponent_rejected, "opponent_rejected", "mnpo"),
        weights,
        ratio=cfg.ratio,
        eta=cfg.eta,
    )


SPEC = AlgorithmSpec(
    name="mnpo",
    description="TD-MNPO (Wu et al. 2025): squared loss against the reference and past-policy snapshots.",
    family="pair",
    config=MNPOConfig,
    config_section="mnpo",
    needs_reference=True,
    needs_opponents=True,
    pair_loss=pair_loss,
)
