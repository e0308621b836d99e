"""Judge throughput: pairs judged per second, batched (one call per batch) vs one call per pair.

    python bench/judges.py                    # reward_model and self, one training step's batch
    python bench/judges.py --prompts 32 --k 4 --repeats 3 --threads 2

A training step's batch (default 32 prompts x K = 4 responses of the built-in task, responses
drawn from the task's SFT-style corpus) is judged in-process by the judge class a JudgeActor wraps
(`rollout/judges/`), on the tiny built-in models:
- batched: what the actor does: `judge_rollouts` on the whole batch (the reward model scores the
  K responses of every prompt in batches of `batch_size`; the self judge compares every pair in
  both orders, `batch_size` judge prompts per forward pass);
- per pair: the naive way: one call per within-group pair (`score` of its two responses, or
  `compare` of the one pair), as a judge without batching would be used.
"Pairs" are the K (K - 1) / 2 within-group pairs a pair algorithm can draw on (6 per prompt for
K = 4). Both variants run side by side in one process, best of `--repeats`. Not a test.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from driver.builtin import resolve_model_path  # noqa: E402
from protocols import Prompt, RewardModelJudgeSpec, Rollout, RolloutBatch, SelfJudgeSpec  # noqa: E402
from rollout.judges import build_judge  # noqa: E402
from rollout.judges.base import comparison_pairs, judge_rollouts  # noqa: E402
from rollout.tasks import wordlist  # noqa: E402


def make_batch(prompts: int, k: int, seed: int) -> RolloutBatch:
    rng = random.Random(seed)
    chosen: list[Prompt] = rng.sample(wordlist.train_prompts(), prompts)
    rollouts = []
    for i, prompt in enumerate(chosen):
        for text, response in wordlist.sft_corpus(seed + i, k, [prompt]):
            rollouts.append(
                Rollout(
                    prompt_id=prompt.prompt_id,
                    prompt_text=text,
                    prompt_token_ids=(1,),
                    response_text=response,
                    response_token_ids=(1,),
                    logprobs=(-1.0,),
                    policy_version=0,
                    finish_reason="stop",
                )
            )
    return RolloutBatch(step=0, policy_version=0, samples_per_prompt=k, rollouts=tuple(rollouts))


def per_pair(judge, batch: RolloutBatch) -> None:
    r = batch.rollouts
    for i, j in comparison_pairs(len(r), batch.samples_per_prompt, "all_pairs"):
        if hasattr(judge, "score"):
            judge.score([r[i].prompt_text, r[j].prompt_text], [r[i].response_text, r[j].response_text])
        else:
            judge.compare([r[i].prompt_text], [r[i].response_text], [r[j].response_text])


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a judge actor with num_cpus <= 1: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.prompts, args.k, seed=0)
    pairs = len(comparison_pairs(len(batch.rollouts), args.k, "all_pairs"))
    judges = {
        "reward_model": build_judge(
            RewardModelJudgeSpec(name="rm", kind="reward_model", path="builtin:reward-model"),
            resolve_model_path("builtin:reward-model"),
        ),
        "self": build_judge(SelfJudgeSpec(name="self", kind="self"), resolve_model_path("builtin")),
    }
    rows = [
        "| kind | pairs per batch | batched: s | batched: pairs/s | per pair: s | per pair: pairs/s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, judge in judges.items():
        judge_rollouts(judge, batch)  # warm-up
        batched = best_seconds(lambda judge=judge: judge_rollouts(judge, batch), args.repeats)
        naive = best_seconds(lambda judge=judge: per_pair(judge, batch), args.repeats)
        rows.append(
            f"| {kind} | {pairs} | {batched:.3f} | {pairs / batched:.0f} | {naive:.3f} | "
            f"{pairs / naive:.0f} | {naive / batched:.1f}x |"
        )
        sys.stderr.write(f"{kind}: {pairs / batched:.0f} pairs/s batched, {pairs / naive:.0f} per pair\n")
    sys.stdout.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
