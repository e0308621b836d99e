"""The online loop, written once: sample -> judge -> learn -> sync weights -> log, then evaluate.

The driver owns the control flow; actors only compute. Data moves as ObjectRefs: a rollout
batch goes from its rollout worker straight to the judges and the learner; the learner's weights
go straight to the rollout workers. The driver reads small things (judgements, metrics) and the
rollout batch for its statistics.

Bounded staleness: with `rollout.max_staleness = s`, up to s batches are sampled ahead of the
learner (queued on the rollout actors before the next weight sync), so their `policy_version`
trails the learner by at most s. s = 0 is strictly on-policy.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray

from deploy import placement
from deploy.loading import dump_config
from driver.builtin import resolve_model_path
from driver.plan import RunPlan
from driver.stats import rollout_stats, step_line
from protocols import EvalResult, Judgement, Prompt, PromptBatch, RolloutBatch
from rollout.evaluation import win_rate_from_rewards
from rollout.prompts import PromptStream
from rollout.tasks import wordlist

logger = logging.getLogger("driver")


@dataclass
class Summary:
    steps: int
    seconds: float
    final_eval: EvalResult | None
    history: list[dict] = field(default_factory=list)


@dataclass
class Cluster:
    """Handles of every actor of the run."""

    rollouts: list
    learners: list
    judges: dict[str, list]  # name -> replicas
    eval_judge: list


@dataclass
class InFlight:
    step: int
    batches: list  # ObjectRef[RolloutBatch], one per rollout worker
    judgements: list  # per batch: list of ObjectRef[Judgement], one per judge


def connect(plan: RunPlan) -> bool:
    """Join `--address`/RAY_ADDRESS or start a local cluster. True if we started it."""
    address = plan.cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        logger.info("joined Ray cluster at %s", address)
        return False
    needed = placement.required_resources(plan.cfg, [*plan.manifest.judges, plan.eval_judge])
    project = str(Path(__file__).resolve().parent.parent)
    ray.init(
        address="local",  # a new cluster even if `ray start` left one running on this machine
        num_cpus=max(os.cpu_count() or 1, math.ceil(needed["CPU"])),
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": project}},
    )
    logger.info("started a local Ray cluster (%s)", ray.cluster_resources())
    return True


def check_resources(plan: RunPlan) -> None:
    needed = placement.required_resources(plan.cfg, [*plan.manifest.judges, plan.eval_judge])
    have = ray.cluster_resources()
    for key, amount in needed.items():
        if amount > have.get(key, 0.0) + 1e-9:
            raise RuntimeError(f"the run needs {amount:g} {key} but the cluster has {have.get(key, 0.0):g}: {have}")


def start_actors(plan: RunPlan, model_path: str) -> Cluster:
    from actors.judge import JudgeActor
    from actors.learner import LearnerActor
    from actors.rollout import RolloutActor

    cfg = plan.cfg
    pg = placement.create_placement_group(cfg)
    rollouts = [
        RolloutActor.options(**placement.rollout_options(cfg, i, pg)).remote(
            model_path, cfg.rollout, cfg.model.dtype, cfg.seed + i, f"rollout-{i}"
        )
        for i in range(cfg.rollout.num_workers)
    ]
    world = cfg.learner.num_workers
    learners = [LearnerActor.options(**placement.learner_options(cfg, r, pg)).remote(r, world) for r in range(world)]
    addr, port = ray.get(learners[0].rendezvous.remote(cfg.learner.master_port))
    setups = [learner.setup.remote(model_path, cfg, addr, port) for learner in learners]

    def judge_replicas(spec, prefix: str) -> list:
        path = resolve_model_path(spec.path) if getattr(spec, "path", None) else None
        return [
            JudgeActor.options(**placement.judge_options(spec, i, prefix)).remote(spec, path)
            for i in range(spec.replicas)
        ]

    judges = {spec.name: judge_replicas(spec, "judge") for spec in plan.manifest.judges}
    eval_judge = judge_replicas(plan.eval_judge, "eval-judge")
    ray.get(setups)
    ray.get([r.policy_version.remote() for r in rollouts])  # engines loaded
    return Cluster(rollouts=rollouts, learners=learners, judges=judges, eval_judge=eval_judge)


def shard(prompts: list[Prompt], parts: int) -> list[list[Prompt]]:
    """Split prompts into `parts` contiguous, non-empty, nearly equal chunks."""
    size, extra = divmod(len(prompts), parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + size + (1 if i < extra else 0)
        out.append(prompts[lo:hi])
        lo = hi
    return out


def sample(cluster: Cluster, step: int, prompts: list[Prompt], k: int, temperature: float | None = None) -> list:
    """Launch generation on every rollout worker; returns ObjectRef[RolloutBatch] per worker."""
    return [
        worker.generate.remote(PromptBatch(step=step, prompts=tuple(part), samples_per_prompt=k), temperature)
        for worker, part in zip(cluster.rollouts, shard(prompts, len(cluster.rollouts)))
    ]


def judge(replica_sets: dict[str, list], batches: list, step: int) -> list[list]:
    """Per batch, one ObjectRef[Judgement] per judge; replicas of a judge take batches in turn."""
    return [
        [replicas[(step + b) % len(replicas)].judge_batch.remote(ref) for replicas in replica_sets.values()]
        for b, ref in enumerate(batches)
    ]


def evaluate(plan: RunPlan, cluster: Cluster, prompts: list[Prompt], step: int) -> tuple[list[float], list[int]]:
    """Eval-judge rewards and response lengths of the policy's samples on held-out prompts."""
    ev = plan.cfg.eval
    refs = sample(cluster, step, prompts, ev.samples_per_prompt, ev.temperature)
    judgements = judge({"eval": cluster.eval_judge}, refs, step)
    batches: list[RolloutBatch] = ray.get(refs)
    rewards = [r for j in ray.get([refs[0] for refs in judgements]) for r in j.rewards]
    lengths = [len(r.response_token_ids) for b in batches for r in b.rollouts]
    return rewards, lengths


def publish_weights(cluster: Cluster, step: int, probe: list[list[int]]) -> list:
    """Learner -> rollout workers, through the object store; returns ObjectRef[SyncReport]s."""
    exports = [learner.export.remote(step, probe) for learner in cluster.learners]
    version_ref, weights_ref = exports[0]
    ray.get([v for v, _ in exports[1:]])  # other ranks only join the (ZeRO-3) gather
    return [worker.load_weights.remote(weights_ref, version_ref) for worker in cluster.rollouts]


def run(plan: RunPlan) -> Summary:
    cfg = plan.cfg
    started = time.perf_counter()
    model_path = resolve_model_path(cfg.model.path)
    plan.output.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, plan.output / "config.yaml")
    we_started = connect(plan)
    try:
        check_resources(plan)
        cluster = start_actors(plan, model_path)
        logger.info("actors ready in %.1fs; run directory %s", time.perf_counter() - started, plan.output.resolve())
        return train(plan, cluster, model_path, started)
    finally:
        if we_started:
            ray.shutdown()


def train(plan: RunPlan, cluster: Cluster, model_path: str, started: float) -> Summary:
    cfg = plan.cfg
    stream = PromptStream(wordlist.train_prompts(), seed=cfg.seed)
    heldout = wordlist.heldout_prompts()[: cfg.eval.num_prompts]
    start_rewards, start_lengths = evaluate(plan, cluster, heldout, 0)  # the starting policy, version 0
    metrics_file = (plan.output / "metrics.jsonl").open("a")
    queue: collections.deque[InFlight] = collections.deque()
    launched, probe, history = 0, None, []
    loop_start = time.perf_counter()
    for step in range(cfg.steps):
        step_start = time.perf_counter()
        while launched < cfg.steps and len(queue) <= cfg.rollout.max_staleness:
            refs = sample(cluster, launched, stream.next(cfg.rollout.prompts_per_step), cfg.rollout.samples_per_prompt)
            queue.append(InFlight(launched, refs, judge(cluster.judges, refs, launched)))
            launched += 1
        item = queue.popleft()
        batches: list[RolloutBatch] = ray.get(item.batches)
        judge_start = time.perf_counter()
        judgements: list[list[Judgement]] = [ray.get(refs) for refs in item.judgements]
        judge_seconds = time.perf_counter() - judge_start
        results = ray.get([
            learner.train_step.remote(step, plan.judge_weights, [tuple(j) for j in judgements], *item.batches)
            for learner in cluster.learners
        ])
        if probe is None:  # fixed probe sequences for every sync check: two real rollouts
            probe = [list(r.prompt_token_ids + r.response_token_ids)[:32] for r in batches[0].rollouts[:2]]
        reports = ray.get(publish_weights(cluster, step, probe))
        record = {
            "step": step,
            "time": round(time.perf_counter() - started, 3),
            **rollout_stats(batches, judgements, plan.judge_weights),
            "judge/seconds": judge_seconds,
            **results[0].metrics,
            "learner/policy_version": float(results[0].policy_version),
            "learner/staleness": float(results[0].policy_version - 1 - results[0].trained_on_version),
            "sync/seconds": max(r.seconds for r in reports),
            "sync/max_probe_gap": max(r.max_abs_logprob_diff for r in reports),
            "time/step_seconds": time.perf_counter() - step_start,
        }
        record["rollout/tokens_per_s"] = record["rollout/response_tokens"] / record["time/step_seconds"]
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        history.append(record)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            elapsed = time.perf_counter() - loop_start
            logger.info(step_line(record, cfg.steps, eta=elapsed / (step + 1) * (cfg.steps - step - 1)))
    final = final_eval(plan, cluster, heldout, cfg.steps, start_rewards, start_lengths)
    metrics_file.write(json.dumps({"step": cfg.steps, "time": round(time.perf_counter() - started, 3),
                                   **eval_record(final)}) + "\n")
    metrics_file.close()
    ray.get([learner.save.remote(str((plan.output / "final").resolve()), model_path) for learner in cluster.learners])
    summary = Summary(steps=cfg.steps, seconds=time.perf_counter() - started, final_eval=final, history=history)
    (plan.output / "summary.json").write_text(json.dumps(
        {"steps": summary.steps, "seconds": round(summary.seconds, 1), "final_eval": final.model_dump()}, indent=2
    ))
    return summary


def final_eval(plan: RunPlan, cluster: Cluster, heldout: list[Prompt], step: int,
               start_rewards: list[float], start_lengths: list[int]) -> EvalResult:
    rewards, lengths = evaluate(plan, cluster, heldout, step)
    spec = plan.eval_judge
    result = EvalResult(
        step=step,
        judge=spec.name,
        vs_start=win_rate_from_rewards(rewards, start_rewards, plan.cfg.eval.samples_per_prompt, spec.temperature),
        mean_reward=sum(rewards) / len(rewards),
        start_mean_reward=sum(start_rewards) / len(start_rewards),
        mean_response_tokens=sum(lengths) / len(lengths),
        start_mean_response_tokens=sum(start_lengths) / len(start_lengths),
    )
    wr = result.vs_start
    verdict = "improved" if wr.ci_low > 0.5 else "got worse" if wr.ci_high < 0.5 else "did not measurably change"
    logger.info(
        "eval (judge %s, %d held-out prompts): win rate vs starting policy %.3f [95%% CI %.3f, %.3f] -> the policy %s; "
        "mean reward %.3f -> %.3f; mean response tokens %.1f -> %.1f",
        spec.name, wr.num_prompts, wr.win_rate, wr.ci_low, wr.ci_high, verdict, result.start_mean_reward,
        result.mean_reward, result.start_mean_response_tokens, result.mean_response_tokens,
    )
    return result


def eval_record(result: EvalResult) -> dict[str, float]:
    wr = result.vs_start
    return {
        "eval/win_rate": wr.win_rate, "eval/win_rate_ci_low": wr.ci_low, "eval/win_rate_ci_high": wr.ci_high,
        "eval/mean_reward": result.mean_reward, "eval/start_mean_reward": result.start_mean_reward,
        "eval/response_tokens": result.mean_response_tokens,
    }
