"""Run by tests/monitoring/test_actor_repr.py in its own process, joined to a `ray start --head`
cluster: starts judge and learner actors under the names the driver gives them, makes them work,
and prints (JSON) what Ray's state API records for each and what repr() of each returns now.

    python tests/monitoring/actors_probe.py GCS_ADDRESS DASHBOARD_URL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray.util.state import list_actors

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from actors.judge import JudgeActor  # noqa: E402
from actors.learner import LearnerActor  # noqa: E402
from deploy.placement import judge_options  # noqa: E402
from protocols import Rollout, RolloutBatch, RuleJudgeSpec  # noqa: E402


def batch(step: int, responses: list[str]) -> RolloutBatch:
    rollouts = tuple(
        Rollout(
            prompt_id="p0",
            prompt_text="list 3 fruits:",
            prompt_token_ids=(1, 2, 3),
            response_text=text,
            response_token_ids=(4, 2),
            logprobs=(-0.5, -0.1),
            policy_version=3,
            finish_reason="stop",
        )
        for text in responses
    )
    return RolloutBatch(step=step, policy_version=3, samples_per_prompt=len(rollouts), rollouts=rollouts)


def main(gcs: str, dashboard: str) -> None:
    ray.init(address=gcs, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}, log_to_driver=False)
    truth = RuleJudgeSpec(name="ground-truth", kind="rule", function="rollout.tasks.wordlist:ground_truth")
    broken = RuleJudgeSpec(name="broken", kind="rule", function="operator:truediv")  # str / str: TypeError
    actors = {
        "judge-ground-truth-0": JudgeActor.options(**judge_options(truth, 0)).remote(truth, None),
        "eval-judge-ground-truth-0": JudgeActor.options(**judge_options(truth, 0, "eval-judge")).remote(truth, None),
        "judge-broken-0": JudgeActor.options(**judge_options(broken, 0)).remote(broken, None),
        "learner-0": LearnerActor.options(name="learner-0", num_cpus=0).remote(0, 1),
    }
    ray.get([a.__ray_ready__.remote() for a in actors.values()], timeout=120)
    fruits = [" apple pear plum", " apple apple", " cat", " pear plum fig", ""]
    ray.get(actors["judge-ground-truth-0"].judge_batch.remote(batch(6, fruits[:4])), timeout=60)
    ray.get(actors["judge-ground-truth-0"].judge_batch.remote(batch(7, fruits)), timeout=60)
    ray.get(actors["eval-judge-ground-truth-0"].judge_batch.remote(batch(9, fruits[:2])), timeout=60)
    try:
        ray.get(actors["judge-broken-0"].judge_batch.remote(batch(8, fruits[:2])), timeout=60)
        raise AssertionError("the broken judge judged")
    except ray.exceptions.RayTaskError:
        pass

    job = ray.get_runtime_context().get_job_id()
    recorded = {
        a.name: {"state": a.state, "class_name": a.class_name, "repr_name": a.repr_name}
        for a in list_actors(address=dashboard, filters=[("job_id", "=", job)], detail=True, timeout=60)
    }
    live = {name: ray.get(handle.__ray_call__.remote(repr), timeout=60) for name, handle in actors.items()}
    print(json.dumps({"recorded": recorded, "live": live}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
