"""Shared tensor math of the learner: logprob gathering, masked reductions, KL estimators.

Where it sits: collate (padded tensors) -> forward pass (logits) -> **ops** -> algorithms/ (losses).
Every piece of math that more than one loss or metric needs lives here exactly once, with tests in
tests/learner/test_ops.py. All functions are pure: no logging, no device moves, no distributed calls.

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

Reduction = Literal["sum", "mean"]
REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def gather_token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] at every position.

    Args:
        logits: [B, T, V] any float dtype; position t scores the token at t + 1 when the caller
            passes `logits[:, :-1]` together with `labels = input_ids[:, 1:]`.
        labels: [B, T] int64 token ids in [0, V) (padding must still be a valid id; mask later).

    Returns:
        [B, T] float32 (float64 for float64 logits) logprobs, differentiable w.r.t. `logits`.

    Memory: computes `logit[label] - logsumexp(logits)` instead of a full log_softmax followed by
    a gather. Low-precision logits (bf16/fp16) are upcast one sequence at a time, so the float32
    temporaries are [T, V] rather than [B, T, V].
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"need logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.dtype in (torch.float32, torch.float64):
        return _gather_rows(logits, labels)
    rows = [_gather_rows(logits[b].float(), labels[b]) for b in range(logits.shape[0])]
    if not rows:
        return logits.new_zeros(labels.shape, dtype=torch.float32)
    return torch.stack(rows)


def _gather_rows(logits: Tensor, labels: Tensor) -> Tensor:
    """[..., V] float logits, [...] labels -> [...] logprobs."""
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


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
