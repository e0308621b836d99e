"""One training step of the pair family (DPO, IPO, rDPO, OSP, MNPO, INPO).

    pairs = pairing(judged)              # learner/pairing.py, named by the algorithm's config
    shard = pairs[rank::world_size]      # sorted by length with learner.length_buckets (less padding)
    for each micro-batch of pairs:       # learner/models.py `accumulate`
        no grad: reference / opponent sequence logprobs (only those the spec declares)
        policy sequence logprobs -> SPEC.pair_loss -> backward(loss.sum() / len(shard))
    optimizer step

Every rank builds the same pairs from the same judged batches (the pairing is deterministic) and
DeepSpeed averages the gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from learner.algorithms.base import AlgorithmSpec, PairInputs
from learner.collate import PairTensors, by_length, collate_pairs, pair_length, split_micro_batches
from learner.models import Models, accumulate
from learner.ops import kl_k1, masked_sum, sequence_logprobs
from learner.pairing import Pair, get_pairing
from protocols import JudgedBatch


def pair_step(
    models: Models,
    spec: AlgorithmSpec,
    cfg: Any,
    judged: Sequence[JudgedBatch],
    judge_weights: Mapping[str, float],
    temperatures: Mapping[str, float],
) -> dict[str, float]:
    """One optimizer step on this rank's shard of the pairs built from `judged`; returns metrics."""
    pairing = get_pairing(cfg.pairing)
    pairs = [pair for batch in judged for pair in pairing(batch, judge_weights, temperatures)]
    groups = sum(len(batch.batch.groups()) for batch in judged)
    shard = pairs[models.rank :: models.world_size]
    if models.length_buckets:  # the same pairs, in micro-batches of similar lengths
        shard = [shard[i] for i in by_length([pair_length(pair) for pair in shard])]
    chunks = split_micro_batches(shard, max(1, models.micro_batch_size // 2))  # a pair is two sequences

    def losses(chunk: list[Pair]) -> tuple[list[torch.Tensor], dict[str, float]]:
        loss, metrics = pair_loss(models, spec, cfg, collate_pairs(chunk, models.pad_token_id).to(models.device))
        return [loss], metrics

    metrics, (norm,) = accumulate([models.policy], chunks, len(shard), losses)
    metrics.update(
        {
            "learner/pairs": float(len(pairs)),
            "learner/tied_groups": float(max(groups - len(pairs), 0)),
            "learner/grad_norm": norm,
        }
    )
    return metrics


def pair_loss(models: Models, spec: AlgorithmSpec, cfg: Any, t: PairTensors) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-pair loss [P] and metrics of one micro-batch of P pairs (2P sequences)."""
    assert spec.pair_loss is not None  # the spec's __post_init__ guarantees it for the pair family
    n, reduction = t.num_pairs, cfg.logprob_reduction
    ref_tokens = ref = opp = None
    with torch.no_grad():
        if models.reference is not None:
            ref_tokens = models.token_logprobs(models.reference, t)
            ref = sequence_logprobs(ref_tokens, t.response_mask, reduction)
        if models.opponents is not None:
            opp = torch.stack(
                [sequence_logprobs(models.token_logprobs(m, t), t.response_mask, reduction) for m in models.opponents.models]
            )
    policy_tokens = models.token_logprobs(models.policy, t)
    policy = sequence_logprobs(policy_tokens, t.response_mask, reduction)
    inputs = PairInputs(
        policy_chosen=policy[:n],
        policy_rejected=policy[n:],
        ref_chosen=None if ref is None else ref[:n],
        ref_rejected=None if ref is None else ref[n:],
        opponent_chosen=None if opp is None else opp[:, :n],
        opponent_rejected=None if opp is None else opp[:, n:],
        probability=t.probability.to(policy.dtype),
    )
    loss, metrics = spec.pair_loss(inputs, cfg)
    if ref_tokens is not None:  # KL(pi || ref) on the sampled responses: k1 summed over each sequence
        kl = masked_sum(kl_k1(policy_tokens.detach(), ref_tokens), t.response_mask, dim=-1)
        metrics["learner/kl_to_reference"] = float(kl.mean())
    metrics["learner/response_tokens"] = float(t.response_mask.sum(-1).float().mean())
    return loss, metrics
