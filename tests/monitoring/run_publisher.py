"""Run by tests/monitoring/test_prometheus.py in its own process, joined to a `ray start --head`
cluster: publishes a recorded run's metrics the way a run does, and keeps the actors' metrics
moving until its stdin closes (or DEADLINE_S passes).

- every record of run_metrics.jsonl goes through actors.telemetry.publish, the driver's call, so
  each gauge ends at the run's last value (its last step; eval/* at its last evaluation). Ray's
  metrics agent drops a gauge that was not set again within two report intervals, so the last
  step's and the last evaluation's records are published again every tick, as a run sets its
  gauges at every step;
- a judge actor named as the driver names it judges a batch every half second (its latency
  histogram and rollout counter), and this process counts generated tokens and weight-sync times
  as a rollout worker does (actors.telemetry.RolloutTelemetry).

    python tests/monitoring/run_publisher.py GCS_ADDRESS RUN_NAME

Prints one line once publishing: the Ray worker ids of the judge actor and of this process.
"""

from __future__ import annotations

import json
import select
import sys
import time
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from actors import telemetry  # noqa: E402
from actors.judge import JudgeActor  # noqa: E402
from deploy.placement import judge_options  # noqa: E402
from protocols import Rollout, RolloutBatch, RuleJudgeSpec  # noqa: E402

RECORDS = Path(__file__).with_name("run_metrics.jsonl")
DEADLINE_S = 240.0
TOKENS_PER_TICK = 128  # a rollout worker's tokens per generate call
SYNC_SECONDS = 0.04  # its weight-sync time per step


def main(gcs: str, run: str) -> None:
    ray.init(address=gcs, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}, log_to_driver=False)
    spec = RuleJudgeSpec(name="ground-truth", kind="rule", function="rollout.tasks.wordlist:ground_truth")
    judge = JudgeActor.options(**judge_options(spec, 0)).remote(spec, None)
    rollout = telemetry.RolloutTelemetry("rollout-0")
    records = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    for record in records:
        telemetry.publish(record, run)
    last_step = [r for r in records if "learner/policy_version" in r][-1]
    last_eval = [r for r in records if "eval/win_rate" in r][-1]
    rollouts = tuple(
        Rollout(
            prompt_id="p0",
            prompt_text="list 3 fruits:",
            prompt_token_ids=(1, 2, 3),
            response_text=text,
            response_token_ids=(4, 2),
            logprobs=(-0.5, -0.1),
            policy_version=0,
            finish_reason="stop",
        )
        for text in (" apple pear plum", " apple apple", " cat", " pear plum fig")
    )
    deadline, step = time.monotonic() + DEADLINE_S, 0
    while time.monotonic() < deadline:
        batch = RolloutBatch(step=step, policy_version=0, samples_per_prompt=4, rollouts=rollouts)
        ray.get(judge.judge_batch.remote(batch), timeout=60)
        telemetry.publish(last_step, run)
        telemetry.publish(last_eval, run)
        rollout.generated(TOKENS_PER_TICK)
        rollout.synced(SYNC_SECONDS)
        if step == 0:  # the Ray worker ids its metrics carry (label WorkerId): the judge's, then this process's
            judge_worker = ray.get(judge.__ray_call__.remote(lambda _: ray.get_runtime_context().get_worker_id()))
            print(judge_worker, ray.get_runtime_context().get_worker_id(), flush=True)
        step += 1
        readable, _, _ = select.select([sys.stdin], [], [], 0.5)
        if readable and not sys.stdin.read(1):  # EOF: the test is done
            break


if __name__ == "__main__":
    main(*sys.argv[1:3])
