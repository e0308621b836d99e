"""What the judges said about a batch, as per-rollout rewards and per-group preference matrices.

Used by the pairing rules (learner/pairing.py) and the sequence step's per-sample scores
(learner/sequence_step.py). Pure functions of plain Python data; no torch.

Conventions (protocols/batches.py): rewards are "higher is better"; P(i > j) in [0, 1] is the
probability that rollout i is preferred over rollout j, > 0.5 favours i.

- `combined_rewards`: per rollout, the weighted mean reward over the judges that gave rewards.
- `preference_matrix`: per group of K samples, P[i][j] = weighted mean over the judges that judged
  (i, j) of their P(i > j). A judge's own P(i > j) is the mean of its `PairPreference`s for that
  pair (either order: P(j > i) = p counts as P(i > j) = 1 - p); for a pair it did not compare, a
  judge that gave rewards judges it by Bradley-Terry on its rewards with its manifest temperature.
  So a judge that gave both speaks once per pair, and its direct comparison wins.
- `win_probabilities`: per rollout, the mean of P[i][j] over the other samples j of its group:
  SPPO's estimate of P(y > pi_t), OSP's ranking score.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.batches import JudgedBatch, Judgement
from protocols.preference import bradley_terry

Matrix = list[list[float | None]]  # [K][K]; None where no judge compared the pair, and on the diagonal


def has_rewards(judged: JudgedBatch) -> bool:
    """True when every judge gave scalar rewards (the reward-scored rules then behave as before)."""
    return all(j.rewards is not None for j in judged.judgements)


def judge_weight(judge_weights: Mapping[str, float], judgement: Judgement) -> float:
    """The manifest weight of the judge of `judgement`; ValueError naming the judge if missing or <= 0."""
    if judgement.judge not in judge_weights:
        gave = "rewards" if judgement.rewards is not None else "preferences"
        raise ValueError(f"judge {judgement.judge!r} gave {gave} but has no weight; weights given for {sorted(judge_weights)}")
    w = judge_weights[judgement.judge]
    if not w > 0.0:
        raise ValueError(f"judge {judgement.judge!r} has weight {w}; weights must be > 0")
    return w


def judge_temperature(judge_temperatures: Mapping[str, float], judge: str) -> float:
    """The judge's Bradley-Terry temperature (1.0 when the mapping lacks it); ValueError if < 0."""
    t = judge_temperatures.get(judge, 1.0)
    if not t >= 0.0:
        raise ValueError(f"judge {judge!r} has Bradley-Terry temperature {t}; it must be >= 0")
    return t


def combined_rewards(judged: JudgedBatch, judge_weights: Mapping[str, float]) -> list[float]:
    """Weighted mean reward per rollout over the judges that gave scalar rewards.

    Args:
        judged: the batch and its judgements.
        judge_weights: judge name -> weight > 0 (`JudgeSpec.weight` from the manifest). Judges that
            gave only preferences are ignored here and need no weight.

    Returns:
        One float per rollout, in batch order: sum_j w_j r_j / sum_j w_j.

    Raises:
        ValueError: no judge gave rewards, or a rewarding judge has no (or a non-positive) weight.
        (JudgedBatch itself refuses two judgements with one judge name.)
    """
    names = [j.judge for j in judged.judgements]
    rewarding = [j for j in judged.judgements if j.rewards is not None]
    if not rewarding:
        raise ValueError(f"no judge gave scalar rewards (judges: {names}); reward-based pairing needs at least one")
    weights = [judge_weight(judge_weights, j) for j in rewarding]
    total = sum(weights)
    n = len(judged.batch.rollouts)
    rewards = [j.rewards for j in rewarding if j.rewards is not None]  # all of them: for the type checker
    return [sum(w * r[i] for w, r in zip(weights, rewards)) / total for i in range(n)]


def judge_matrices(judged: JudgedBatch, judgement: Judgement, temperature: float) -> list[Matrix]:
    """One judge's K x K matrix P(i > j) per group (indices within the group); see the module doc."""
    k = judged.batch.samples_per_prompt
    num_groups = len(judged.batch.rollouts) // k
    sums = [[[0.0] * k for _ in range(k)] for _ in range(num_groups)]
    counts = [[[0] * k for _ in range(k)] for _ in range(num_groups)]
    for p in judgement.preferences or ():  # JudgedBatch checked: both indices in one group
        g, a, b = p.first // k, p.first % k, p.second % k
        sums[g][a][b] += p.probability
        sums[g][b][a] += 1.0 - p.probability
        counts[g][a][b] += 1
        counts[g][b][a] += 1
    matrices = []
    for g in range(num_groups):
        r = judgement.rewards[g * k : (g + 1) * k] if judgement.rewards is not None else None
        m: Matrix = [[None] * k for _ in range(k)]
        for a in range(k):
            for b in range(k):
                if a == b:
                    continue
                if counts[g][a][b]:
                    m[a][b] = sums[g][a][b] / counts[g][a][b]
                elif r is not None:
                    m[a][b] = bradley_terry(r[a], r[b], temperature)
        matrices.append(m)
    return matrices


def preference_matrix(
    judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]
) -> list[Matrix]:
    """One K x K matrix per group: P[i][j] = weighted mean over the judges that judged (i, j) of P(i > j).

    Args:
        judged: the batch and its judgements (rewards and/or preferences).
        judge_weights: judge name -> weight > 0; every judge in `judged` needs one.
        judge_temperatures: judge name -> Bradley-Terry temperature >= 0 for its rewards (1.0 if absent).

    Returns:
        `[num_groups][K][K]`, indices within the group; None on the diagonal and where no judge
        compared the pair. P[i][j] + P[j][i] = 1 wherever both are set.

    Raises:
        ValueError: a judge has no (or a non-positive) weight, or a negative temperature.
    """
    k = judged.batch.samples_per_prompt
    weighted = [
        (judge_weight(judge_weights, j), judge_matrices(judged, j, judge_temperature(judge_temperatures, j.judge)))
        for j in judged.judgements
    ]
    out = []
    for g in range(len(judged.batch.rollouts) // k):
        m: Matrix = [[None] * k for _ in range(k)]
        for a in range(k):
            for b in range(k):
                said = [(w, p) for w, per_group in weighted if (p := per_group[g][a][b]) is not None]
                if said:
                    m[a][b] = sum(w * p for w, p in said) / sum(w for w, _ in said)
        out.append(m)
    return out


def win_rates(matrix: Matrix) -> list[float]:
    """Per sample i of one group: mean of matrix[i][j] over the j != i that were judged; 0.5 if none."""
    rates = []
    for row in matrix:
        judged = [p for p in row if p is not None]
        rates.append(sum(judged) / len(judged) if judged else 0.5)
    return rates


def win_probabilities(
    judged: JudgedBatch, judge_weights: Mapping[str, float], judge_temperatures: Mapping[str, float]
) -> list[float]:
    """Per rollout, in batch order: its mean P(i > j) against the other samples of its group.

    SPPO's estimate of P(y > pi_t) (the K samples stand in for pi_t); 0.5 for a rollout that no
    judge compared with anything. Arguments as in `preference_matrix`.
    """
    return [p for m in preference_matrix(judged, judge_weights, judge_temperatures) for p in win_rates(m)]
