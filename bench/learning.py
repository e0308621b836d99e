"""Learning benchmark: train the embedded default with several algorithms/settings, same sample budget.

    python bench/learning.py                          # the algorithms table, 300 steps each
    python bench/learning.py --suite mnpo             # the MNPO settings table
    python bench/learning.py --suite smollm2          # SmolLM2-135M-Instruct on the instruction task, LoRA
    python bench/learning.py --suite nash             # cyclic judge population, round robin (bench/nash_lm.py)
    python bench/learning.py --steps 100 --only ppo dpo

Each variant is a full `python -m driver` run (its own local Ray cluster) with `--set` overrides;
the table printed at the end (markdown) gives the held-out win rate against the starting policy
with its 95% CI, the ground-truth reward before/after, wall time and samples/s. Not a test: it
takes minutes. Results go in BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cpu import CPUMeter  # noqa: E402
from bench.workloads import WORKLOADS  # noqa: E402

# name -> (algo, --set overrides). Every run samples the same prompts x samples per step.
SUITES: dict[str, dict[str, tuple[str, list[str]]]] = {
    "algorithms": {
        "ppo": ("ppo", []),
        "osp": ("osp", []),  # judges: deploy/judges/self.yaml (the policy judges itself)
        "mnpo": ("mnpo", []),
        "dpo": ("dpo", []),
        "grpo": ("grpo", []),
    },
    # SmolLM2-135M-Instruct on the instruction task, LoRA (see SUITE_BASE); same sample budget each.
    "smollm2": {
        "mnpo": ("mnpo", []),
        "dpo": ("dpo", []),
        "grpo": ("grpo", []),
        # the policy judges itself (deploy/judges/self-sharp.yaml's judge, on 2 threads); the task's
        # ground truth rides along at weight 1e-6, only so that the run logs the reward it reaches
        "osp": ("osp", ["--judges={OUT}/osp-judges.yaml"]),
    },
    "mnpo": {
        "default": ("mnpo", []),  # eta 0.5, ratio 1/3, 2 opponents, mean logprobs
        "reference-eta": ("mnpo", ["mnpo.eta=0.0075"]),  # the reference code's eta (target 66.7 per token)
        "sum-logprobs": ("mnpo", ["mnpo.logprob_reduction=sum", "mnpo.eta=0.1"]),  # target 5 nats
        "inpo": ("mnpo", ["mnpo.num_opponents=1"]),  # one opponent: INPO
    },
}


# Flags and overrides every variant of a suite shares.
SUITE_BASE: dict[str, list[str]] = {
    "smollm2": [*WORKLOADS["smollm2"], "--set", "eval.num_prompts=128", "--set", "eval.every=0", "--set", "checkpoint.every=0"],
}
DEFAULT_STEPS = {"smollm2": 12}
# Files a suite's variants refer to as {OUT}/NAME, written into the output directory first.
SUITE_FILES: dict[str, dict[str, str]] = {
    "smollm2": {
        "osp-judges.yaml": (
            "judges:\n"
            "  - {name: self, kind: self, batch_size: 32, chat_template: auto, verdict_temperature: 0.05,\n"
            "     orders: logit_difference, num_cpus: 2}\n"
            "  - {name: ground-truth, kind: rule, function: 'rollout.tasks.instruct:ground_truth', weight: 1.0e-6}\n"
        ),
    },
}


def run_variant(name: str, algo: str, sets: list[str], steps: int, out_root: Path, base: list[str]) -> dict:
    out = out_root / name
    cmd = [sys.executable, "-m", "driver", "--algo", algo, "--steps", str(steps), "--output", str(out), *base]
    for item in sets:  # a driver flag ("--judges=FILE") or a config override ("learner.lr=1e-5")
        cmd += [item] if item.startswith("--") else ["--set", item]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"variant {name} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    samples = sum(r.get("rollout/samples", 0.0) for r in records)
    train_seconds = sum(r.get("time/step_seconds", 0.0) for r in records)
    ev = summary["final_eval"]
    return {
        "name": name,
        "algo": algo,
        "sets": " ".join(sets) or "(defaults)",
        "win": ev["vs_start"]["win_rate"],
        "lo": ev["vs_start"]["ci_low"],
        "hi": ev["vs_start"]["ci_high"],
        "r0": ev["start_mean_reward"],
        "r1": ev["mean_reward"],
        "wall": wall,
        "samples_per_s": samples / train_seconds,
        "final_kl": records[-2].get("learner/kl_to_reference", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="steps per run (default 300; smollm2: 12)")
    parser.add_argument("--suite", choices=sorted([*SUITES, "nash"]), default="algorithms")
    parser.add_argument("--only", nargs="*", help="variants of the suite to run (default all)")
    parser.add_argument("--out", type=Path, help="keep each run in OUT/VARIANT (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="with --out: keep variants that finished (bench.json)")
    args, extra = parser.parse_known_args()
    if args.suite == "nash":  # a fitted reward model, five runs and a round-robin tournament: bench/nash_lm.py
        from bench import nash_lm

        nash_lm.main(
            [*(["--steps", str(args.steps)] if args.steps else []), *(["--only", *args.only] if args.only else []), *extra]
        )
        return
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    suite = SUITES[args.suite]
    names = args.only or list(suite)
    unknown = sorted(set(names) - set(suite))
    if unknown:
        parser.error(f"unknown variants {unknown} for suite {args.suite!r}; valid: {list(suite)}")
    rows = []
    meter = CPUMeter()
    meter.start()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out.resolve() if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name, text in SUITE_FILES.get(args.suite, {}).items():
            (root / name).write_text(text)
        for name in names:
            algo, sets = suite[name]
            sets = [item.replace("{OUT}", str(root)) for item in sets]
            steps = args.steps or DEFAULT_STEPS.get(args.suite, 300)
            row_file = root / name / "bench.json"
            if args.reuse and row_file.is_file():
                rows.append(json.loads(row_file.read_text()))
                sys.stderr.write(f"{name}: reusing {root / name}\n")
                continue
            if (root / name).exists():
                shutil.rmtree(root / name)  # the driver never reuses a run directory
            cpu0 = meter.seconds()
            row = run_variant(name, algo, sets, steps, root, SUITE_BASE.get(args.suite, []))
            row["sets"] = row["sets"].replace(str(root), "OUT")  # no machine paths in the table
            rows.append({**row, "cpu": meter.seconds() - cpu0, "steps": steps})
            row_file.write_text(json.dumps(rows[-1], indent=2))
            sys.stderr.write(
                f"{name}: win rate {row['win']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}], "
                f"wall {row['wall']:.0f} s, CPU {rows[-1]['cpu']:.0f} s\n"
            )
    out = [
        "| variant | algo | overrides | win rate vs start [95% CI] | reward start -> end | KL at end | wall s "
        "| CPU min | samples/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['name']} | {r['algo']} | `{r['sets']}` | {r['win']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] | "
            f"{r['r0']:.3f} -> {r['r1']:.3f} | {r['final_kl']:.2f} | {r['wall']:.0f} | "
            f"{r['cpu'] / 60:.1f} | {r['samples_per_s']:.0f} |"
        )
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
