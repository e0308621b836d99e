"""Soak test of fault recovery: a long run on the embedded default with many actor kills on a
seeded schedule, against the same run uninterrupted.

    python bench/soak.py [--steps 60] [--kills 20] [--seed 0] [--staleness 1] [--out runs/soak]

Both runs use the same seed and settings; the faulted one gets `reliability.kill_schedule` with
`--kills` entries at distinct random steps, each a random one of the rollout worker, the training
judge and the learner (SIGKILL of the actor's process, driver/faults.py), and enough
`reliability.max_restarts`. It reports whether every step was recorded exactly once with the
uninterrupted run's values (rewards, losses, KL, versions), whether samples.jsonl and the final
weights are identical, the recoveries by kind and the time they cost (faults.jsonl, and the
wall-clock difference). Exit status 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACTORS = ("rollout-0", "judge-ground-truth-0", "learner-0")
SETTINGS = [
    "checkpoint.every=5",
    "mnpo.snapshot_every=5",
    "eval.every=0",
    "eval.num_prompts=16",
    "rollout.prompts_per_step=16",
    "tracking.plots=false",
    "tracking.tensorboard=false",
]
COMPARED = (
    "rollout/reward_mean",
    "rollout/response_tokens",
    "learner/loss",
    "learner/kl_to_reference",
    "learner/policy_version",
    "learner/staleness",
)


def schedule(steps: int, kills: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    at = sorted(rng.sample(range(1, steps - 1), kills))
    return [f"{step}:{rng.choice(ACTORS)}" for step in at]


def run(out: Path, steps: int, staleness: int, extra: list[str]) -> float:
    args = [sys.executable, "-m", "driver", "--algo", "mnpo", "--steps", str(steps), "--output", str(out)]
    for item in [*SETTINGS, f"rollout.max_staleness={staleness}", *extra]:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    began = time.perf_counter()
    with (out.parent / f"{out.name}.log").open("w") as log:
        code = subprocess.run(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=7200).returncode
    if code != 0:
        raise SystemExit(f"soak: {out} exited {code}; see {out.parent / f'{out.name}.log'}")
    return time.perf_counter() - began


def records(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "learner/loss" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--staleness", type=int, default=1, help="rollout.max_staleness of both runs")
    parser.add_argument("--out", default="runs/soak")
    args = parser.parse_args()
    if args.kills > args.steps - 2:
        parser.error("--kills must be at most --steps - 2 (one kill per step, not at the first or last)")
    import torch
    from safetensors.torch import load_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    whole, faulted = out / "whole", out / "faulted"
    kills = schedule(args.steps, args.kills, args.seed)
    print(f"kill schedule ({len(kills)}): {kills}", flush=True)
    seconds_whole = run(whole, args.steps, args.staleness, [])
    print(f"uninterrupted: {seconds_whole:.0f}s", flush=True)
    seconds_faulted = run(
        faulted,
        args.steps,
        args.staleness,
        [f"reliability.kill_schedule=[{','.join(kills)}]", f"reliability.max_restarts={len(kills)}"],
    )
    print(f"faulted: {seconds_faulted:.0f}s", flush=True)

    a, b = records(whole), records(faulted)
    steps_b = [r["step"] for r in b]
    lost = sorted(set(range(args.steps)) - set(steps_b))
    duplicated = sorted({s for s in steps_b if steps_b.count(s) > 1})
    differing = [ra["step"] for ra, rb in zip(a, b) if any(ra[k] != rb[k] for k in COMPARED)]
    same_samples = (whole / "samples.jsonl").read_text() == (faulted / "samples.jsonl").read_text()
    wa, wb = load_file(whole / "final" / "model.safetensors"), load_file(faulted / "final" / "model.safetensors")
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    events = [json.loads(line) for line in (faulted / "faults.jsonl").read_text().splitlines()]
    # an actor killed again before the loop met its first death is dead already: nothing to kill
    skipped = (out / "faulted.log").read_text().count("is already dead at step")
    by_kind = {kind: sum(e["kind"] == kind for e in events) for kind in ("rollout", "judge", "learner")}
    recovery = {kind: sum(e["seconds"] for e in events if e["kind"] == kind) for kind in by_kind}
    result = {
        "steps": args.steps,
        "staleness": args.staleness,
        "kills": len(kills),
        "kills_of_an_actor_dead_already": skipped,
        "recoveries": len(events),
        "by_kind": by_kind,
        "recovery_seconds": {k: round(v, 1) for k, v in recovery.items()},
        "lost_steps": lost,
        "duplicated_steps": duplicated,
        "steps_differing": differing,
        "samples_identical": same_samples,
        "final_weights_identical": same_weights,
        "seconds_uninterrupted": round(seconds_whole, 1),
        "seconds_faulted": round(seconds_faulted, 1),
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    ok = len(events) == len(kills) - skipped and not lost and not duplicated and not differing and same_samples and same_weights
    print(
        f"| {args.steps} | {args.staleness} | {len(kills)} ({by_kind['rollout']} rollout, {by_kind['judge']} judge, "
        f"{by_kind['learner']} learner) | {len(lost)} / {len(duplicated)} | {'yes' if same_samples else 'NO'} | "
        f"{'yes' if same_weights else 'NO'} | {seconds_whole:.0f} | {seconds_faulted:.0f} | "
        f"{sum(recovery.values()):.0f} |"
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
