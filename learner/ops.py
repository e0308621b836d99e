"""Shared tensor math of the learner: logprob gathering, masked reductions, KL estimators.

Every piece of math that more than one loss or metric needs lives here exactly once, with tests in
tests/learner/test_ops.py; `gather_token_logprobs` is common/tensors.py's (rollout/ needs it too),
re-exported. All functions are pure: no logging, no device moves, no distributed calls.

Conventions:
- B = batch (sequences), T = positions, V = vocabulary.
- A mask is a bool (or 0/1) tensor; True/1 marks a position that counts. Masked positions are
  selected away with `torch.where`, so NaN/inf values there never leak into a sum.
- logprobs are natural-log probabilities (<= 0), computed in float32 (float64 kept if given).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from common.tensors import gather_token_logprobs as gather_token_logprobs  # re-exported

Reduction = Literal["sum", "mean"]
REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `x` where `mask` is set, over `dim` (all dims when None).

    Args:
        x: [...] float tensor (e.g. [B, T] token logprobs).
        mask: bool or 0/1 tensor broadcastable to `x` (e.g. [B, T] response_mask).
        dim: dimension to reduce; None reduces everything to a scalar.

    Returns:
        `x` summed over `dim` with masked positions counting as 0 (all-masked rows give 0).
    """
    selected = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return selected.sum() if dim is None else selected.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is set, over `dim` (all dims when None).

    Same arguments as `masked_sum`. A row (or the whole tensor) with no set position gives 0, not
    NaN: such rows contribute nothing, which is what a loss or metric wants.
    """
    full_mask = torch.broadcast_to(mask.bool(), x.shape)
    count = full_mask.sum() if dim is None else full_mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def sequence_logprobs(token_logprobs: Tensor, response_mask: Tensor, reduction: Reduction) -> Tensor:
    """Per-sequence logprob of the response tokens.

    Args:
        token_logprobs: [B, T] logprob of each next token (see `gather_token_logprobs`).
        response_mask: [B, T] bool, True where the scored token is a response token.
        reduction: "sum" = log p(response) (the paper's definition); "mean" = per-token average
            (the MNPO reference code). An empty response gives 0 either way.

    Returns:
        [B] sequence logprobs.
    """
    if reduction == "sum":
        return masked_sum(token_logprobs, response_mask, dim=-1)
    if reduction == "mean":
        return masked_mean(token_logprobs, response_mask, dim=-1)
    raise ValueError(f"unknown logprob reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k1 estimator of KL(pi || pi_ref) on samples from pi: logp - logp_ref.

    Args:
        logprobs: [B, T] logprobs of the sampled tokens under the policy.
        ref_logprobs: [B, T] logprobs of the same tokens under the reference.

    Returns:
        [B, T] unbiased but high-variance estimate; can be negative per token. Mask before reducing.
    """
    return logprobs - ref_logprobs


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref) (Schulman 2020): exp(d) - d - 1, d = logp_ref - logp.

    Same arguments as `kl_k1`. Returns [B, T], always >= 0, unbiased, lower variance than k1.
    Uses expm1 so that d near 0 keeps its precision.
    """
    d = ref_logprobs - logprobs
    return torch.expm1(d) - d
