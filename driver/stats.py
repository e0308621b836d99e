"""Per-step statistics the driver computes from rollouts and judgements, and the progress line."""

from __future__ import annotations

import statistics

from protocols import BatchSummary, Judgement


def rollout_stats(
    summaries: list[BatchSummary], judgements: list[list[Judgement]], judge_weights: dict[str, float]
) -> dict[str, float]:
    """`rollout/*` and `judge/<name>/mean` metrics of one step, from its batches' summaries."""
    count = sum(s.rollouts for s in summaries)
    tokens = sum(s.response_tokens for s in summaries)
    out = {
        "rollout/samples": float(count),
        "rollout/response_tokens": float(tokens),
        "rollout/response_tokens_mean": tokens / count,
        "rollout/truncated_frac": sum(s.truncated for s in summaries) / count,
        "rollout/policy_version": float(summaries[0].policy_version),
    }
    combined = [0.0] * count
    total = 0.0
    for name, weight in judge_weights.items():
        rewards = [x for per_batch in judgements for j in per_batch if j.judge == name for x in (j.rewards or ())]
        if len(rewards) != count:
            continue  # pairwise-only judge: no scalar to summarise
        out[f"judge/{name}/mean"] = sum(rewards) / len(rewards)
        seconds = sum(j.seconds or 0.0 for per_batch in judgements for j in per_batch if j.judge == name)
        if seconds > 0:  # replicas work in parallel; this is the judge's own busy time per rollout
            out[f"judge/{name}/rollouts_per_s"] = count / seconds
        combined = [c + weight * x for c, x in zip(combined, rewards)]
        total += weight
    if total:
        combined = [c / total for c in combined]
        out["rollout/reward_mean"] = sum(combined) / len(combined)
        out["rollout/reward_std"] = statistics.pstdev(combined)
    return out


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def step_line(record: dict[str, float], total_steps: int, eta: float, latest_eval: float | None = None) -> str:
    """One readable progress line per step (`latest_eval`: the last held-out win rate, if any)."""
    parts = [f"step {int(record['step']) + 1}/{total_steps}"]
    if "rollout/reward_mean" in record:
        parts.append(f"reward {record['rollout/reward_mean']:.3f}±{record['rollout/reward_std']:.3f}")
    parts += [
        f"loss {record.get('learner/loss', float('nan')):.4f}",
        f"kl {record.get('learner/kl_to_reference', float('nan')):.3f}",
    ]
    if "learner/pairs" in record:  # pair family
        parts.append(f"pairs {int(record['learner/pairs'])}")
    if "learner/optimizer_steps" in record:  # sequence family: epochs x minibatches
        parts.append(f"updates {int(record['learner/optimizer_steps'])}")
    parts += [
        f"len {record['rollout/response_tokens_mean']:.1f}",
        f"{record.get('rollout/samples', 0.0) / record['time/step_seconds']:.0f} samples/s",
        f"{record['rollout/tokens_per_s']:.0f} tok/s",
        f"{record['time/step_seconds']:.2f}s/step",
    ]
    if latest_eval is not None:
        parts.append(f"eval win {latest_eval:.3f}")
    parts.append(f"ETA {_duration(eta)}")
    return " | ".join(parts)
