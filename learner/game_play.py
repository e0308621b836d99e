"""Training a tabular policy on an exact preference game with the project's registered losses.

The "language model" is pi = softmax(theta) over the game's N responses (one prompt, one-token
responses), started at pi_ref. The adapter hands the learner's loss functions exactly what the
learner would: the sequence logprob of a response is log pi(response), so a pair algorithm gets
`PairInputs` with policy / reference / opponent-snapshot logprobs of the chosen and rejected
responses, and SPPO gets `SequenceInputs` with one-token sequences. The loss is looked up by name
in `learner.algorithms.ALGORITHMS` and called with the algorithm's own config model (its
`SPEC.config`), as learner/pair_step.py and learner/sequence_step.py do.

One training step mirrors one step of the online loop:
    pi_t = current policy;  maybe push pi_t into the opponent ring (every `snapshot_every` steps)
    data: sampled  - Q pairs y, y' ~ pi_t (on-policy), labelled by Bernoulli(P[y, y']); identical
                     responses are ties and are skipped, like the learner's tied groups (the
                     query still counts against the budget). SPPO: Q / (K(K-1)/2) groups of K
                     samples, every pair within a group labelled, target = mean label against
                     the other K-1 (identical responses score 1/2).
          exact    - the infinite-sample limit of the same: every ordered pair weighted by its
                     probability, exact win rates P(y > pi_t) for SPPO.
    loss = mean (or expectation) of the registered per-pair / per-sequence loss
    AdamW step (the learner's betas, gradient clip and warmup from LearnerConfig)
BT-reward RLHF (`algo="bt_rlhf"`, no registered loss: reward model + closed-form optimum) fits
Bradley-Terry rewards to all labels so far and plays softmax(log pi_ref + r / beta).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from learner.algorithms import get_algorithm
from learner.algorithms.base import PairInputs, SequenceInputs
from learner.game import Game, best_response_win, duality_gap, kl, softmax
from protocols.config import LearnerConfig

logger = logging.getLogger(__name__)

Mode = Literal["sampled", "exact"]
BT_PRIOR = 0.1  # L2 precision on Bradley-Terry rewards (MAP), so a few one-sided labels stay finite


@dataclass(frozen=True)
class Method:
    """An algorithm with its hyperparameters.

    Attributes:
        label: row name in tables.
        algo: registry name (learner/algorithms/) or "bt_rlhf".
        config: the algorithm's own config section (MNPOConfig, DPOConfig, SPPOConfig); None for bt_rlhf.
        lr: AdamW learning rate on theta (unused by bt_rlhf).
        bt_beta: bt_rlhf's KL strength in softmax(log pi_ref + r / beta).
        bt_sampling: bt_rlhf's pair source: the reference (the classic pipeline) or the current policy.
    """

    label: str
    algo: str
    config: BaseModel | None = None
    lr: float = 0.1
    bt_beta: float = 0.1
    bt_sampling: Literal["reference", "policy"] = "reference"


@dataclass
class Trace:
    """Measures of S independent runs (one per seed); row 0 is the starting policy.

    Arrays are [R, S], one row per recorded step (every step by default: R = steps + 1).
    `queries[i]` labels per run had been used at row i; the average iterate after step k is the mean
    of the policies after steps 1..k (the starting policy at row 0).
    """

    queries: np.ndarray
    gap_last: np.ndarray
    gap_avg: np.ndarray
    brw_last: np.ndarray
    brw_avg: np.ndarray
    kl_last: np.ndarray
    kl_avg: np.ndarray
    final_policy: np.ndarray  # [S, N]


class _Recorder:
    def __init__(self, game: Game, tau: float):
        self.game, self.tau, self.rows = game, tau, []

    def record(self, queries: int, last: np.ndarray, avg: np.ndarray) -> None:
        p, ref, tau = self.game.preference, self.game.reference, self.tau
        self.rows.append(
            (
                queries,
                duality_gap(p, last, ref, tau),
                duality_gap(p, avg, ref, tau),
                best_response_win(p, last),
                best_response_win(p, avg),
                kl(last, ref),
                kl(avg, ref),
            )
        )

    def trace(self, final: np.ndarray) -> Trace:
        cols = list(zip(*self.rows))
        return Trace(np.array(cols[0]), *(np.stack(c) for c in cols[1:]), final_policy=final)


# ---------------------------------------------------------------------------- the adapter
def pair_inputs(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    opponent_logprobs: torch.Tensor | None,
    rows: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
) -> PairInputs:
    """PairInputs for B pairs of one-token responses: sequence logprob = log pi(response).

    Args:
        policy_logprobs: [S, N] log pi of S independent policies (requires grad).
        ref_logprobs: [N] log pi_ref.
        opponent_logprobs: [M, S, N] log pi_{t-1-j} of each policy's own snapshot j (newest first), or None.
        rows: [B] int64, which policy each pair belongs to; chosen, rejected: [B] int64 responses.
        Every pair is a hard label (probability 1), as sampled pairs are.
    """
    opp = None if opponent_logprobs is None else opponent_logprobs[:, rows]  # [M, B, N]
    return PairInputs(
        policy_chosen=policy_logprobs[rows, chosen],
        policy_rejected=policy_logprobs[rows, rejected],
        ref_chosen=ref_logprobs[chosen],
        ref_rejected=ref_logprobs[rejected],
        opponent_chosen=None if opp is None else opp[:, torch.arange(len(rows)), chosen],
        opponent_rejected=None if opp is None else opp[:, torch.arange(len(rows)), rejected],
        probability=torch.ones(chosen.shape[0], dtype=policy_logprobs.dtype),
    )


def sequence_inputs(
    policy_logprobs: torch.Tensor, old_logprobs: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor
) -> SequenceInputs:
    """SequenceInputs for B one-token responses ([B, 1] token tensors, every position in the mask);
    `policy_logprobs` / `old_logprobs` are [S, N], `rows` picks each response's policy."""
    return SequenceInputs(
        logprobs=policy_logprobs[rows, actions][:, None],
        old_logprobs=old_logprobs[rows, actions][:, None],
        ref_logprobs=None,
        advantages=None,
        targets=targets,
        mask=torch.ones(len(rows), 1, dtype=torch.bool),
    )


def pair_objective(algo: str, cfg: BaseModel, inputs: PairInputs, weights: torch.Tensor) -> torch.Tensor:
    """sum_b weights[b] * loss_b with loss the per-pair loss registered as `algo`, called as the learner
    calls it (`SPEC.pair_loss(PairInputs, cfg)`); weights 1/B_s give run s the learner's mean over its pairs."""
    per_pair, _ = get_algorithm(algo).pair_loss(inputs, cfg)
    return (per_pair * weights).sum()


def sequence_objective(algo: str, cfg: BaseModel, inputs: SequenceInputs, weights: torch.Tensor) -> torch.Tensor:
    """`pair_objective` for the sequence family (`SPEC.sequence_loss(SequenceInputs, cfg)`)."""
    per_sequence, _ = get_algorithm(algo).sequence_loss(inputs, cfg)
    return (per_sequence * weights).sum()


# ---------------------------------------------------------------------------- data
def sample_pairs(
    rng: np.random.Generator, preference: np.ndarray, pi: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n on-policy pairs per policy (pi: [S, N]) labelled by Bernoulli(P); ties (y = y') dropped.

    Returns (rows, chosen, rejected), each [B] with B <= S n; `rows` names each pair's policy.
    """
    s = pi.shape[0]
    draws = rng.random((2, s, n))
    cdf = np.cumsum(pi, axis=1)
    cdf[:, -1] = 1.0
    first = np.stack([np.searchsorted(cdf[i], draws[0, i], side="right") for i in range(s)])
    second = np.stack([np.searchsorted(cdf[i], draws[1, i], side="right") for i in range(s)])
    first_wins = rng.random((s, n)) < preference[first, second]
    keep = first != second
    rows = np.broadcast_to(np.arange(s)[:, None], (s, n))[keep]
    chosen = np.where(first_wins, first, second)[keep]
    rejected = np.where(first_wins, second, first)[keep]
    return rows, chosen, rejected


def exact_pairs(preference: np.ndarray, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair (chosen i, rejected j), i != j, of one policy pi [N], with the probability
    that a non-tied draw of `sample_pairs` is (i, j): 2 pi_i pi_j P[i, j] / (1 - sum_y pi_y^2). Sums to 1."""
    n = len(pi)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    weights = 2 * pi[i] * pi[j] * preference[i, j]
    return i, j, weights / weights.sum()


def sample_groups(
    rng: np.random.Generator, preference: np.ndarray, pi: np.ndarray, groups: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """groups x k on-policy samples per policy (pi: [S, N]) and each one's mean label against the
    other k-1 of its group (identical responses score 1/2). Returns (rows, actions, targets), [S groups k]."""
    s = pi.shape[0]
    cdf = np.cumsum(pi, axis=1)
    cdf[:, -1] = 1.0
    draws = rng.random((s, groups * k))
    actions = np.stack([np.searchsorted(cdf[i], draws[i], side="right") for i in range(s)]).reshape(s, groups, k)
    wins = np.zeros((s, groups, k))
    for a in range(k):
        for b in range(a + 1, k):
            ya, yb = actions[..., a], actions[..., b]
            label = np.where(ya == yb, 0.5, (rng.random((s, groups)) < preference[ya, yb]).astype(float))
            wins[..., a] += label
            wins[..., b] += 1.0 - label
    rows = np.broadcast_to(np.arange(s)[:, None], (s, groups * k)).reshape(-1)
    return rows, actions.reshape(-1), (wins / (k - 1)).reshape(-1)


# ---------------------------------------------------------------------------- Bradley-Terry RLHF
def fit_bradley_terry(wins: np.ndarray, prior: float, start: np.ndarray | None = None) -> np.ndarray:
    """MAP Bradley-Terry rewards: argmax_r sum_ij W[i, j] log sigmoid(r_i - r_j) - prior/2 |r|^2, mean 0.

    W[i, j] = (weighted) count of labels "i preferred over j" (Bradley & Terry 1952, the reward
    model of RLHF: Ouyang et al. 2022, arXiv 2203.02155, eq. 1). Newton's method on the concave
    objective, steps capped at 1 nat; the mean-zero constraint fixes the shift the likelihood
    cannot see.
    """
    n = wins.shape[0]
    r = np.zeros(n) if start is None else start.copy()
    total = wins + wins.T
    for _ in range(200):
        p = 0.5 * (1.0 + np.tanh(0.5 * (r[:, None] - r[None, :])))  # P_model(i > j), overflow-free sigmoid
        grad = (wins - total * p).sum(axis=1) - prior * r - r.sum() / n
        curvature = total * p * (1 - p)
        hessian = -(np.diag(curvature.sum(axis=1)) - curvature) - prior * np.eye(n) - np.ones((n, n)) / n
        delta = np.linalg.solve(hessian, grad)
        delta *= min(1.0, 1.0 / max(np.abs(delta).max(), 1e-300))
        r = r - delta
        if np.abs(delta).max() < 1e-10:
            break
    return r - r.mean()


# ---------------------------------------------------------------------------- closed forms
def mnpo_population_step(
    preference: np.ndarray,
    sampling: np.ndarray,
    reference: np.ndarray,
    opponents: list[np.ndarray],
    weights: tuple[float, ...],
    ratio: float,
    eta: float,
) -> np.ndarray:
    """Minimiser of TD-MNPO's expected loss over on-policy pairs from `sampling` (full support).

    For the squared loss (logits - 1/(2 eta))^2 (Wu et al. 2025, arXiv 2509.23102, eq. 17) with
    logits = g(y_w) - g(y_l), g = log pi - r log ref - (1 - r) sum_j lambda_j log pi_{t-j}, the
    stationarity condition in g(y) gives g(y) = P(y > sampling) / eta + const, i.e.

        pi(y) ∝ ref(y)^r prod_j pi_{t-j}(y)^((1-r) lambda_j) exp(P(y > sampling) / eta)

    (the argument of Azar et al. 2023, arXiv 2310.12036, Section 5, for IPO). With one opponent
    pi_t = sampling this is INPO's mirror-descent step (Zhang et al. 2024, arXiv 2407.00617) of size
    1/eta and KL strength tau = r eta; its fixed point is the tau-regularised Nash equilibrium.
    """
    log_pi = ratio * np.log(reference) + preference @ sampling / eta
    for w, opponent in zip(weights, opponents):
        log_pi = log_pi + (1 - ratio) * w * np.log(opponent)
    return softmax(log_pi)


# ---------------------------------------------------------------------------- training
def run(
    game: Game,
    method: Method,
    *,
    tau: float,
    steps: int,
    queries_per_step: int,
    mode: Mode = "sampled",
    seeds: tuple[int, ...] = (0,),
    group_size: int = 4,
    record_every: int = 1,
) -> Trace:
    """Train `method` on `game` once per seed (independent runs, batched), with exact measures.

    Each run gets `queries_per_step` labels per step; SPPO uses floor(Q / (K(K-1)/2)) groups of K =
    `group_size`. The seeds share one random stream, so a run depends on the whole seed tuple; exact
    mode draws nothing and needs one seed. Measures are taken at the start, every `record_every`
    steps and after the last step (the average iterate still averages every step).
    """
    rng = np.random.default_rng(list(seeds))
    if method.algo == "bt_rlhf":
        return _run_bt(game, method, tau, steps, queries_per_step, mode, rng, len(seeds), record_every)
    spec, cfg = get_algorithm(method.algo), method.config
    if not isinstance(cfg, spec.config):
        raise TypeError(
            f"{method.algo} reads the {spec.config_section!r} section ({spec.config.__name__}), got {type(cfg).__name__}"
        )
    if spec.family == "sequence" and spec.name != "sppo":
        raise ValueError(f"{spec.name}: of the sequence family only SPPO trains on preferences")
    s = len(seeds)
    learner = LearnerConfig()
    log_ref = np.log(game.reference)
    theta = torch.tensor(np.tile(log_ref, (s, 1)), dtype=torch.float64, requires_grad=True)  # pi_0 = pi_ref
    optimizer = torch.optim.AdamW([theta], lr=method.lr, betas=learner.betas, weight_decay=learner.weight_decay)
    warmup = max(learner.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup))
    ref_logprobs = torch.tensor(log_ref, dtype=torch.float64)
    ring = None
    if spec.needs_opponents:  # every slot starts as pi_ref, as learner/opponents.py
        ring = [theta.detach().log_softmax(-1) for _ in range(spec.fixed_opponents or cfg.num_opponents)]
    per_group = group_size * (group_size - 1) // 2
    groups = max(queries_per_step // per_group, 1)
    used = groups * per_group if spec.family == "sequence" else queries_per_step
    pi = np.tile(game.reference, (s, 1))
    total = np.zeros_like(pi)
    recorder = _Recorder(game, tau)
    recorder.record(0, pi, pi)
    for step in range(steps):
        if ring is not None and step > 0 and step % cfg.snapshot_every == 0:
            ring = [theta.detach().log_softmax(-1)] + ring[:-1]
        logprobs = theta.log_softmax(-1)
        if spec.family == "pair":
            loss = _pair_step(spec.name, cfg, game, pi, mode, rng, queries_per_step, logprobs, ref_logprobs, ring)
        else:
            loss = _sppo_step(spec.name, cfg, game, pi, mode, rng, groups, group_size, logprobs)
        optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():  # the learner clips each run's gradient norm on its own
            norms = theta.grad.norm(dim=-1, keepdim=True)
            theta.grad.mul_(torch.clamp(learner.grad_clip / (norms + 1e-6), max=1.0))
        optimizer.step()
        scheduler.step()
        pi = theta.detach().softmax(-1).numpy()
        total += pi
        if (step + 1) % record_every == 0 or step + 1 == steps:
            recorder.record((step + 1) * used, pi, total / (step + 1))
    return recorder.trace(pi)


def _pair_step(algo, cfg, game, pi, mode, rng, n, logprobs, ref_logprobs, ring):
    """The weighted registered pair loss of one step, summed over the runs."""
    if mode == "exact":
        parts = [exact_pairs(game.preference, p) for p in pi]
        rows = np.concatenate([np.full(len(c), r) for r, (c, _, _) in enumerate(parts)])
        chosen, rejected, weights = (np.concatenate(x) for x in zip(*parts))
    else:
        rows, chosen, rejected = sample_pairs(rng, game.preference, pi, n)
        counts = np.bincount(rows, minlength=pi.shape[0])
        weights = 1.0 / counts[rows]  # each run: the mean over its non-tied pairs; no pairs: no gradient
        if len(rows) == 0:  # every run drew only ties (a collapsed policy): a zero gradient, as the learner
            return logprobs.sum() * 0.0
    opponents = None if ring is None else torch.stack(ring)
    inputs = pair_inputs(
        logprobs, ref_logprobs, opponents, torch.as_tensor(rows), torch.as_tensor(chosen), torch.as_tensor(rejected)
    )
    return pair_objective(algo, cfg, inputs, torch.as_tensor(weights, dtype=torch.float64))


def _sppo_step(algo, cfg, game, pi, mode, rng, groups, k, logprobs):
    """SPPO's weighted sequence loss of one step; pi_t (old logprobs) is the policy before the step."""
    s, n = pi.shape
    if mode == "exact":  # every response, weighted by pi_t, with its exact win rate P(y > pi_t)
        rows, actions = np.repeat(np.arange(s), n), np.tile(np.arange(n), s)
        targets, weights = (pi @ game.preference.T).reshape(-1), pi.reshape(-1)
    else:
        rows, actions, targets = sample_groups(rng, game.preference, pi, groups, k)
        weights = np.full(len(rows), 1.0 / (groups * k))
    inputs = sequence_inputs(
        logprobs,
        logprobs.detach(),
        torch.as_tensor(rows),
        torch.as_tensor(actions),
        torch.as_tensor(targets, dtype=torch.float64),
    )
    return sequence_objective(algo, cfg, inputs, torch.as_tensor(weights, dtype=torch.float64))


def _run_bt(game, method, tau, steps, q, mode, rng, s, record_every):
    """BT-reward RLHF: labels from the reference (or the current policy), MAP BT fit, closed-form optimum."""
    log_ref = np.log(game.reference)
    wins = np.zeros((s, game.size, game.size))
    rewards = np.zeros((s, game.size))
    pi = np.tile(game.reference, (s, 1))
    total = np.zeros_like(pi)
    recorder = _Recorder(game, tau)
    recorder.record(0, pi, pi)
    for step in range(steps):
        source = np.tile(game.reference, (s, 1)) if method.bt_sampling == "reference" else pi
        if mode == "exact":  # infinitely many labels per step, in proportion to their probability
            for r in range(s):
                i, j, w = exact_pairs(game.preference, source[r])
                np.add.at(wins[r], (i, j), w)
        else:
            rows, chosen, rejected = sample_pairs(rng, game.preference, source, q)
            np.add.at(wins, (rows, chosen, rejected), 1.0)
        prior = 1e-9 if mode == "exact" else BT_PRIOR
        rewards = np.stack([fit_bradley_terry(wins[r], prior, rewards[r]) for r in range(s)])
        pi = softmax(log_ref + rewards / method.bt_beta)
        total += pi
        if (step + 1) % record_every == 0 or step + 1 == steps:
            recorder.record((step + 1) * q, pi, total / (step + 1))
    return recorder.trace(pi)
