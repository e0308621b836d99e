"""Turn a judged batch into (chosen, rejected) pairs for the preference losses.

A pairing rule is a function `(judged, judge_weights, judge_temperatures) -> list[Pair]`,
registered by name in `PAIRINGS`; a pair-family algorithm's config names its rule in its `pairing`
field (learner/algorithms/base.py `pairing_field`). Rewards, preference matrices and win
probabilities come from learner/preferences.py.

Groups are the K contiguous rollouts of a prompt; every rule works group by group, skips a group
that carries no signal (so the result may be shorter than the number of prompts, or empty), and
is deterministic: ties go to the lower index.

Scores: a rule that ranks samples uses the combined reward (weighted mean over the judges, weights
from the judge manifest) when every judge gave rewards, and otherwise each sample's win probability
against its group (`win_probabilities`), which also covers judges that only compare pairs.

Probability fallback (ours, documented here): where no judge compared the two samples of a pair
(e.g. "adjacent" comparisons), P(chosen > rejected) = clip(0.5 + (s_chosen - s_rejected) / 2, 0, 1)
with s the win probabilities: a linear stand-in for Bradley-Terry on the win-rate gap.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from learner.preferences import (
    Matrix,
    combined_rewards,
    has_rewards,
    judge_matrices,
    judge_temperature,
    preference_matrix,
    win_probabilities,
    win_rates,
)
from protocols.arrays import fields_equal
from protocols.batches import JudgedBatch, Rollout
from protocols.preference import bradley_terry

__all__ = [
    "PAIRINGS",
    "Pair",
    "PairingFn",
    "all_pairs",
    "best_vs_worst",
    "combined_rewards",
    "get_pairing",
    "has_rewards",
    "per_judge",
    "preference_matrix",
    "ranked",
    "sampled",
    "win_probabilities",
]


@dataclass(frozen=True, eq=False)
class Pair:
    """Two responses to one prompt, ordered by the judges.

    Attributes:
        prompt_token_ids: prompt tokens (shared by both responses). The token fields are the
            rollouts' own read-only int32 arrays, not copies; equality compares them by value.
        chosen_token_ids: response tokens of y_w (EOS included if sampled).
        rejected_token_ids: response tokens of the other response y_l.
        chosen_reward: judged reward of y_w: the combined reward (per_judge: the labelling judge's
            reward); its win probability in its group where no judge gave rewards.
        rejected_reward: the same for y_l.
        probability: P(chosen preferred over rejected) in [0, 1]; 1.0 for a hard comparison. Below
            0.5 only where the rule orders by something else than this pair's own judgement (ranked
            on non-transitive preferences).
        policy_version: weight version that sampled both responses.
    """

    prompt_token_ids: np.ndarray
    chosen_token_ids: np.ndarray
    rejected_token_ids: np.ndarray
    chosen_reward: float
    rejected_reward: float
    probability: float
    policy_version: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pair):
            return NotImplemented
        return fields_equal(self.__dict__, other.__dict__)


# (judged, judge_weights: name -> manifest weight > 0, judge_temperatures: name -> BT temperature)
PairingFn = Callable[[JudgedBatch, Mapping[str, float], Mapping[str, float]], list[Pair]]


def _pair(group: Sequence[Rollout], chosen: int, rejected: int, values: Sequence[float], probability: float) -> Pair:
    c, r = group[chosen], group[rejected]
    if not np.array_equal(c.prompt_token_ids, r.prompt_token_ids):
        raise ValueError(f"prompt {c.prompt_id!r}: its rollouts carry different prompt_token_ids")
    return Pair(
        prompt_token_ids=c.prompt_token_ids,
        chosen_token_ids=c.response_token_ids,
        rejected_token_ids=r.response_token_ids,
        chosen_reward=values[chosen],
        rejected_reward=values[rejected],
        probability=probability,
        policy_version=c.policy_version,
    )


def _extremes(scores: Sequence[float]) -> tuple[int, int] | None:
    """(best, worst) index, the lower index winning ties; None when all scores are equal."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return None if scores[best] == scores[worst] else (best, worst)


def _probability(matrix: Matrix, chosen: int, rejected: int, rates: Sequence[float]) -> float:
    """matrix[chosen][rejected], or the win-rate fallback of the module docstring where unjudged."""
    p = matrix[chosen][rejected]
    return p if p is not None else min(1.0, max(0.0, 0.5 + (rates[chosen] - rates[rejected]) / 2))


def _split(values: Sequence[float], k: int) -> list[list[float]]:
    return [list(values[i : i + k]) for i in range(0, len(values), k)]


def _values(judged: JudgedBatch, judge_weights: Mapping[str, float], matrices: list[Matrix]) -> list[list[float]]:
    """Per group, what Pair.chosen_reward/rejected_reward carry: combined rewards, else win rates."""
    if any(j.rewards is not None for j in judged.judgements):
        return _split(combined_rewards(judged, judge_weights), judged.batch.samples_per_prompt)
    return [win_rates(m) for m in matrices]


def best_vs_worst(judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]) -> list[Pair]:
    """One pair per prompt: the best-scored sample (chosen) vs the worst (rejected).

    When every judge gave rewards: scores are combined rewards and `probability` is 1.0 (a hard
    comparison, as in the MNPO reference code); temperatures are unused. Otherwise scores are win
    probabilities and `probability` is P[chosen][rejected]. Equal best and worst scores: skipped.
    """
    k = judged.batch.samples_per_prompt
    matrices = None if has_rewards(judged) else preference_matrix(judged, judge_weights, judge_temperatures)
    if matrices is None:
        scores = values = _split(combined_rewards(judged, judge_weights), k)
    else:
        scores, values = [win_rates(m) for m in matrices], _values(judged, judge_weights, matrices)
    pairs = []
    for g, group in enumerate(judged.batch.groups()):
        picked = _extremes(scores[g])
        if picked is None:
            continue
        best, worst = picked
        p = 1.0 if matrices is None else _probability(matrices[g], best, worst, scores[g])
        pairs.append(_pair(group, best, worst, values[g], p))
    return pairs


def ranked(judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]) -> list[Pair]:
    """OSP's ranked pairing: floor(K/2) pairs per prompt, rank 1 vs rank K, 2 vs K-1, ...

    Samples are ranked by win probability (descending; ties: lower index first); the higher-ranked
    sample is chosen and `probability` = P[chosen][rejected] (the fallback where unjudged), which
    may be < 0.5 under non-transitive preferences. A pair with probability exactly 0.5 and equal
    scores carries no signal and is skipped.
    """
    matrices = preference_matrix(judged, judge_weights, judge_temperatures)
    values = _values(judged, judge_weights, matrices)
    k = judged.batch.samples_per_prompt
    pairs = []
    for g, group in enumerate(judged.batch.groups()):
        rates = win_rates(matrices[g])
        order = sorted(range(k), key=lambda i: (-rates[i], i))
        for a in range(k // 2):
            chosen, rejected = order[a], order[k - 1 - a]
            p = _probability(matrices[g], chosen, rejected, rates)
            if p == 0.5 and rates[chosen] == rates[rejected]:
                continue
            pairs.append(_pair(group, chosen, rejected, values[g], p))
    return pairs


def all_pairs(judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]) -> list[Pair]:
    """Every judged pair i < j of a group whose P[i][j] is not 0.5, oriented so probability >= 0.5.

    Order: group by group, then (i, j) lexicographically. Unjudged pairs (None) are skipped.
    """
    matrices = preference_matrix(judged, judge_weights, judge_temperatures)
    values = _values(judged, judge_weights, matrices)
    k = judged.batch.samples_per_prompt
    pairs = []
    for g, group in enumerate(judged.batch.groups()):
        m = matrices[g]
        for i in range(k):
            for j in range(i + 1, k):
                p = m[i][j]
                if p is None or p == 0.5:
                    continue
                chosen, rejected = (i, j) if p > 0.5 else (j, i)
                q = p if chosen == i else m[j][i]
                pairs.append(_pair(group, chosen, rejected, values[g], 1.0 - p if q is None else q))
    return pairs


def _seed(prompt_id: str, policy_version: int) -> int:
    """A stable 64-bit seed (sha256, not the salted built-in hash) so draws survive restarts."""
    digest = hashlib.sha256(f"{prompt_id}\x00{policy_version}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sampled(judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]) -> list[Pair]:
    """MNPO as in the paper: best vs worst, the order drawn with probability P(best > worst).

    Best and worst as in `best_vs_worst` (combined rewards when every judge gave rewards, else win
    probabilities); with p = P[best][worst], the pair is (best, worst, p) with probability p and
    (worst, best, 1 - p) otherwise. The draw uses `random.Random` seeded from sha256 of
    (prompt_id, policy_version): deterministic and resumable (a prompt repeated in one batch with
    one version draws the same way).
    """
    matrices = preference_matrix(judged, judge_weights, judge_temperatures)
    values = _values(judged, judge_weights, matrices)
    k = judged.batch.samples_per_prompt
    rates = [win_rates(m) for m in matrices]
    scores = _split(combined_rewards(judged, judge_weights), k) if has_rewards(judged) else rates
    pairs = []
    for g, group in enumerate(judged.batch.groups()):
        picked = _extremes(scores[g])
        if picked is None:
            continue
        best, worst = picked
        p = _probability(matrices[g], best, worst, rates[g])
        draw = random.Random(_seed(group[0].prompt_id, group[0].policy_version)).random()
        if draw < p:
            pairs.append(_pair(group, best, worst, values[g], p))
        else:
            pairs.append(_pair(group, worst, best, values[g], 1.0 - p))
    return pairs


def per_judge(judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]) -> list[Pair]:
    """HT-MNPO: each group labelled by one judge alone, judges taking turns.

    With n judges in the order of `judged.judgements`, group g (index within this batch) is labelled
    by judge g % n: best vs worst by its rewards and probability = bradley_terry(r_c, r_r, its
    temperature); a judge without rewards ranks by its own win probabilities and gives its own
    P[chosen][rejected]. Ties are skipped. Weights are not used (each player has its own judge);
    `chosen_reward`/`rejected_reward` are the labelling judge's scores.
    """
    judgements = judged.judgements
    k = judged.batch.samples_per_prompt
    own: dict[int, list[Matrix]] = {}  # judge index -> its matrices, built when first needed
    pairs = []
    for g, group in enumerate(judged.batch.groups()):
        index = g % len(judgements)
        judgement = judgements[index]
        temperature = judge_temperature(judge_temperatures, judgement.judge)
        if judgement.rewards is not None:
            scores = list(judgement.rewards[g * k : (g + 1) * k])
            picked = _extremes(scores)
            if picked is None:
                continue
            p = bradley_terry(scores[picked[0]], scores[picked[1]], temperature)
        else:
            if index not in own:
                own[index] = judge_matrices(judged, judgement, temperature)
            scores = win_rates(own[index][g])
            picked = _extremes(scores)
            if picked is None:
                continue
            p = _probability(own[index][g], picked[0], picked[1], scores)
        pairs.append(_pair(group, picked[0], picked[1], scores, p))
    return pairs


PAIRINGS: dict[str, PairingFn] = {
    "best_vs_worst": best_vs_worst,
    "ranked": ranked,
    "all_pairs": all_pairs,
    "sampled": sampled,
    "per_judge": per_judge,
}


def get_pairing(name: str) -> PairingFn:
    """The pairing rule registered as `name`; ValueError listing the valid names otherwise."""
    try:
        return PAIRINGS[name]
    except KeyError:
        raise ValueError(f"unknown pairing {name!r}; valid: {', '.join(sorted(PAIRINGS))}") from None
