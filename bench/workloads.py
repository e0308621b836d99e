"""Model, task and step shape of the benchmarks that run the project on more than the embedded
default, as driver flags: the one definition bench/vs_trl.py, bench/learning.py and
bench/length_buckets.py read (through `driver.cli.parse_config` where they need the config).
Also the synthetic batch sizes and the object-store timing that bench/driver_reads.py and
bench/wire.py share.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

# (prompts per worker, samples per prompt, response tokens, prompt tokens) of synthetic batches
BATCH_SIZES = [
    (32, 4, 24, 12),  # the built-in task's step on one worker
    (64, 4, 256, 128),
    (128, 8, 1024, 256),  # a real model's step
]


def put_get_seconds(value: Any, repeats: int) -> tuple[float, float]:
    """Median seconds of `ray.put(value)` and of `ray.get` of its fresh ref (nothing cached), over
    `repeats`; needs a started Ray."""
    import ray

    puts, gets = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ref = ray.put(value)
        puts.append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.get(ref)
        gets.append(time.perf_counter() - start)
        del ref
    return statistics.median(puts), statistics.median(gets)


WORKLOADS: dict[str, list[str]] = {
    # the built-in tiny policy on the word-list task
    "builtin": ["--set", "rollout.prompts_per_step=32", "--set", "rollout.max_response_tokens=24"],
    # SmolLM2-135M-Instruct on the instruction task, LoRA, the learner on 2 threads
    "smollm2": [
        "--model",
        "builtin:smollm2-135m-instruct",
        "--task",
        "instruct",
        "--set",
        "rollout.prompts_per_step=8",
        "--set",
        "rollout.max_response_tokens=48",
        "--set",
        "rollout.max_model_len=512",
        "--set",
        "learner.lora.rank=16",
        "--set",
        "learner.lr=5e-4",
        "--set",
        "learner.micro_batch_size=16",
        "--set",
        "learner.num_cpus=2",
    ],
}
