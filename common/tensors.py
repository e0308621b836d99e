"""Torch rules shared by rollout/ and learner/: dtype names, token logprobs, the weight-sync probe.

The learner's probe and every weight receiver's check (rollout/sync.py) must compute the same
numbers, so the math is written once, here. Pure functions: no logging, no distributed calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # the run's `model.dtype` -> torch dtype


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
        raise ValueError(f"need logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and {tuple(labels.shape)}")
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


@torch.no_grad()
def probe_logprobs(model: torch.nn.Module, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
    """log p(seq[t+1] | seq[:t+1]) for every t under an HF causal LM, one unpadded sequence at a time,
    on float32 logits: the numbers of a weight-sync probe (protocols.SyncProbe)."""
    device = next(model.parameters()).device
    rows = []
    for seq in sequences:
        ids = torch.tensor([list(seq)], device=device)  # [1, T]
        logits = model(input_ids=ids).logits[:, :-1].float()  # [1, T-1, V]
        rows.append(gather_token_logprobs(logits, ids[:, 1:])[0].tolist())
    return rows
