"""INPO: Iterative Nash Policy Optimization, TD-MNPO with a single opponent.

Source: Zhang et al. 2024, "Iterative Nash Policy Optimization", arXiv 2407.00617, eq. 11 (the
online IPO-style loss against the previous iterate), recovered by MNPO (Wu et al. 2025, arXiv
2509.23102, eq. 17) with m = 1:

    logits = h_pi - r * h_ref - (1 - r) * h_{pi_t}
    loss   = (logits - 1 / (2 eta))^2                 with r = tau / eta (paper's notation)

Implemented by calling `mnpo_loss` with one opponent of weight 1 (no duplicated math). It reads
the `mnpo` config section (eta, ratio, snapshot_every, logprob_reduction, pairing); `num_opponents`
and `opponent_weights` are ignored: the learner keeps exactly one snapshot (`fixed_opponents=1`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from learner.algorithms.base import AlgorithmSpec, PairInputs, needed
from learner.algorithms.mnpo import MNPOConfig, mnpo_loss


def pair_loss(inputs: PairInputs, cfg: MNPOConfig) -> tuple[Tensor, dict[str, float]]:
    """`mnpo_loss` against the single newest snapshot (row 0), weight 1."""
    if inputs.opponent_chosen is None or inputs.opponent_chosen.shape[0] != 1:
        shape = None if inputs.opponent_chosen is None else tuple(inputs.opponent_chosen.shape)
        raise ValueError(f"INPO plays exactly one opponent snapshot, got opponent logprobs of shape {shape}")
    weights = torch.ones(1, dtype=inputs.policy_chosen.dtype, device=inputs.policy_chosen.device)
    loss, metrics = mnpo_loss(
        inputs.policy_chosen,
        inputs.policy_rejected,
        needed(inputs.ref_chosen, "ref_chosen", "inpo"),
        needed(inputs.ref_rejected, "ref_rejected", "inpo"),
        needed(inputs.opponent_chosen, "opponent_chosen", "inpo"),
        needed(inputs.opponent_rejected, "opponent_rejected", "inpo"),
        weights,
        ratio=cfg.ratio,
        eta=cfg.eta,
    )
    return loss, {key.replace("learner/mnpo/", "learner/inpo/"): value for key, value in metrics.items()}


SPEC = AlgorithmSpec(
    name="inpo",
    description="INPO (Zhang et al. 2024): MNPO against one previous-iterate snapshot and the reference.",
    family="pair",
    config=MNPOConfig,
    config_section="mnpo",
    needs_reference=True,
    needs_opponents=True,
    pair_loss=pair_loss,
    fixed_opponents=1,
)
