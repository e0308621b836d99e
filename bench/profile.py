"""Where a step's time goes, per algorithm, strictly on-policy and with one batch sampled ahead.

    python bench/profile.py                              # mnpo dpo grpo ppo, embedded default, 30 steps
    python bench/profile.py --algos grpo --steps 20 -- --model builtin:smollm2-135m-instruct --task instruct

Each (algorithm, max_staleness) is one `python -m driver` run; the table averages its metrics over
the steps after the first (which pays compilation and warm-up): the step, the driver's waits on
sampling, judging, the learner and the weight sync (time/*_wait), the learner's own forward,
backward, optimizer and no-grad seconds (learner/time/*), and the driver's own bookkeeping (the
rest). With max_staleness 1 the next batch is sampled while the learner trains, so the step should
approach max(sampling, learning) rather than their sum; `step / max` says how close it gets.
Arguments after `--` go to every driver run. Not a test; record results in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WAITS = ["time/rollout_wait", "time/judge_wait", "time/learner_wait", "time/sync_wait"]
LEARNER = ["learner/time/forward", "learner/time/backward", "learner/time/optimizer", "learner/time/no_grad_pass"]
SYNC = ["sync/export_seconds", "sync/seconds"]  # the learner's gather + probe; the slowest receiver's load + probe check


def profile(algo: str, staleness: int, steps: int, out: Path, extra: list[str]) -> dict[str, float]:
    """Mean seconds per step (after the first) of one run."""
    run = out / f"{algo}-staleness{staleness}"
    cmd = [
        sys.executable,
        "-m",
        "driver",
        "--algo",
        algo,
        "--steps",
        str(steps),
        "--output",
        str(run),
        "--set",
        f"rollout.max_staleness={staleness}",
        "--set",
        "eval.every=0",
        "--set",
        "checkpoint.every=0",
        *extra,
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{algo} (max_staleness {staleness}) failed:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps_ = [r for r in records if "time/step_seconds" in r][1:]
    if not steps_:
        raise RuntimeError(f"{algo}: no step after the first to average (use --steps >= 2)")
    keys = ["time/step_seconds", *WAITS, *LEARNER, *SYNC]
    mean = {key: sum(r.get(key, 0.0) for r in steps_) / len(steps_) for key in keys}
    mean["driver"] = mean["time/step_seconds"] - sum(mean[w] for w in WAITS)
    # what each stage costs by itself: sampling (the rollout wait when nothing overlaps it) vs learning
    mean["samples_per_s"] = sum(r.get("rollout/samples", 0.0) for r in steps_) / sum(r["time/step_seconds"] for r in steps_)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["mnpo", "dpo", "grpo", "ppo"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--staleness", nargs="+", type=int, default=[0, 1], help="rollout.max_staleness values")
    args, extra = parser.parse_known_args()
    extra = [x for x in extra if x != "--"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo in args.algos:
            for staleness in args.staleness:
                m = profile(algo, staleness, args.steps, Path(tmp), extra)
                rows.append((algo, staleness, m))
                sys.stderr.write(f"{algo} max_staleness {staleness}: {m['time/step_seconds']:.3f} s/step\n")
    lines = [
        "| algo | max_staleness | step s | sampling wait | judging wait | learner wait (fwd / bwd / opt / no-grad) "
        "| sync wait | sync export / load | export share | driver | samples/s | step / max(stages) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    on_policy = {algo: m for algo, staleness, m in rows if staleness == 0}
    for algo, staleness, m in rows:
        learner = " / ".join(f"{m[k]:.3f}" for k in LEARNER)
        base = on_policy.get(algo)  # with nothing overlapped, its waits are each stage's own time
        stages = (
            max(base["time/rollout_wait"] + base["time/judge_wait"], base["time/learner_wait"] + base["time/sync_wait"])
            if base
            else None
        )
        ratio = f"{m['time/step_seconds'] / stages:.2f}" if stages and staleness > 0 else "-"
        lines.append(
            f"| {algo} | {staleness} | {m['time/step_seconds']:.3f} | {m['time/rollout_wait']:.3f} | "
            f"{m['time/judge_wait']:.3f} | {m['time/learner_wait']:.3f} ({learner}) | {m['time/sync_wait']:.3f} | "
            f"{m['sync/export_seconds']:.3f} / {m['sync/seconds']:.3f} | "
            f"{m['sync/export_seconds'] / m['time/step_seconds']:.1%} | {m['driver']:.3f} | {m['samples_per_s']:.0f} | {ratio} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
