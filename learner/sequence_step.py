"""One training step of the sequence family (PPO, GRPO, RLOO, SPPO).

    scores   = combined judged reward per sample (or its win probability, SPPO)
    shard    = this rank's prompt groups (whole groups: group baselines need every sample)
    no grad  : old logprobs, reference logprobs and critic values (only those declared; the old
               logprobs are skipped when the step makes one update and the estimator does not
               read them (it reads them only for its KL term: not at a zero KL weight): the update's
               own logprobs, detached, are then exactly the old ones; the
               reference ones when the config's KL weight is 0: `Models.reference` is then None,
               per `AlgorithmSpec.reads_reference`, and `learner/kl_to_reference` is not reported)
    advantage: ESTIMATORS[SPEC.advantage] (learner/advantages.py); rows sampled by an older policy
               version (rollout.max_staleness > 0) have each token's advantage weighted by the
               truncated importance ratio min(pi / pi_sampler, learner.offpolicy_clip), pi from
               the no-grad pass or, without one, from the update's own detached logprobs
    for epoch in epochs, minibatch in minibatches:   (rows shuffled per epoch, seeded by step)
        per micro-batch: SPEC.sequence_loss (and SPEC.critic_loss) -> backward(loss.sum() / rows)
                         (micro-batches of similar lengths with learner.length_buckets, each padded
                         only to its own longest; the no-grad pass too)
        optimizer step of the policy (and critic) engines      (learner/models.py `accumulate`)

Every rank runs the same number of optimizer steps (a rank with no rows in a minibatch backs a
zero gradient), so the ZeRO collectives stay in step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from learner import distributed
from learner.advantages import ESTIMATORS, AdvantageInputs, truncated_importance_weights
from learner.algorithms.base import AlgorithmSpec, CriticInputs, SequenceInputs
from learner.collate import SequenceTensors, by_length, collate_sequences, sampler_logprobs
from learner.models import Models, accumulate, add_weighted
from learner.ops import kl_k1, masked_sum
from learner.pairing import combined_rewards, win_probabilities
from protocols import JudgedBatch


def sequence_step(
    models: Models,
    spec: AlgorithmSpec,
    cfg: Any,
    judged: Sequence[JudgedBatch],
    step: int,
    judge_weights: Mapping[str, float],
    temperatures: Mapping[str, float],
    version: int | None = None,
) -> dict[str, float]:
    """`epochs` x `minibatches` optimizer steps on this rank's prompt groups; returns metrics.

    `version`: the policy version the update starts from (None: every sample is taken as on-policy)."""
    rollouts, scores, k = _scored_rollouts(judged, judge_weights, temperatures, spec.target)
    groups = len(rollouts) // k
    mine = [i for g in range(models.rank, groups, models.world_size) for i in range(g * k, (g + 1) * k)]
    if not mine:
        raise ValueError(
            f"rank {models.rank} got no prompt group ({groups} groups for {models.world_size} ranks); "
            "use fewer learner ranks or more prompts per step"
        )
    metrics: dict[str, float] = {"learner/sequences": float(len(rollouts)), "learner/score_mean": sum(scores) / len(scores)}
    t = collate_sequences([rollouts[i] for i in mine], models.pad_token_id)
    local_scores = torch.tensor([scores[i] for i in mine], dtype=torch.float32)
    epochs, minibatches = getattr(cfg, "epochs", 1), getattr(cfg, "minibatches", 1)
    estimator = ESTIMATORS[spec.advantage] if spec.advantage is not None else None
    staleness = torch.tensor([0 if version is None else version - rollouts[i].policy_version for i in mine])
    correct = estimator is not None and models.offpolicy_clip > 0 and bool((staleness > 0).any())
    # the estimators read old logprobs only for their KL term, so not without a reference (a zero KL weight)
    old_pass = epochs * minibatches > 1 or (
        estimator is not None and estimator.reads_old_logprobs and models.reference is not None
    )
    started = time.perf_counter()
    old, ref, values = _no_grad_pass(models, t, old_pass)
    metrics["learner/time/no_grad_pass"] = time.perf_counter() - started
    advantages = returns = None
    if estimator is not None:
        inputs = AdvantageInputs(local_scores, old, ref, values, t.response_mask, k, distributed.all_reduce_sum)
        advantages, returns, estimated = estimator(inputs, cfg)
        metrics.update(estimated)
    offpolicy = None
    if correct and advantages is not None:
        stale = t.response_mask & (staleness > 0)[:, None]
        offpolicy = _OffPolicy(sampler_logprobs([rollouts[i] for i in mine], t.response_mask), stale, models.offpolicy_clip)
        if old is not None:  # weighted once, up front; else each update weights its rows (`_update`)
            advantages = advantages * offpolicy.weights(old, slice(None))
    if ref is not None and old is not None:
        metrics["learner/kl_to_reference"] = float(masked_sum(kl_k1(old, ref), t.response_mask, dim=-1).mean())
    metrics["learner/response_tokens"] = float(t.response_mask.sum(-1).float().mean())
    tensors = _Tensors(t, old, ref, values, advantages, returns, local_scores)
    tensors.offpolicy = None if old is not None else offpolicy
    sums: dict[str, float] = {}
    updates = 0
    for epoch in range(epochs):
        order = torch.randperm(len(mine), generator=torch.Generator().manual_seed(models.seed * 7919 + step * 31 + epoch))
        for rows in torch.tensor_split(order, minibatches):
            add_weighted(sums, _update(models, spec, cfg, tensors, rows))
            updates += 1
    if offpolicy is not None:
        metrics.update(offpolicy.metrics(old if old is not None else offpolicy.seen, staleness))
    # metrics are means over the updates; times are totals over them
    metrics.update({key: value if key.startswith("learner/time/") else value / updates for key, value in sums.items()})
    metrics["learner/optimizer_steps"] = float(updates)
    return metrics


class _OffPolicy:
    """Truncated importance weights of the stale rows' tokens (learner/advantages.py
    `truncated_importance_weights`; fresh rows weigh 1) and the learner/offpolicy/* metrics."""

    def __init__(self, sampler: Tensor, stale: Tensor, clip: float):
        self.sampler, self.stale, self.clip = sampler, stale, clip  # [N, T-1] on the CPU
        self.seen = torch.zeros(sampler.shape)  # log pi of each row, as the updates computed it

    def weights(self, old: Tensor, rows: Tensor | slice) -> Tensor:
        """[rows, width] weights for these rows' log pi `old` (on any device)."""
        width = old.shape[1]
        sampler, stale = self.sampler[rows, :width].to(old.device), self.stale[rows, :width].to(old.device)
        return truncated_importance_weights(old, sampler, stale, self.clip)

    def metrics(self, old: Tensor, staleness: Tensor) -> dict[str, float]:
        ratio = torch.exp(torch.where(self.stale, old - self.sampler, 0.0))
        tokens = max(int(self.stale.sum()), 1)
        return {
            "learner/offpolicy/stale_share": float((staleness > 0).float().mean()),
            "learner/offpolicy/staleness_mean": float(staleness.float().mean()),
            "learner/offpolicy/staleness_max": float(staleness.max()),
            "learner/offpolicy/ratio_mean": float(torch.where(self.stale, ratio, 0.0).sum()) / tokens,
            "learner/offpolicy/clipped_share": float((self.stale & (ratio > self.clip)).sum()) / tokens,
        }


class _Tensors:
    """This rank's rows and their no-grad quantities, [N, ...] on the CPU; `rows` cuts a micro-batch."""

    def __init__(self, t: SequenceTensors, *per_row: Tensor | None):
        self.t = t
        self.old, self.ref, self.values, self.advantages, self.returns, self.scores = per_row
        self.offpolicy: _OffPolicy | None = None  # stale rows weighted inside the (single) update

    def cut(self, x: Tensor | None, rows: Tensor, width: int, device: torch.device) -> Tensor | None:
        return None if x is None else x[rows, :width].to(device)


def _scored_rollouts(judged, judge_weights, temperatures, target):
    rollouts, scores = [], []
    for batch in judged:
        rollouts += batch.batch.rollouts
        if target == "reward":
            scores += combined_rewards(batch, judge_weights)
        else:
            scores += win_probabilities(batch, judge_weights, temperatures)
    ks = {batch.batch.samples_per_prompt for batch in judged}
    if len(ks) != 1:
        raise ValueError(f"batches of one step disagree on samples_per_prompt: {sorted(ks)}")
    return rollouts, scores, ks.pop()


@torch.no_grad()
def _no_grad_pass(models: Models, t: SequenceTensors, old_pass: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """[N, T-1] old logprobs (if `old_pass`), reference logprobs (if `models.reference`) and critic
    values (if `models.critic`) of every row, micro-batched; no device copy at all when none is wanted."""
    if not old_pass and models.reference is None and models.critic is None:
        return None, None, None
    n, width = t.input_ids.shape[0], t.response_mask.shape[1]
    old = torch.zeros(n, width) if old_pass else None
    ref = torch.zeros(n, width) if models.reference is not None else None
    values = torch.zeros(n, width) if models.critic is not None else None
    models.policy.eval()
    micro = max(1, models.micro_batch_size)
    order = torch.tensor(by_length(t.attention_mask.sum(-1))) if models.length_buckets else torch.arange(n)
    for lo in range(0, n, micro):
        rows = order[lo : lo + micro]
        part = t.select(rows).to(models.device)
        w = part.response_mask.shape[1]
        if old is not None:
            old[rows, :w] = models.token_logprobs(models.policy.module, part).float().cpu()
        if ref is not None and models.reference is not None:
            ref[rows, :w] = models.token_logprobs(models.reference, part).float().cpu()
        if values is not None and models.critic is not None:
            values[rows, :w] = models.critic.values(part).cpu()
    return old, ref, values


def _update(models: Models, spec: AlgorithmSpec, cfg: Any, x: _Tensors, rows: Tensor) -> dict[str, float]:
    """One optimizer step (policy, and critic if any) on the given rows; returns its mean metrics."""
    assert spec.sequence_loss is not None  # the spec's __post_init__ guarantees it for this family
    micro = max(1, models.micro_batch_size)
    if models.length_buckets:  # the same rows, in micro-batches of similar lengths
        rows = rows[by_length(x.t.attention_mask[rows].sum(-1))]
    chunks = [rows[i : i + micro] for i in range(0, len(rows), micro)]

    def losses(chunk: Tensor) -> tuple[list[Tensor], dict[str, float]]:
        part = x.t.select(chunk).to(models.device)
        w, device = part.response_mask.shape[1], models.device
        logprobs = models.token_logprobs(models.policy, part)
        old = x.cut(x.old, chunk, w, device) if x.old is not None else logprobs.detach()  # no update yet: the same
        ref = x.cut(x.ref, chunk, w, device)
        advantages = x.cut(x.advantages, chunk, w, device)
        if x.offpolicy is not None and advantages is not None:
            advantages = advantages * x.offpolicy.weights(old, chunk)
            x.offpolicy.seen[chunk, :w] = old.float().cpu()
        inputs = SequenceInputs(
            logprobs=logprobs,
            old_logprobs=old,
            ref_logprobs=ref,
            advantages=advantages,
            targets=x.scores[chunk].to(device),
            mask=part.response_mask,
        )
        loss, metrics = spec.sequence_loss(inputs, cfg)
        if x.old is None and ref is not None:  # the step's KL, from the update's own (pre-update) logprobs
            metrics["learner/kl_to_reference"] = float(masked_sum(kl_k1(old, ref), part.response_mask, dim=-1).mean())
        if models.critic is None or spec.critic_loss is None:
            return [loss], metrics
        critic = CriticInputs(
            values=models.critic.forward(part),
            old_values=x.cut(x.values, chunk, w, device),
            returns=x.cut(x.returns, chunk, w, device),
            mask=part.response_mask,
        )
        value_loss, critic_metrics = spec.critic_loss(critic, cfg)
        return [loss, value_loss], {**metrics, **critic_metrics}

    engines = models.engines()
    out, norms = accumulate(engines, chunks, len(rows), losses)
    out["learner/grad_norm"] = norms[0]
    if len(norms) > 1:
        out["learner/critic_grad_norm"] = norms[1]
    return out
