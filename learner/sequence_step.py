"""One training step of the sequence family (PPO, GRPO, RLOO, SPPO) on a PolicyLearner.

Where it sits: learner/engine.py `train_step` -> **train_sequences** -> algorithms/<algo>.py
`sequence_loss` (and, for PPO, learner/critic.py + algorithms/ppo.py `value_loss`).

    scores   = combined judged reward per sample (or its win probability, SPPO)
    shard    = this rank's prompt groups (whole groups: group baselines need every sample)
    no grad  : old logprobs (the policy before this step), reference logprobs, critic values
    advantage: gae (PPO: k1 KL penalty per token + clipped reward at the last token, whitened over
               every rank's tokens) | group (GRPO) | leave_one_out (RLOO: reward - kl_coef * sum k1)
    for epoch in epochs, minibatch in minibatches:  (rows shuffled per epoch, seeded by step)
        policy (and critic) forward per micro-batch -> loss.sum() / rows -> backward
        optimizer step (both engines)

Every rank runs the same number of optimizer steps (a rank with no rows in a minibatch backs a
zero gradient), so the ZeRO collectives stay in step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from learner import advantages as adv
from learner import distributed
from learner.algorithms.base import SequenceInputs
from learner.algorithms.ppo import value_loss
from learner.collate import SequenceTensors, collate_sequences
from learner.ops import kl_k1, masked_mean, masked_sum
from learner.pairing import combined_rewards, win_probabilities
from protocols import JudgedBatch

if TYPE_CHECKING:
    from learner.engine import PolicyLearner


def train_sequences(
    learner: PolicyLearner, judged: Sequence[JudgedBatch], step: int,
    judge_weights: Mapping[str, float], temperatures: Mapping[str, float],
) -> dict[str, float]:
    spec, cfg = learner.spec, learner.algo_cfg
    rollouts, scores, k = _scored_rollouts(judged, judge_weights, temperatures, spec.target)
    groups = len(rollouts) // k
    mine = [i for g in range(learner.rank, groups, learner.world_size) for i in range(g * k, (g + 1) * k)]
    metrics: dict[str, float] = {"learner/sequences": float(len(rollouts)), "learner/score_mean": _mean(scores)}
    if not mine:
        raise ValueError(f"rank {learner.rank} got no prompt group ({groups} groups for {learner.world_size} ranks); "
                         "use fewer learner ranks or more prompts per step")
    t = collate_sequences([rollouts[i] for i in mine], learner.pad_token_id)
    local_scores = torch.tensor([scores[i] for i in mine], dtype=torch.float32)
    old, ref, values = _no_grad_pass(learner, t)
    advantages, returns = _advantages(learner, t.response_mask, local_scores, old, ref, values, k, metrics)
    if ref is not None:
        metrics["learner/kl_to_reference"] = float(masked_sum(kl_k1(old, ref), t.response_mask, dim=-1).mean())
    metrics["learner/response_tokens"] = float(t.response_mask.sum(-1).float().mean())
    sums: dict[str, float] = {}
    updates = 0
    epochs, minibatches = getattr(cfg, "epochs", 1), getattr(cfg, "minibatches", 1)
    for epoch in range(epochs):
        order = torch.randperm(len(mine), generator=torch.Generator().manual_seed(learner.seed * 7919 + step * 31 + epoch))
        for rows in torch.tensor_split(order, minibatches):
            stats = _update(learner, t, rows, old, ref, values, advantages, returns, local_scores)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            updates += 1
    metrics.update({key: value / updates for key, value in sums.items()})
    metrics["learner/optimizer_steps"] = float(updates)
    return metrics


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
def _no_grad_pass(learner: PolicyLearner, t: SequenceTensors) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """[N, T-1] old logprobs, reference logprobs and critic values of every row, micro-batched."""
    spec, n = learner.spec, t.input_ids.shape[0]
    width = t.response_mask.shape[1]
    old = torch.zeros(n, width)
    ref = torch.zeros(n, width) if spec.needs_reference else None
    values = torch.zeros(n, width) if learner.critic is not None else None
    learner.engine.eval()
    micro = max(1, learner.cfg.micro_batch_size)
    for lo in range(0, n, micro):
        rows = torch.arange(lo, min(lo + micro, n))
        part = t.select(rows).to(learner.device)
        w = part.response_mask.shape[1]
        old[rows, :w] = learner.token_logprobs(learner.engine.module, part).float().cpu()
        if ref is not None:
            ref[rows, :w] = learner.token_logprobs(learner.reference, part).float().cpu()
        if values is not None:
            values[rows, :w] = learner.critic.values(part).cpu()
    return old, ref, values


def _advantages(learner, mask, scores, old, ref, values, k, metrics) -> tuple[Tensor | None, Tensor | None]:
    """[N, T-1] advantages (and PPO returns) of this rank's rows, by the algorithm's estimator."""
    kind, cfg = learner.spec.advantage, learner.algo_cfg
    if kind == "none":
        return None, None
    if kind == "gae":
        rewards = adv.kl_penalised_rewards(scores, old, ref, mask, cfg.kl_coef, cfg.reward_clip)
        advantages, returns = adv.gae(rewards, values, mask, cfg.gamma, cfg.gae_lambda)
        metrics["learner/ppo/raw_advantage"] = float(masked_mean(advantages, mask))
        if cfg.whiten_advantages:
            mean, var = adv.mean_var(*distributed.all_reduce_sum(list(adv.masked_moments(advantages, mask))))
            advantages = adv.whiten(advantages, mask, mean=mean, var=var)
        return advantages, returns
    sequence_rewards = scores
    if kind == "leave_one_out":
        sequence_kl = masked_sum(kl_k1(old, ref), mask, dim=-1)
        sequence_rewards = scores - cfg.kl_coef * sequence_kl
        per_sample = adv.leave_one_out(sequence_rewards.reshape(-1, k)).reshape(-1)
    elif kind == "group":
        per_sample = adv.group_normalised(sequence_rewards.reshape(-1, k), cfg.std_eps).reshape(-1)
    else:
        raise ValueError(f"unknown advantage estimator {kind!r}")
    metrics["learner/advantage_abs"] = float(per_sample.abs().mean())
    return per_sample[:, None] * mask.float(), None


def _update(learner, t, rows, old, ref, values, advantages, returns, scores) -> dict[str, float]:
    """One optimizer step (policy and critic) on the given rows; returns its mean metrics."""
    spec, cfg = learner.spec, learner.algo_cfg
    learner.engine.train()
    micro = max(1, learner.cfg.micro_batch_size)
    chunks = [rows[i : i + micro] for i in range(0, len(rows), micro)]
    sums: dict[str, float] = {}
    for index, chunk in enumerate(chunks):
        part = t.select(chunk).to(learner.device)
        w = part.response_mask.shape[1]
        cut = lambda x, chunk=chunk, w=w: None if x is None else x[chunk, :w].to(learner.device)  # noqa: E731
        inputs = SequenceInputs(
            logprobs=learner.token_logprobs(learner.engine, part), old_logprobs=cut(old), ref_logprobs=cut(ref),
            advantages=cut(advantages), targets=scores[chunk].to(learner.device), mask=part.response_mask,
        )
        loss, metrics = spec.sequence_loss(inputs, cfg)
        last = index == len(chunks) - 1
        learner.engine.set_gradient_accumulation_boundary(last)
        learner.engine.backward(loss.sum() / len(rows))
        metrics["learner/loss"] = float(loss.detach().mean())
        if learner.critic is not None:
            per_token = value_loss(learner.critic.forward(part), cut(values), cut(returns), part.response_mask,
                                   cfg.value_clip)
            critic_loss = masked_mean(per_token, part.response_mask, dim=-1)
            learner.critic.backward(critic_loss.sum() / len(rows), last)
            metrics["learner/ppo/value_loss"] = float(critic_loss.detach().mean())
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value * len(chunk)
    if not chunks:
        learner.zero_backward()
        if learner.critic is not None:
            learner.critic.zero_backward()
    learner.engine.step()
    out = {key: value / max(len(rows), 1) for key, value in sums.items()}
    out["learner/grad_norm"] = learner.grad_norm()
    if learner.critic is not None:
        out["learner/ppo/critic_grad_norm"] = learner.critic.step()
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(len(values), 1)
