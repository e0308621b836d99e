"""What a batch's token data costs on its way from the sampler to the learner's tensors.

    python bench/wire.py                 # sizes from the built-in task up to a real-model step
    python bench/wire.py --repeats 9

Times each hop a RolloutBatch's token ids and logprobs take, median of `--repeats`, for synthetic
batches of several sizes: the rollout worker building the batch from the engine's lists (pydantic
validation included), `ray.put` (the rollout worker's side of the object store), `ray.get` (a
judge's or the learner's side: unpickling), and the learner collating the rollouts into padded
tensors with the sampler's logprobs (`collate_sequences` + `sampler_logprobs`). Also prints the
bytes the object store holds. Not a test; record results in BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]

from bench.workloads import BATCH_SIZES, put_get_seconds  # noqa: E402


def engine_lists(prompts: int, k: int, response: int, prompt: int, seed: int = 0) -> list[tuple[list, list, list]]:
    """What vLLM hands the sampler per completion: prompt ids, response ids, logprobs (lists)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(prompts):
        prompt_ids = [rng.randrange(1, 50_000) for _ in range(prompt)]
        for _ in range(k):
            length = rng.randint(response // 2, response)
            rows.append((prompt_ids, [rng.randrange(1, 50_000) for _ in range(length)], [-rng.random() for _ in range(length)]))
    return rows


def build(rows: list[tuple[list, list, list]], k: int):
    """The sampler's construction of a RolloutBatch from the engine's lists."""
    from protocols import Rollout, RolloutBatch

    rollouts = tuple(
        Rollout(
            prompt_id=f"p{i // k}",
            prompt_text="q",
            prompt_token_ids=prompt_ids,
            response_text="a",
            response_token_ids=response_ids,
            logprobs=logprobs,
            policy_version=1,
            finish_reason="length",
        )
        for i, (prompt_ids, response_ids, logprobs) in enumerate(rows)
    )
    return RolloutBatch(step=0, policy_version=1, samples_per_prompt=k, rollouts=rollouts)


def collate(batch) -> None:
    from learner.collate import collate_sequences, sampler_logprobs

    tensors = collate_sequences(batch.rollouts, pad_token_id=0)
    sampler_logprobs(batch.rollouts, tensors.response_mask)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import ray
    from ray import cloudpickle

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        columns = ["prompts x samples x tokens (prompt)", "response tokens", "build ms", "put ms", "get ms"]
        columns += ["collate ms", "total ms", "pickled MB"]
        print("| " + " | ".join(columns) + " |")
        print("|---|---|---|---|---|---|---|---|")
        for prompts, k, response, prompt in BATCH_SIZES:
            rows = engine_lists(prompts, k, response, prompt)
            batch = build(rows, k)
            tokens = sum(len(r.response_token_ids) for r in batch.rollouts)
            built = median_seconds(lambda rows=rows, k=k: build(rows, k), args.repeats)
            put, get = put_get_seconds(batch, args.repeats)
            received = ray.get(ray.put(batch))  # what a judge or the learner collates
            collated = median_seconds(lambda received=received: collate(received), args.repeats)
            size = len(cloudpickle.dumps(batch, protocol=5)) / 1e6
            total = built + put + get + collated
            print(
                f"| {prompts} x {k} x {response} ({prompt}) | {tokens:,} | {built * 1e3:.2f} | {put * 1e3:.2f} | "
                f"{get * 1e3:.2f} | {collated * 1e3:.2f} | {total * 1e3:.1f} | {size:.2f} |"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
