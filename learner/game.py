"""Exact preference games: a tabular "language model" over N responses, and exact Nash measures.

Not part of the online loop: learner/game_play.py trains tabular policies on these games with the
registered losses, bench/nash.py compares the algorithms (docs/nash.md). Pure numpy (float64).

A game is a preference matrix P with P[i, j] = P(response i is preferred over response j)
(project sign convention: > 0.5 favours i), P + P^T = 1 and diag(P) = 1/2, and a reference policy
pi_ref with full support. For policies p, q: P(p > q) = p^T P q, and P(y > q) = (P q)[y].

The KL-regularised preference game with strength tau (the game of Munos et al. 2023, arXiv
2312.00886, and of INPO, Zhang et al. 2024, arXiv 2407.00617; MNPO, Wu et al. 2025, arXiv 2509.23102,
eq. 9 measures it by a duality gap) is the symmetric two-player zero-sum game

    J(p, q) = P(p > q) - tau KL(p || pi_ref) + tau KL(q || pi_ref)          (p maximises, q minimises)

Its unique Nash equilibrium pi* is symmetric and solves pi* = softmax(log pi_ref + P pi* / tau).
Measures (all exact, `duality_gap` derived in its docstring):
    duality_gap(pi)      = max_p J(p, pi) - min_q J(pi, q)   (>= 0, zero only at pi*)
    best_response_win(pi)= max_y P(y > pi)                   (unregularised; 1/2 at an exact Nash)
    kl(pi, pi_ref)       = KL(pi || pi_ref) in nats
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SYMMETRY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Game:
    """One preference game.

    Attributes:
        name: key in `GAMES`.
        preference: [N, N] float64, P[i, j] = P(i > j); P + P^T = 1, diag 1/2.
        reference: [N] float64 pi_ref, entries > 0 summing to 1 (also the starting policy).
        description: one line for tables and docs.
    """

    name: str
    preference: np.ndarray
    reference: np.ndarray
    description: str

    def __post_init__(self) -> None:
        check_preference(self.preference)
        ref = self.reference
        if ref.shape != (self.preference.shape[0],) or not (ref > 0).all() or abs(ref.sum() - 1) > 1e-9:
            raise ValueError(
                f"game {self.name!r}: reference must be a full-support distribution over "
                f"{self.preference.shape[0]} responses, got {ref.tolist()}"
            )

    @property
    def size(self) -> int:
        return int(self.preference.shape[0])


def check_preference(preference: np.ndarray) -> None:
    """ValueError unless `preference` is a square matrix in [0, 1] with P + P^T = 1 (so diag 1/2)."""
    p = np.asarray(preference)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        raise ValueError(f"a preference matrix must be [N, N] with N >= 2, got shape {p.shape}")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("preference entries must be probabilities in [0, 1]")
    if np.abs(p + p.T - 1).max() > SYMMETRY_TOLERANCE:
        raise ValueError(f"P + P^T must be 1 everywhere (max error {np.abs(p + p.T - 1).max():.2e})")


# ---------------------------------------------------------------------------- the games
def _cyclic(n: int, margin: float) -> np.ndarray:
    """P[i, i+1 mod n] = 1/2 + margin: response i beats its successor (rock > scissors > paper > rock for n = 3)."""
    p = np.full((n, n), 0.5)
    for i in range(n):
        j = (i + 1) % n
        p[i, j], p[j, i] = 0.5 + margin, 0.5 - margin
    return p


def rock_paper_scissors(margin: float = 0.5, reference: tuple[float, ...] = (0.6, 0.3, 0.1)) -> Game:
    """Rock, scissors, paper: each beats the next with probability 1/2 + margin (hard: margin 1/2).

    The reference is skewed towards rock so that neither pi_ref nor the uniform policy is the
    regularised equilibrium: a policy has to move, and the right amount depends on tau.
    """
    kind = "hard" if margin == 0.5 else "soft"
    return Game(
        f"{kind}_rps",
        _cyclic(3, margin),
        np.array(reference, dtype=np.float64),
        f"{kind} rock-paper-scissors (win prob {0.5 + margin:g})",
    )


def condorcet(weights: tuple[float, float, float] = (0.40, 0.35, 0.25), reference: tuple[float, ...] = (0.2, 0.3, 0.5)) -> Game:
    """Three annotator groups with transitive but cyclically shifted rankings of responses A, B, C.

    Group 1 ranks A > B > C, group 2 B > C > A, group 3 C > A > B; a pair is judged by a group drawn
    with `weights` (each < 1/2), which then answers deterministically. So
    P(A > B) = w1 + w3, P(B > C) = w1 + w2, P(C > A) = w2 + w3: every majority holds and they
    cycle (Condorcet's paradox). Unequal weights make the equilibrium non-uniform.
    """
    w1, w2, w3 = weights
    if not (max(weights) < 0.5 and min(weights) > 0 and math.isclose(sum(weights), 1.0)):
        raise ValueError(f"condorcet weights must be positive, each < 1/2, summing to 1; got {weights}")
    rankings = ((0, 1, 2), (1, 2, 0), (2, 0, 1))  # best first
    p = np.full((3, 3), 0.5)
    for i in range(3):
        for j in range(3):
            if i != j:
                p[i, j] = sum(w for w, r in zip(weights, rankings) if r.index(i) < r.index(j))
    return Game(
        "condorcet",
        p,
        np.array(reference, dtype=np.float64),
        f"3 annotator groups, cyclic rankings, weights {w1:g}/{w2:g}/{w3:g}",
    )


def random_skew(n: int = 8, seed: int = 0) -> Game:
    """P = 1/2 + A/2 with A skew-symmetric, A[i, j] ~ U(-1, 1) for i < j; reference softmax(N(0, 1)).

    Redrawn (next seed) until no response beats every other with probability > 1/2 (no Condorcet
    winner), so the game is non-transitive and its Nash equilibrium is mixed.
    """
    rng = np.random.default_rng(seed)
    while True:
        upper = np.triu(rng.uniform(-1.0, 1.0, size=(n, n)), k=1)
        p = 0.5 + (upper - upper.T) / 2
        if not condorcet_winners(p):
            break
    logits = rng.normal(size=n)
    ref = np.exp(logits - logits.max())
    return Game("random", p, ref / ref.sum(), f"random skew-symmetric, {n} responses, no Condorcet winner")


def bradley_terry_game(
    scores: tuple[float, ...] = (1.0, 0.5, 0.0, -0.5, -1.0), reference: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.3)
) -> Game:
    """Transitive control: P[i, j] = sigmoid(s_i - s_j); the reference prefers the worse responses."""
    s = np.array(scores, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))
    return Game(
        "bradley_terry",
        p,
        np.array(reference, dtype=np.float64),
        f"transitive Bradley-Terry, scores {', '.join(f'{x:g}' for x in scores)}",
    )


def condorcet_winners(preference: np.ndarray) -> list[int]:
    """Responses that beat every other response with probability > 1/2."""
    p = np.asarray(preference)
    off = ~np.eye(p.shape[0], dtype=bool)
    return [i for i in range(p.shape[0]) if (p[i][off[i]] > 0.5).all()]


GAMES = {
    "hard_rps": lambda: rock_paper_scissors(0.5),
    "soft_rps": lambda: rock_paper_scissors(0.3),
    "condorcet": condorcet,
    "random": random_skew,
    "bradley_terry": bradley_terry_game,
}


def get_game(name: str) -> Game:
    """The game registered as `name`; ValueError listing the valid names otherwise."""
    try:
        return GAMES[name]()
    except KeyError:
        raise ValueError(f"unknown game {name!r}; valid: {', '.join(GAMES)}") from None


# ---------------------------------------------------------------------------- exact measures
# Every measure takes policies as [..., N] arrays (a batch of policies, e.g. one per seed) and
# returns a float for one policy or an array over the leading dimensions.
def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> float | np.ndarray:
    """KL(p || q) = sum_y p(y) log(p(y) / q(y)) in nats (terms with p(y) = 0 are 0)."""
    terms = np.where(p > 0, p * (_log(np.where(p > 0, p, 1.0)) - _log(q)), 0.0)
    return _out(terms.sum(axis=-1))


def win_rates(preference: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """[..., N] P(y > pi) = sum_y' P[y, y'] pi(y'): each response's win rate against a draw from pi."""
    return pi @ preference.T


def regularised_best_response(preference: np.ndarray, pi: np.ndarray, reference: np.ndarray, tau: float) -> np.ndarray:
    """argmax_p [P(p > pi) - tau KL(p || pi_ref)] = softmax(log pi_ref + P pi / tau) (Gibbs variational principle)."""
    return softmax(_log(reference) + win_rates(preference, pi) / tau)


def regularised_value(preference: np.ndarray, pi: np.ndarray, reference: np.ndarray, tau: float) -> float | np.ndarray:
    """max_p [P(p > pi) - tau KL(p || pi_ref)] = tau log sum_y pi_ref(y) exp(P(y > pi) / tau)."""
    return _out(tau * _logsumexp(_log(reference) + win_rates(preference, pi) / tau))


def duality_gap(preference: np.ndarray, pi: np.ndarray, reference: np.ndarray, tau: float) -> float | np.ndarray:
    """KL-regularised duality gap of the symmetric profile (pi, pi), exact.

    For J(p, q) = P(p > q) - tau KL(p || ref) + tau KL(q || ref) (module docstring), the standard
    two-player duality gap used for this game by INPO (Zhang et al. 2024, arXiv 2407.00617); it is
    twice MNPO's one-sided DualGap (Wu et al. 2025, arXiv 2509.23102, eq. 9) with opponent set {pi}:

        gap(pi) = max_p J(p, pi) - min_q J(pi, q)

    Derivation. max_p J(p, pi) = V(pi) + tau KL(pi || ref) with
    V(pi) = max_p [p^T P pi - tau KL(p || ref)] = tau log sum_y ref(y) exp((P pi)(y) / tau)
    (Gibbs: the maximiser is ref * exp(P pi / tau), normalised). Because P(pi > q) = 1 - P(q > pi),
    min_q J(pi, q) = 1 - tau KL(pi || ref) - V(pi). Hence

        gap(pi) = 2 [V(pi) + tau KL(pi || ref) - 1/2]

    using P(pi > pi) = 1/2. Taking p = pi in V shows gap >= 0; it is 0 exactly when pi is its own
    regularised best response, pi = softmax(log ref + P pi / tau): the regularised Nash equilibrium.
    """
    value = regularised_value(preference, pi, reference, tau)
    return _out(2.0 * (value + tau * np.asarray(kl(pi, reference)) - 0.5))


def best_response_win(preference: np.ndarray, pi: np.ndarray) -> float | np.ndarray:
    """Exploitability measure: the best pure response's win rate max_y P(y > pi), in [1/2, 1].

    Unregularised: 1/2 exactly at a Nash equilibrium of the plain preference game (a von Neumann
    winner; Dudik et al. 2015, "Contextual Dueling Bandits", arXiv 1502.06362); exploitability is
    this minus 1/2. Never below 1/2, since max_y P(y > pi) >= P(pi > pi) = 1/2.
    """
    return _out(win_rates(preference, pi).max(axis=-1))


def regularised_nash(
    preference: np.ndarray, reference: np.ndarray, tau: float, tolerance: float = 1e-13, max_iterations: int = 500_000
) -> np.ndarray:
    """The KL-regularised Nash equilibrium pi* = softmax(log pi_ref + P pi* / tau), to `tolerance`
    in max_y |pi(y) - BR(pi)(y)| (BR: `regularised_best_response`).

    Magnetic mirror descent (Sokota et al. 2023, arXiv 2206.05825, the MMD update) with magnet
    pi_ref, log pi_{k+1} = (log pi_k + a tau log ref + a P pi_k) / (1 + a tau) normalised, a = tau,
    brings the residual below 1e-6 (its fixed point is pi*); Newton's method on
    z - log ref - P softmax(z) / tau = c 1 (sum z = 0) then polishes it. RuntimeError if neither gets there.
    """
    n = len(reference)
    log_ref = _log(reference)
    step = min(tau, 1.0)

    def residual(pi: np.ndarray) -> float:
        return float(np.abs(pi - regularised_best_response(preference, pi, reference, tau)).max())

    log_pi = log_ref.copy()
    for _ in range(max_iterations):
        pi = np.exp(log_pi)
        if residual(pi) < 1e-6:
            break
        log_pi = (log_pi + step * tau * log_ref + step * win_rates(preference, pi)) / (1 + step * tau)
        log_pi = log_pi - _logsumexp(log_pi)
    z = log_pi - log_pi.mean()
    for _ in range(50):
        pi = softmax(z)
        if residual(pi) < tolerance:
            return pi
        g = z - log_ref - preference @ pi / tau
        jac = np.eye(n) - preference @ (np.diag(pi) - np.outer(pi, pi)) / tau
        system = np.block([[jac, -np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
        delta = np.linalg.solve(system, -np.concatenate([g - g.mean(), [z.sum()]]))
        z = z + delta[:n]
    raise RuntimeError(f"regularised_nash: residual {residual(softmax(z)):.1e} above {tolerance}")


def rotation_strengths(preference: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """[N] magnitudes omega of the eigenvalues (all imaginary) of J^1/2 ((P - P^T) / 2) J^1/2 at pi,
    J = diag(pi) - pi pi^T: how strongly the game rotates a policy near pi (0 for pure ties).

    Why: near a fixed point, P(y > pi) changes with pi as P J d(log pi), and P J = ((P - P^T) / 2) J
    because 1^T J = 0; that operator is similar to the skew-symmetric matrix above. Hard
    rock-paper-scissors near uniform: omega = sqrt(3) / 6 = 0.289.
    """
    jac = np.diag(pi) - np.outer(pi, pi)
    w, v = np.linalg.eigh(jac)
    half = v @ np.diag(np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return np.abs(np.linalg.eigvals(half @ ((preference - preference.T) / 2) @ half))


def population_rate(preference: np.ndarray, pi_star: np.ndarray, eta: float, ratio: float, weights: tuple[float, ...]) -> float:
    """Linear convergence factor per iteration of TD-MNPO's exact population update near pi_star.

    The update (learner/game_play.py `mnpo_population_step`, Wu et al. 2025, arXiv 2509.23102, eq. 17
    at its population minimiser) is log pi_{t+1} = r log ref + (1 - r) sum_j lambda_j log pi_{t+1-j}
    + P pi_t / eta + const. Linearised at pi_star, an error along an eigenvector of the rotation
    operator (eigenvalue i omega, `rotation_strengths`) evolves by the roots z of

        z^m = (1 - r) sum_j lambda_j z^(m-j) + (i omega / eta) z^(m-1);

    this returns the largest |z| over all omega (< 1: local linear convergence; > 1: no convergence).
    For m = 1 it is sqrt((1 - r)^2 + omega^2 / eta^2).
    """
    worst = 0.0
    lam = np.asarray(weights, dtype=np.float64)
    for omega in rotation_strengths(preference, pi_star):
        coefficients = np.concatenate([[1.0 + 0j], -(1 - ratio) * lam.astype(complex)])
        coefficients[1] -= 1j * omega / eta
        worst = max(worst, float(np.abs(np.roots(coefficients)).max()))
    return worst
