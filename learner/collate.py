"""Token arrays -> right-padded tensors: pairs (chosen and rejected in one forward pass) or rollouts.

Layout (B pairs, T = longest prompt + response):
    row i        (0 <= i < B): prompt_i + chosen_i
    row B + i                : prompt_i + rejected_i
so one forward pass covers both halves and `split_chosen_rejected` undoes it.

Alignment: a causal LM's logits at position t score the token at t + 1. With
    token_logprobs = gather_token_logprobs(logits[:, :-1], tensors.labels)   # [2B, T-1]
`tensors.response_mask[:, t]` is True exactly when `labels[:, t]` (= input_ids[:, t + 1]) is a
response token, so `labels[response_mask]` lists each row's response tokens in order: the same
order as `Rollout.logprobs` from the sampler. The mask is built from lengths, never from the pad
token id, so a pad id that is also a real token id (often EOS) is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from learner.pairing import Pair
from protocols import Rollout


@dataclass(frozen=True)
class PairTensors:
    """One collated micro-batch of B pairs.

    Attributes:
        input_ids: [2B, T] int64, chosen rows 0..B-1 then rejected rows B..2B-1, right-padded.
        attention_mask: [2B, T] int64, 1 on prompt and response tokens, 0 on padding.
        response_mask: [2B, T-1] bool, True at t iff input_ids[:, t + 1] is a response token.
        probability: [B] float32, P(chosen preferred over rejected) of each pair.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    probability: Tensor

    @property
    def labels(self) -> Tensor:
        """[2B, T-1] next-token targets: labels[:, t] = input_ids[:, t + 1]."""
        return self.input_ids[:, 1:]

    @property
    def num_pairs(self) -> int:
        """B."""
        return self.probability.shape[0]

    def to(self, device: torch.device | str) -> PairTensors:
        """A copy with every tensor moved to `device` (the caller's one device move)."""
        return PairTensors(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate_pairs(pairs: Sequence[Pair], pad_token_id: int) -> PairTensors:
    """Pad the chosen and rejected sequences of `pairs` into one [2B, T] batch (no truncation).

    Args:
        pairs: B >= 1 pairs; each prompt has >= 1 token, responses may be empty (all-False mask row).
        pad_token_id: id written into padded positions (masked everywhere downstream).

    Returns:
        PairTensors on the CPU; the caller moves them to its device.
    """
    if not pairs:
        raise ValueError("collate_pairs needs at least one pair")
    rows = [(p.prompt_token_ids, p.chosen_token_ids) for p in pairs]
    rows += [(p.prompt_token_ids, p.rejected_token_ids) for p in pairs]
    input_ids, attention_mask, response_mask = _pad_rows(rows, pad_token_id)
    return PairTensors(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        probability=torch.tensor([p.probability for p in pairs], dtype=torch.float32),
    )


@dataclass(frozen=True)
class SequenceTensors:
    """N single (prompt, response) sequences: input_ids / attention_mask [N, T], response_mask [N, T-1]."""

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor

    def to(self, device: torch.device | str) -> SequenceTensors:
        return SequenceTensors(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, rows: Tensor | Sequence[int]) -> SequenceTensors:
        """The given rows, trimmed to their longest sequence (less padding per forward pass)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        mask = self.attention_mask[rows]
        width = max(int(mask.sum(-1).max()), 2) if len(rows) else 2
        return SequenceTensors(
            input_ids=self.input_ids[rows, :width],
            attention_mask=mask[:, :width],
            response_mask=self.response_mask[rows, : width - 1],
        )


def collate_sequences(rollouts: Sequence[Rollout], pad_token_id: int) -> SequenceTensors:
    """Pad rollouts (prompt + response tokens) into one batch, aligned like `collate_pairs`."""
    if not rollouts:
        raise ValueError("collate_sequences needs at least one rollout")
    rows = [(r.prompt_token_ids, r.response_token_ids) for r in rollouts]
    return SequenceTensors(*_pad_rows(rows, pad_token_id))


def sampler_logprobs(rollouts: Sequence[Rollout], response_mask: Tensor) -> Tensor:
    """[N, T-1] each rollout's own per-token logprobs (`Rollout.logprobs`, from the sampler) at its
    response positions of `response_mask` (collate order), 0 elsewhere."""
    counts = response_mask.sum(-1).tolist()
    for i, (r, count) in enumerate(zip(rollouts, counts, strict=True)):
        if count != len(r.logprobs):
            raise ValueError(f"row {i}: {len(r.logprobs)} sampler logprobs for {count} response positions")
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    if sum(counts):
        # True positions of a boolean mask are read row by row, left to right: the rows' logprobs in order
        out[response_mask] = torch.from_numpy(np.concatenate([np.asarray(r.logprobs, dtype=np.float32) for r in rollouts]))
    return out


def _pad_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad (prompt, response) rows -> input_ids, attention_mask [N, T], response_mask [N, T-1].

    Rows are arrays (`Rollout` token fields) or any int sequences; each is copied into one
    preallocated array, so no Python object is made per token."""
    prompt_lengths = np.array([len(prompt) for prompt, _ in rows], dtype=np.int64)
    if not prompt_lengths.all():
        raise ValueError("a row has an empty prompt; the first response token needs a prompt token before it")
    used = prompt_lengths + np.array([len(response) for _, response in rows], dtype=np.int64)
    width = int(used.max())
    input_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    for i, (prompt, response) in enumerate(rows):
        input_ids[i, : prompt_lengths[i]] = prompt
        input_ids[i, prompt_lengths[i] : used[i]] = response
    positions = np.arange(width)
    attention_mask = (positions[None, :] < used[:, None]).astype(np.int64)
    # response tokens sit at positions [len(prompt), used); they are scored at t = position - 1
    t = positions[None, : width - 1]
    response_mask = (t >= prompt_lengths[:, None] - 1) & (t < used[:, None] - 1)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask), torch.from_numpy(response_mask)


def split_chosen_rejected(x: Tensor) -> tuple[Tensor, Tensor]:
    """[2B, ...] in collate order -> (chosen [B, ...], rejected [B, ...])."""
    if x.shape[0] % 2:
        raise ValueError(f"expected an even leading dimension (chosen then rejected), got {tuple(x.shape)}")
    half = x.shape[0] // 2
    return x[:half], x[half:]


def by_length(lengths: Sequence[int] | Tensor) -> list[int]:
    """Indices ordered by length, shortest first (ties in their given order): consecutive chunks of
    this order are micro-batches of similar lengths, each padded only to its own longest.

    The learner's steps split this order into micro-batches when `learner.length_buckets` is on;
    gradients are summed over the micro-batches, so the update is the same (up to float summation
    order) with less padding to compute."""
    values = lengths.tolist() if isinstance(lengths, Tensor) else list(lengths)
    return sorted(range(len(values)), key=values.__getitem__)


def pair_length(pair: Pair) -> int:
    """Tokens of a pair's longer row (prompt + the longer response): its width in `collate_pairs`."""
    return len(pair.prompt_token_ids) + max(len(pair.chosen_token_ids), len(pair.rejected_token_ids))


def split_micro_batches(pairs: Sequence[Pair], pairs_per_micro_batch: int) -> list[list[Pair]]:
    """Consecutive chunks of at most `pairs_per_micro_batch` pairs, order kept.

    A pair is never split, so a micro-batch holds 2 * pairs_per_micro_batch sequences; callers
    with a budget in sequences (`LearnerConfig.micro_batch_size`) pass max(1, budget // 2).
    """
    if pairs_per_micro_batch < 1:
        raise ValueError(f"pairs_per_micro_batch must be >= 1, got {pairs_per_micro_batch}")
    return [list(pairs[i : i + pairs_per_micro_batch]) for i in range(0, len(pairs), pairs_per_micro_batch)]
