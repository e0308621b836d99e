"""Generation alone: the project's vLLM sampler against HF `model.generate` on the same model and prompts.

    python bench/generation.py                                   # SmolLM2-135M-Instruct, instruct task
    python bench/generation.py --model builtin:policy --task wordlist --prompts 32 --samples 4 --max-tokens 24 --max-model-len 256

The stage TRL's trainers run in process (HF `generate`) against the one the project's rollout
worker runs (`rollout.sampler.VLLMSampler`, vLLM's CPU build), each in its own process with the
thread count the project gives a rollout worker of `num_cpus: 1` (OMP_NUM_THREADS=1) and, for HF,
also torch's default. Same model (float32), prompt token ids (through the chat template when the
model has one), samples per prompt, temperature 1, top-p 1 and max new tokens. Each process warms
up with one round, then times `--rounds` rounds; prints a markdown table of completions/s and
generated tokens/s. Not a test; record results in BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/ itself off the path (run as a script it is sys.path[0]): bench/profile.py would shadow the standard library's profile.
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]


def prompts_and_model(args) -> tuple[str, list]:
    from driver.builtin import resolve_model_path
    from protocols import TaskConfig
    from rollout.tasks import load_task

    task = load_task(TaskConfig(name=args.task))
    return resolve_model_path(args.model), list(task.train[: args.prompts])


def run_vllm(args) -> dict:
    from protocols import PromptBatch, RolloutConfig
    from rollout.sampler import VLLMSampler

    path, prompts = prompts_and_model(args)
    cfg = RolloutConfig(max_response_tokens=args.max_tokens, temperature=1.0, top_p=1.0, max_model_len=args.max_model_len)
    sampler = VLLMSampler(path, cfg, dtype="float32", seed=args.seed, name="bench")
    batch = PromptBatch(step=0, prompts=tuple(prompts), samples_per_prompt=args.samples)
    sampler.generate(batch, seed=args.seed)  # warm-up
    start, tokens, completions = time.perf_counter(), 0, 0
    for r in range(args.rounds):
        out = sampler.generate(batch, seed=args.seed + 1 + r)
        tokens += sum(len(x.response_token_ids) for x in out.rollouts)
        completions += len(out.rollouts)
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "completions": completions}


def run_hf(args) -> dict:
    from bench.hf_sampling import HFSampler

    path, prompts = prompts_and_model(args)
    sampler = HFSampler(path, [p.text for p in prompts])

    def one_round(seed: int) -> tuple[int, int]:
        rows = sampler(seed, args.samples, args.max_tokens)
        return sum(map(len, rows)), len(rows)  # generated tokens up to and including the first EOS

    one_round(args.seed)  # warm-up
    start, tokens, completions = time.perf_counter(), 0, 0
    for r in range(args.rounds):
        t, c = one_round(args.seed + 1 + r)
        tokens, completions = tokens + t, completions + c
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "completions": completions}


def child(args) -> None:
    result = run_vllm(args) if args.engine == "vllm" else run_hf(args)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--task", default="instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["vllm", "hf"], help=argparse.SUPPRESS)  # the child process's
    args = parser.parse_args()
    if args.engine:
        child(args)
        return
    passed = [
        *("--model", args.model, "--task", args.task, "--prompts", str(args.prompts), "--samples", str(args.samples)),
        *("--max-tokens", str(args.max_tokens), "--max-model-len", str(args.max_model_len)),
        *("--rounds", str(args.rounds), "--seed", str(args.seed)),
    ]
    rows = []
    for engine, threads in (("vllm", "1"), ("hf", "1"), ("hf", None)):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        if threads:
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        env.update(VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
        label = f"{engine}, {'1 thread' if threads else 'torch default threads'}"
        sys.stderr.write(f"[generation] {label} ...\n")
        done = subprocess.run(
            [sys.executable, __file__, *passed, "--engine", engine], cwd=REPO, env=env, capture_output=True, text=True
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(lines[-1][len("RESULT ") :])
        rows.append((label, result))
        sys.stderr.write(f"[generation] {label}: {result['completions'] / result['seconds']:.1f} completions/s\n")
    base = rows[0][1]["completions"] / rows[0][1]["seconds"]
    out = [
        f"`python bench/generation.py {' '.join(passed)}`",
        "",
        "| engine | completions/s | generated tokens/s | tokens per completion | vLLM's completions/s vs this |",
        "|---|---|---|---|---|",
    ]
    for label, r in rows:
        rate = r["completions"] / r["seconds"]
        out.append(
            f"| {label} | {rate:.1f} | {r['tokens'] / r['seconds']:.0f} | {r['tokens'] / r['completions']:.1f} | "
            f"{base / rate:.2f}x |"
        )
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
