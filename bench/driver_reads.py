"""What the driver pays per rollout worker per step to read a batch, whole or as its summary.

    python bench/driver_reads.py                 # sizes from the built-in task up to a real-model step
    python bench/driver_reads.py --repeats 20

Before, the driver fetched every RolloutBatch (`ray.get`: unpickling and re-validating tuples of
Python ints and floats) to log statistics; now it fetches only the batch's `BatchSummary` (driver/
run.py `Loop.gather`), and the batch goes from the rollout worker to the judges and the learner by
reference. This puts synthetic batches of several sizes in a local Ray object store and times the
driver's `ray.get` of each, median of `--repeats` (a fresh ObjectRef each time, so nothing is
cached), side by side in one run. Not a test; record results in BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]

from bench.workloads import BATCH_SIZES, put_get_seconds  # noqa: E402


def synthetic_batch(prompts: int, k: int, response: int, prompt: int):
    from protocols import Rollout, RolloutBatch

    rollouts = tuple(
        Rollout(
            prompt_id=f"p{i}",
            prompt_text="q " * prompt,
            prompt_token_ids=tuple(range(1, prompt + 1)),
            response_text="a " * response,
            response_token_ids=tuple(range(2, response + 2)),
            logprobs=tuple(-0.25 for _ in range(response)),
            policy_version=1,
            finish_reason="length",
        )
        for i in range(prompts)
        for _ in range(k)
    )
    return RolloutBatch(step=0, policy_version=1, samples_per_prompt=k, rollouts=rollouts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    import ray

    from protocols import summarize

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        print("| prompts x samples x tokens | response tokens | whole batch ms | summary ms | ratio |")
        print("|---|---|---|---|---|")
        for prompts, k, response, prompt in BATCH_SIZES:
            batch = synthetic_batch(prompts, k, response, prompt)
            whole, summary = put_get_seconds(batch, args.repeats)[1], put_get_seconds(summarize(batch), args.repeats)[1]
            tokens = prompts * k * response
            size = f"{prompts} x {k} x {response}"
            print(f"| {size} | {tokens} | {whole * 1e3:.2f} | {summary * 1e3:.3f} | {whole / summary:.0f}x |")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
