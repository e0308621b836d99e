"""The learner's step with and without `learner.length_buckets`, side by side in one process.

    python bench/length_buckets.py                                   # the built-in tiny model, GRPO and DPO
    python bench/length_buckets.py --model smollm2 --rounds 3        # SmolLM2-135M-Instruct with LoRA, 2 threads

Two learners on the same model and config, one with micro-batches of similar lengths and one in
sampling order, take turns training on the same judged batches (each round: one step each, the
order alternating), so both see the same machine load. The batches are the task's prompts through
the chat template (when the model has one) with responses of lengths drawn like a run's (uniform
between 1 and --max-tokens; a response that stops early is the common case), random tokens ending
in EOS and random rewards; what is timed is `PolicyLearner.train_step` (no-grad passes, forward,
backward, optimizer). Prints a markdown table (median seconds per step, padded token positions per
step) and the ratio. Not a test; record results in BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/ off the path: bench/profile.py would shadow the standard library's `profile` (cProfile, torch)
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]

from bench.workloads import WORKLOADS  # noqa: E402  (model, task, step shape and learner: as bench/vs_trl.py runs them)


def judged_batches(tokenizer, task, prompts: int, k: int, max_tokens: int, count: int, seed: int):
    """`count` judged batches of `prompts` x `k` rollouts: real prompts, random responses."""
    from protocols import JudgedBatch, Judgement, Rollout, RolloutBatch
    from rollout.chat import prompt_token_ids, uses_chat_template

    rng = random.Random(seed)
    chat = uses_chat_template(tokenizer, "auto")
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    batches = []
    for b in range(count):
        rollouts, rewards = [], []
        for p in rng.sample(list(task.train), prompts):
            ids = tuple(prompt_token_ids(tokenizer, p.text, chat))
            for _ in range(k):
                n = rng.randint(1, max_tokens)
                response = tuple(rng.randrange(vocab) for _ in range(n - 1)) + (eos,)
                rollouts.append(
                    Rollout(
                        prompt_id=p.prompt_id,
                        prompt_text=p.text,
                        prompt_token_ids=ids,
                        response_text="",
                        response_token_ids=response,
                        logprobs=(-1.0,) * n,
                        policy_version=0,
                        finish_reason="stop",
                    )
                )
                rewards.append(rng.random())
        batch = RolloutBatch(step=b, policy_version=0, samples_per_prompt=k, rollouts=tuple(rollouts))
        batches.append(JudgedBatch(batch=batch, judgements=(Judgement(judge="gt", rewards=tuple(rewards)),)))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(WORKLOADS), default="builtin")
    parser.add_argument("--algos", nargs="+", default=["grpo", "dpo"])
    parser.add_argument("--rounds", type=int, default=6, help="timed steps per learner and algorithm (default 6)")
    parser.add_argument("--prompts", type=int, help="prompts per step (default: the workload's, 32 / smollm2 8)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt (default 4)")
    parser.add_argument("--max-tokens", type=int, help="longest response (default: the workload's, 24 / smollm2 48)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the workload's learner.num_cpus, 1 / smollm2 2)")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from driver.builtin import resolve_model_path
    from driver.cli import parse_config
    from learner.engine import PolicyLearner
    from protocols import RunConfig
    from rollout.tasks import load_task

    hf_logging.disable_progress_bar()
    cfg = parse_config(WORKLOADS[args.model])[1]
    torch.set_num_threads(args.threads or max(1, int(cfg.learner.num_cpus)))
    micro = cfg.learner.micro_batch_size
    prompts = args.prompts or cfg.rollout.prompts_per_step
    max_tokens = args.max_tokens or cfg.rollout.max_response_tokens
    path = resolve_model_path(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    task = load_task(cfg.task)
    batches = judged_batches(tokenizer, task, prompts, args.samples, max_tokens, args.rounds + 1, seed=0)

    rows = []
    for algo in args.algos:
        learners = {}
        for buckets in (True, False):
            learner_cfg = cfg.learner.model_copy(update={"warmup_steps": 0, "length_buckets": buckets})
            learners[buckets] = PolicyLearner(path, RunConfig(algo=algo, learner=learner_cfg))
        seconds: dict[bool, list[float]] = {True: [], False: []}
        positions: dict[bool, list[int]] = {True: [], False: []}
        for buckets, learner in learners.items():  # the counting spy: rows x width of every forward pass
            original = learner.models.token_logprobs

            def spy(model, t, original=original, seen=positions[buckets]):
                seen.append(t.input_ids.numel())
                return original(model, t)

            learner.models.token_logprobs = spy
        for r, batch in enumerate(batches):
            order = (True, False) if r % 2 else (False, True)
            for buckets in order:
                before = len(positions[buckets])
                start = time.perf_counter()
                learners[buckets].train_step([batch], r, {"gt": 1.0})
                if r:  # the first step of each pays warm-up; it is not counted
                    seconds[buckets].append(time.perf_counter() - start)
                else:
                    del positions[buckets][before:]
            sys.stderr.write(f"[length_buckets] {algo} round {r}/{args.rounds} done\n")
        per_step = {b: sum(positions[b]) / args.rounds for b in (True, False)}
        median = {b: statistics.median(seconds[b]) for b in (True, False)}
        rows.append((algo, median, per_step))

    print(
        f"| algo ({args.model}, {prompts} x {args.samples}, responses 1-{max_tokens} tokens, micro-batch {micro}) | "
        "buckets: s/step | sampling order: s/step | ratio | buckets: padded positions/step | sampling order | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for algo, median, per_step in rows:
        print(
            f"| {algo} | {median[True]:.3f} | {median[False]:.3f} | {median[True] / median[False]:.2f} | "
            f"{per_step[True]:.0f} | {per_step[False]:.0f} | {per_step[True] / per_step[False]:.2f} |"
        )


if __name__ == "__main__":
    main()
