"""Model, task and step shape of the benchmarks that run the project on more than the embedded
default, as driver flags: the one definition bench/vs_trl.py, bench/learning.py and
bench/length_buckets.py read (through `driver.cli.parse_config` where they need the config).
"""

from __future__ import annotations

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
