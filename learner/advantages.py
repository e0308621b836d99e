"""Advantage estimators of the sequence family (PPO, GRPO, RLOO): rewards in, advantages out.

The sequence step (learner/sequence_step.py) calls the estimator the algorithm names in
`AlgorithmSpec.advantage`, looked up in `ESTIMATORS` at the end of this module: an estimator takes
`AdvantageInputs` and the algorithm's config and returns advantages, returns (GAE only) and metrics.

All functions are pure: no logging, no device moves, and no distributed calls of their own (GAE's
whitening across ranks goes through the `all_reduce_sum` it is handed).

Sources:
- Per-token KL-penalised reward and GAE: Ziegler et al. 2019 (arXiv 1909.08593) as implemented
  by TRL / OpenRLHF; GAE is Schulman et al. 2016 (arXiv 1506.02438, eq. 16).
- Group-normalised advantages: Shao et al. 2024 (GRPO, arXiv 2402.03300, Section 4.1.2).
- Leave-one-out baseline: Ahmadian et al. 2024 (RLOO, arXiv 2402.14740), after Kool et al. 2019.

Conventions: N sequences, T token positions aligned with the response mask (learner/collate.py);
G prompt groups of K samples each. Positions outside the mask may hold anything (NaN included):
they are selected away with `torch.where` before any arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from learner.ops import kl_k1, masked_mean, masked_sum


def _check_tokens(mask: Tensor, **tensors: Tensor) -> None:
    """Every [N, T] tensor has the mask's shape; the mask is 2-D."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [N, T], got shape {tuple(mask.shape)}")
    for name, x in tensors.items():
        if x.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(mask.shape)} (the mask's)")


def _last_positions(mask: Tensor) -> Tensor:
    """[N, T] bool, True only at each row's last masked position (all False for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).max(dim=-1, keepdim=True).values  # [N, 1]; -1 if empty
    return mask & (positions == last)


def kl_penalised_rewards(
    scores: Tensor, logprobs: Tensor | None, ref_logprobs: Tensor | None, mask: Tensor, kl_coef: float, clip: float | None
) -> Tensor:
    """Per-token rewards r_t = -kl_coef * (logp - logp_ref)_t, plus the clipped score on the last token.

    Args:
        scores: [N] sequence reward from the judges (higher is better).
        logprobs: [N, T] policy logprobs of the sampled tokens (the rollout policy, no grad); read
            only with a reference (None is then refused), so None without one.
        ref_logprobs: [N, T] same tokens under pi_ref; None only with kl_coef == 0 (no penalty).
        mask: [N, T] bool response mask.
        kl_coef: weight >= 0 of the per-token k1 KL penalty.
        clip: scores are clamped to [-clip, clip] first; None = no clipping.

    Returns:
        [N, T] rewards; 0 outside the mask; a row with no masked position is all zeros (its score
        is dropped).
    """
    mask = mask.bool()
    ref_logprobs = optional_reference(ref_logprobs, kl_coef, "kl_penalised_rewards")
    if scores.shape != (mask.shape[0],):
        raise ValueError(f"scores has shape {tuple(scores.shape)}, expected ({mask.shape[0]},)")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    rewards = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    if ref_logprobs is not None:
        if logprobs is None:
            raise ValueError("kl_penalised_rewards: the KL term needs logprobs (got None with ref_logprobs)")
        _check_tokens(mask, logprobs=logprobs, ref_logprobs=ref_logprobs)
        kl = kl_k1(torch.where(mask, logprobs, 0.0), torch.where(mask, ref_logprobs, 0.0))
        rewards = torch.where(mask, -kl_coef * kl, 0.0)
    final = scores.clamp(-clip, clip) if clip is not None else scores
    return rewards + torch.where(_last_positions(mask), final.to(rewards.dtype)[:, None], 0.0)


def optional_reference(ref_logprobs: Tensor | None, kl_coef: float, where: str) -> Tensor | None:
    """`ref_logprobs`, which may be None only when `kl_coef` == 0.

    With a zero KL weight the learner builds no reference model and runs no reference pass
    (learner/algorithms/base.py `AlgorithmSpec.reads_reference`), so the KL term is dropped; with a
    positive one a missing reference is a wiring error: ValueError naming the field.
    """
    if kl_coef < 0:
        raise ValueError(f"{where}: kl_coef must be >= 0, got {kl_coef}")
    if ref_logprobs is None and kl_coef > 0:
        raise ValueError(f"{where}: kl_coef={kl_coef} > 0 needs ref_logprobs (reference logprobs), got None")
    return ref_logprobs


def check_contiguous(mask: Tensor) -> None:
    """ValueError unless each row's masked positions form one contiguous run (or none)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    first = torch.where(mask, positions, mask.shape[1]).min(dim=-1).values
    last = torch.where(mask, positions, -1).max(dim=-1).values
    count = mask.sum(dim=-1)
    bad = (count > 0) & (last - first + 1 != count)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"response mask must be contiguous in each row; rows {rows[:8]} have gaps")


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over each row's response tokens (Schulman et al. 2016, eq. 16).

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};  R_t = A_t + V_t.

    Contract: each row's masked positions are contiguous (one response, no gaps; ValueError
    otherwise). The value after the last response token is 0 (the episode ends there), so the last
    token's advantage is r_T - V_T.

    Args:
        rewards: [N, T] per-token rewards (e.g. `kl_penalised_rewards`).
        values: [N, T] critic values V_t of the state before each response token.
        mask: [N, T] bool response mask.
        gamma: discount in [0, 1]; lam: GAE lambda in [0, 1].

    Returns:
        advantages: [N, T], 0 outside the mask.
        returns: [N, T] advantages + values on the mask (the critic's targets), 0 outside.
    """
    mask = mask.bool()
    _check_tokens(mask, rewards=rewards, values=values)
    check_contiguous(mask)
    rewards = torch.where(mask, rewards, 0.0)
    values = torch.where(mask, values, 0.0)  # so V after the last response token reads 0
    advantages = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[0])  # A_{t+1}; 0 past the end of the response
    next_value = rewards.new_zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(mask[:, t], delta + gamma * lam * running, 0.0)
        advantages[:, t] = running
        next_value = values[:, t]
    returns = torch.where(mask, advantages + values, 0.0)
    return advantages, returns


def masked_moments(x: Tensor, mask: Tensor) -> tuple[float, float, int]:
    """(sum, sum of squares, count) of `x` over the masked positions: all-reduce these across ranks."""
    mask = mask.bool()
    _check_tokens(mask, x=x)
    total = float(masked_sum(x, mask))
    squares = float(masked_sum(torch.where(mask, x, 0.0) ** 2, mask))
    return total, squares, int(mask.sum())


def mean_var(total: float, squares: float, count: int) -> tuple[float, float]:
    """Mean and population variance from (summed) `masked_moments`; (0, 0) when count is 0."""
    if count <= 0:
        return 0.0, 0.0
    mean = total / count
    return mean, max(squares / count - mean * mean, 0.0)  # clamp float round-off below 0


def whiten(x: Tensor, mask: Tensor, mean: float | None = None, var: float | None = None, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) on the masked positions, 0 elsewhere.

    Args:
        x: [N, T] e.g. GAE advantages.
        mask: [N, T] bool response mask.
        mean, var: give both (e.g. from all-reduced `masked_moments` via `mean_var`) or neither;
            neither = the masked mean and population variance of `x` itself.
        eps: added to the variance.

    Returns:
        [N, T] whitened values, 0 outside the mask (all zeros when nothing is masked in).
    """
    mask = mask.bool()
    _check_tokens(mask, x=x)
    if (mean is None) != (var is None):
        raise ValueError("give both mean and var (e.g. all-reduced across ranks) or neither")
    x = torch.where(mask, x, 0.0)
    if mean is None or var is None:
        centre = masked_mean(x, mask)
        return torch.where(mask, (x - centre) * torch.rsqrt(masked_mean((x - centre) ** 2, mask) + eps), 0.0)
    if not var >= 0:
        raise ValueError(f"var must be >= 0, got {var}")
    return torch.where(mask, (x - mean) / math.sqrt(var + eps), 0.0)


def _check_groups(rewards: Tensor) -> None:
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [G, K] with K >= 2 samples per prompt, got shape {tuple(rewards.shape)}")


def group_normalised(rewards: Tensor, eps: float) -> Tensor:
    """GRPO advantages (r - mean_group) / (std_group + eps), std the sample (unbiased) std as in TRL.

    Args:
        rewards: [G, K] sequence rewards, row g = the K samples of prompt g.
        eps: added to the std (a group of equal rewards gets advantage 0).

    Returns:
        [G, K] advantages (`group_estimator` broadcasts each over its sequence's tokens).
    """
    _check_groups(rewards)
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True)  # unbiased (K - 1)
    return (rewards - mean) / (std + eps)


def leave_one_out(rewards: Tensor) -> Tensor:
    """RLOO advantages r_i - (sum_j r_j - r_i) / (K - 1): each sample against the mean of the others.

    Args:
        rewards: [G, K] sequence rewards (`leave_one_out_estimator` has subtracted kl_coef * sum_t k1).

    Returns:
        [G, K] advantages; each row sums to 0.
    """
    _check_groups(rewards)
    k = rewards.shape[1]
    return rewards - (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)


def truncated_importance_weights(logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, clip: float) -> Tensor:
    """Per-token min(pi(a) / mu(a), clip) for samples drawn by an older policy mu (decoupled PPO,
    Hilton et al. 2021, arXiv 2110.00641, eq. 6, with the truncation of IMPALA's V-trace, Espeholt
    et al. 2018, arXiv 1802.01561, eq. 1): pi is the policy the update starts from, mu the sampler.

    Args:
        logprobs: [N, T] log pi of the sampled tokens (no grad).
        sampler_logprobs: [N, T] log mu, the sampler's own logprobs of the same tokens.
        mask: [N, T] bool; only these positions are weighted (1 elsewhere).
        clip: truncation C > 0.

    Returns:
        [N, T] weights in (0, clip], 1 outside the mask.
    """
    mask = mask.bool()
    _check_tokens(mask, logprobs=logprobs, sampler_logprobs=sampler_logprobs)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    log_ratio = torch.where(mask, logprobs - sampler_logprobs, 0.0)
    return torch.where(mask, torch.exp(log_ratio).clamp(max=clip), 1.0)


# --------------------------------------------------------------------------- the estimators


@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator may use, for this rank's N sequences (G prompt groups of K, in order).

    Attributes:
        scores: [N] combined judged reward of each sequence.
        old_logprobs: [N, T] logprobs under the policy that sampled (no grad); None when the
            estimator does not read them (`Estimator.reads_old_logprobs`).
        ref_logprobs: [N, T] under pi_ref, or None when the algorithm does not read it under its
            config (no reference, or a zero `kl_coef`: `AlgorithmSpec.reads_reference`).
        values: [N, T] critic values, or None without a critic.
        mask: [N, T] bool response mask.
        group_size: K.
        all_reduce_sum: sums a list of floats over the learner ranks (identity on one rank).
    """

    scores: Tensor
    old_logprobs: Tensor | None
    ref_logprobs: Tensor | None
    values: Tensor | None
    mask: Tensor
    group_size: int
    all_reduce_sum: Callable[[list[float]], list[float]]


Estimated = tuple[Tensor, Tensor | None, dict[str, float]]  # advantages [N, T], returns [N, T] | None, metrics


@dataclass(frozen=True)
class Estimator:
    """An estimator and whether it reads `AdvantageInputs.old_logprobs`: one that does not lets a
    single-update step skip the no-grad policy pass (the old logprobs are then the update's own,
    detached: the policy has not moved yet). The estimators here read them only for their KL term,
    so without a reference (a zero KL weight) they take None and the pass is skipped too."""

    fn: Callable[[AdvantageInputs, Any], Estimated]
    reads_old_logprobs: bool

    def __call__(self, inputs: AdvantageInputs, cfg: Any) -> Estimated:
        return self.fn(inputs, cfg)


def _required(x: Tensor | None, what: str, estimator: str) -> Tensor:
    if x is None:
        raise ValueError(f"the {estimator!r} advantage estimator needs {what}; the algorithm's SPEC must declare it")
    return x


def gae_estimator(inputs: AdvantageInputs, cfg: Any) -> Estimated:
    """PPO: k1-penalised per-token rewards, GAE on the critic's values, whitened over every rank's tokens.

    cfg: kl_coef, reward_clip, gamma, gae_lambda, whiten_advantages; ref_logprobs may be None at kl_coef 0."""
    ref = optional_reference(inputs.ref_logprobs, cfg.kl_coef, "the 'gae' advantage estimator")
    values = _required(inputs.values, "critic values", "gae")
    old = _required(inputs.old_logprobs, "old logprobs", "gae") if ref is not None else None  # for the KL term only
    rewards = kl_penalised_rewards(inputs.scores, old, ref, inputs.mask, cfg.kl_coef, cfg.reward_clip)
    advantages, returns = gae(rewards, values, inputs.mask, cfg.gamma, cfg.gae_lambda)
    metrics = {"learner/advantage_raw": float(masked_mean(advantages, inputs.mask))}
    if cfg.whiten_advantages:
        total, squares, count = inputs.all_reduce_sum(list(masked_moments(advantages, inputs.mask)))
        mean, var = mean_var(total, squares, int(count))
        advantages = whiten(advantages, inputs.mask, mean=mean, var=var)
    return advantages, returns, metrics


def _per_sequence(per_sample: Tensor, mask: Tensor) -> Estimated:
    """A per-sequence advantage [N] broadcast over each sequence's response tokens."""
    return per_sample[:, None] * mask.float(), None, {"learner/advantage_abs": float(per_sample.abs().mean())}


def group_estimator(inputs: AdvantageInputs, cfg: Any) -> Estimated:
    """GRPO: each reward normalised within its prompt's group. cfg: std_eps."""
    k = inputs.group_size
    return _per_sequence(group_normalised(inputs.scores.reshape(-1, k), cfg.std_eps).reshape(-1), inputs.mask)


def leave_one_out_estimator(inputs: AdvantageInputs, cfg: Any) -> Estimated:
    """RLOO: reward minus kl_coef * (sequence sum of k1), against the mean of the group's others.

    cfg: kl_coef; ref_logprobs may be None at kl_coef 0 (the reward is then the judged score)."""
    ref = optional_reference(inputs.ref_logprobs, cfg.kl_coef, "the 'leave_one_out' advantage estimator")
    rewards = inputs.scores
    if ref is not None:
        old = _required(inputs.old_logprobs, "old logprobs", "leave_one_out")  # for the KL term only
        rewards = rewards - cfg.kl_coef * masked_sum(kl_k1(old, ref), inputs.mask, dim=-1)
    rewards = rewards.reshape(-1, inputs.group_size)
    return _per_sequence(leave_one_out(rewards).reshape(-1), inputs.mask)


# name -> estimator; an algorithm names its own in `AlgorithmSpec.advantage` (None: no advantages).
ESTIMATORS: dict[str, Estimator] = {
    "gae": Estimator(gae_estimator, reads_old_logprobs=True),
    "group": Estimator(group_estimator, reads_old_logprobs=False),
    "leave_one_out": Estimator(leave_one_out_estimator, reads_old_logprobs=True),
}
