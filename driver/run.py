"""The online loop, written once: sample -> judge -> learn -> sync weights -> log, with periodic
evaluation and checkpoints, then the final evaluation.

The driver owns the control flow; actors only compute. Data moves as ObjectRefs: a rollout
batch goes from its rollout worker straight to the judges and the learner; the learner's weights
go straight to the rollout workers. The driver reads small things (judgements, metrics) and the
rollout batch for its statistics.

Bounded staleness: with `rollout.max_staleness = s`, up to s batches are sampled ahead of the
learner (queued on the rollout actors before the next weight sync), so their `policy_version`
trails the learner by at most s. s = 0 is strictly on-policy.

Determinism: step s's prompts are positions [s P, (s + 1) P) of a seeded PromptStream and its
samples are drawn with a seed derived from (seed, s, worker), so a run resumed from a checkpoint
(with max_staleness = 0) repeats exactly what the uninterrupted run would have done.

Stopping: SIGTERM or SIGINT (driver/signals.py) ends the loop at the next step boundary with a
checkpoint there; what a launch on an existing run directory does is decided before this module
runs (driver/resume.py, under the directory's lock, driver/lock.py).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import ray

from actors import telemetry
from deploy.loading import dump_config
from driver import checkpoints
from driver.builtin import resolve_model_path
from driver.checkpoints import DriverState, EvalSamples
from driver.cluster import (
    Cluster,
    check_resources,
    connect,
    judge,
    publish_weights,
    sample,
    start_actors,
    swap_judges,
)
from driver.judge_failures import JudgeFailures
from driver.manifest_watch import ManifestChange, ManifestWatcher
from driver.plan import RunPlan
from driver.resume import Checkpoint
from driver.signals import StopSignals
from driver.stats import rollout_stats, step_line
from driver.tracking import MetricsWriter, WandbSettings, truncate_after
from learner.algorithms import algorithm_config, get_algorithm
from learner.opponents import snapshot_due
from protocols import EvalResult, Judgement, RolloutBatch
from rollout.evaluation import win_rate_from_rewards
from rollout.prompts import PromptStream
from rollout.seeds import derive_seed

logger = logging.getLogger("driver")
SAMPLES_FILE = "samples.jsonl"
JUDGES_FILE = "judges.jsonl"  # judge-set changes: started at a step, or a manifest rejected and why


@dataclass
class Summary:
    steps: int  # steps done (fewer than asked when stopped)
    seconds: float
    final_eval: EvalResult | None
    stopped: str | None = None  # the signal that stopped the run at a step boundary (SIGTERM, SIGINT)
    checkpoint: Path | None = None  # the checkpoint a stopped run continues from


@dataclass
class InFlight:
    step: int
    batches: list  # ObjectRef[RolloutBatch], one per rollout worker
    judgements: list  # per batch: list of ObjectRef[Judgement], one per judge


def run(plan: RunPlan, resume: Checkpoint | None = None) -> Summary:
    """Start (or join) Ray, start the actors, train, evaluate; `resume` continues plan.output from
    that checkpoint (chosen and checked by driver/resume.py)."""
    cfg = plan.cfg
    started = time.perf_counter()
    model_path = resolve_model_path(cfg.model.path)
    if resume is not None:
        logger.info("resuming %s from %s (step %d of %d)", plan.output, resume.path, resume.step, cfg.steps)
    plan.output.mkdir(parents=True, exist_ok=True)
    write_config(cfg, plan.output / "config.yaml")
    stop = StopSignals()
    stop.install()
    try:
        we_started = connect(plan)
        stop.install()  # ray.init replaced SIGTERM's handler with its own
        try:
            check_resources(plan)
            cluster = start_actors(plan, model_path)
            logger.info("actors ready in %.1fs; run directory %s", time.perf_counter() - started, plan.output.resolve())
            loop = Loop(plan, cluster, model_path, started, stop)
            return loop.run(resume.state if resume else None, resume.path if resume else None)
        finally:
            if we_started:
                ray.shutdown()
    finally:
        stop.restore()


class Loop:
    def __init__(self, plan: RunPlan, cluster: Cluster, model_path: str, started: float, stop: StopSignals | None = None):
        self.plan, self.cfg, self.cluster, self.model_path, self.started = plan, plan.cfg, cluster, model_path, started
        self.stop = stop or StopSignals()  # (not installed: never requested)
        self.last_checkpoint: Path | None = None
        self.heldout = list(plan.task.heldout[: self.cfg.eval.num_prompts])
        spec = get_algorithm(self.cfg.algo)
        self.uses_pool = spec.needs_opponents
        self.snapshot_every = getattr(algorithm_config(self.cfg), "snapshot_every", 0)
        self.evals: dict[int, EvalSamples] = {}  # policy version -> held-out samples
        self.run_name = plan.output.resolve().name
        self.watcher = (
            ManifestWatcher(plan.manifest_path, self.cfg.algo, plan.manifest, self.cfg.security) if plan.manifest_path else None
        )
        self.judge_events = {"judges/swaps": 0.0, "judges/rejected_manifests": 0.0}
        self.judge_failures = JudgeFailures()  # verdicts missing under on_failure: skip, per judge
        # Ray's metrics agent drops a gauge that is not set again within a few report intervals:
        # the latest evaluation is re-published with every step so that dashboards keep it.
        self.last_eval: dict[str, float] = {}

    # ------------------------------------------------------------------ the loop
    def run(self, state: DriverState | None, checkpoint: Path | None) -> Summary:
        cfg = self.cfg
        if state is None:
            state = self.start_state()
        else:
            self.restore(state, checkpoint)
        self.evals.update({e.version: e for e in (state.start, *state.pool)})
        stream = PromptStream(self.plan.task.train, seed=cfg.seed, position=state.prompt_position)
        queue: collections.deque[InFlight] = collections.deque()
        launched = done = state.next_step
        version = state.policy_version
        ends, final = collections.deque([time.perf_counter()], maxlen=21), state.last_eval  # recent step ends: ETA
        resume_step = state.next_step if checkpoint is not None else None
        samples_log = self.plan.output / SAMPLES_FILE
        if resume_step is not None:
            truncate_after(samples_log, resume_step)
        with (
            MetricsWriter(
                self.plan.output, tensorboard=cfg.tracking.tensorboard, wandb=wandb_settings(self.plan), resume_step=resume_step
            ) as writer,
            samples_log.open("a") as samples,
        ):
            for step in range(state.next_step, cfg.steps):
                if self.stop.requested:  # a SIGTERM / SIGINT: stop at this step boundary
                    break
                if self.watcher is not None and launched < cfg.steps:
                    self.maybe_swap_judges(queue, launched, state.probe)
                while launched < cfg.steps and len(queue) <= cfg.rollout.max_staleness:
                    seeds = [derive_seed(cfg.seed, "train", launched, i) for i in range(len(self.cluster.rollouts))]
                    refs = sample(
                        self.cluster, launched, stream.next(cfg.rollout.prompts_per_step), cfg.rollout.samples_per_prompt, seeds
                    )
                    queue.append(InFlight(launched, refs, judge(self.cluster.judges, refs, launched)))
                    launched += 1
                record, examples = self.train_step(queue.popleft(), state.probe, queue_depth=len(queue))
                self.emit(writer, record)
                samples.write(json.dumps(examples) + "\n")
                samples.flush()
                done = step + 1
                ends.append(time.perf_counter())
                if step % cfg.log_every == 0 or done == cfg.steps:
                    eta = (ends[-1] - ends[0]) / (len(ends) - 1) * (cfg.steps - done)
                    logger.info(step_line(record, cfg.steps, eta, final.vs_start.win_rate if final else None))
                version = int(record["learner/policy_version"])
                evaluating = done == cfg.steps or bool(cfg.eval.every and done % cfg.eval.every == 0)
                if self.uses_pool and snapshot_due(version, self.snapshot_every) and not evaluating:
                    self.eval_samples(version, step)  # the next snapshot's samples, while it is served
                if evaluating:  # (also records this version's samples for the pool)
                    final = self.evaluate(version, step, state.start)
                    self.emit(writer, {"step": step, "time": round(time.perf_counter() - self.started, 3), **eval_record(final)})
                if cfg.checkpoint.every and done % cfg.checkpoint.every == 0:  # (the last step's included)
                    state = self.checkpoint(state, done, version, final)
        if done < cfg.steps:
            return self.stopped(state, done, version, final)
        self.finish(final)
        return Summary(steps=cfg.steps, seconds=time.perf_counter() - self.started, final_eval=final)

    def start_state(self) -> DriverState:
        """Step 0: the starting policy's held-out samples (the win-rate baseline) and the sync probe."""
        start, batches = self.eval_samples(0, step=0)
        probe = [list(r.prompt_token_ids + r.response_token_ids)[:32] for r in batches[0].rollouts[:2]]
        return DriverState(
            next_step=0,
            prompt_position=0,
            policy_version=0,
            probe=probe,
            reference=checkpoints.reference_identity(self.model_path),
            start=start,
        )

    def stopped(self, state: DriverState, done: int, version: int, final: EvalResult | None) -> Summary:
        """A stop signal ended the loop after step `done` - 1: checkpoint this boundary (unless the
        schedule just did), so that a resume continues exactly from here."""
        if self.last_checkpoint is None or checkpoints.step_of(self.last_checkpoint) != done:
            self.checkpoint(state, done, version, final)
        return Summary(
            steps=done,
            seconds=time.perf_counter() - self.started,
            final_eval=final,
            stopped=self.stop.name,
            checkpoint=self.last_checkpoint,
        )

    def train_step(self, item: InFlight, probe: list[list[int]], queue_depth: int) -> tuple[dict[str, float], dict]:
        """One step; returns its metrics record and its samples.jsonl entry."""
        step_start = time.perf_counter()
        batches: list[RolloutBatch] = ray.get(item.batches)
        judge_start = time.perf_counter()  # what was left of sampling when the step began, then judging
        judgements: list[list[Judgement]] = [ray.get(refs) for refs in item.judgements]
        judge_seconds = time.perf_counter() - judge_start
        batches, judgements, trained = self.judge_failures.apply(
            item.step, batches, judgements, item.batches, self.cluster.judge_specs
        )
        learn_start = time.perf_counter()
        results = ray.get(
            [
                learner.train_step.remote(
                    item.step, self.plan.judge_weights, self.plan.judge_temperatures, [tuple(j) for j in judgements], *trained
                )
                for learner in self.cluster.learners
            ]
        )
        sync_start = time.perf_counter()
        reports = ray.get(publish_weights(self.cluster, item.step, probe))
        waits = {
            "time/rollout_wait": judge_start - step_start,
            "time/judge_wait": learn_start - judge_start,
            "time/learner_wait": sync_start - learn_start,
            "time/sync_wait": time.perf_counter() - sync_start,
        }
        record = {
            "step": item.step,
            "time": round(time.perf_counter() - self.started, 3),
            **rollout_stats(batches, judgements, self.plan.judge_weights),
            "rollout/queue_depth": float(queue_depth),
            "judge/seconds": judge_seconds,
            **results[0].metrics,
            "learner/policy_version": float(results[0].policy_version),
            "learner/staleness": float(results[0].policy_version - 1 - results[0].trained_on_version),
            "sync/seconds": max(r.seconds for r in reports),
            "sync/max_probe_gap": max(r.max_abs_logprob_diff for r in reports),
            "time/step_seconds": time.perf_counter() - step_start,
            **waits,  # the driver's waits on each stage; the rest of step_seconds is its own bookkeeping
            **self.judge_events,  # cumulative: a swap shows up from the first step the new judges labelled
            **self.judge_failures.metrics(),
        }
        record["rollout/tokens_per_s"] = record["rollout/response_tokens"] / record["time/step_seconds"]
        return record, sample_log_entry(item.step, batches, judgements)

    def maybe_swap_judges(self, queue, launched: int, probe: list[list[int]]) -> None:
        """At a step boundary: if the manifest file changed, swap to its judges or say why not.

        Batches already launched keep the judges they were sent to (their judgements are awaited
        here, so the old actors owe nothing when they are killed); step `launched` is the first
        one the new judges label.
        """
        change = self.watcher.poll()
        if change is None:
            return
        event = {"step": launched, "manifest": str(self.plan.manifest_path), "digest": change.digest}
        if change.manifest is not None:
            owed = [ref for item in queue for refs in item.judgements for ref in refs]
            if owed:
                ray.wait(owed, num_returns=len(owed))  # drain: the old judges finish what they were given
            try:
                started, retired = swap_judges(self.cluster, change.manifest.judges, self.cfg, self.model_path, launched, probe)
            except (RuntimeError, ray.exceptions.RayError) as err:
                logger.error("judge swap at step %d failed; keeping the current judges: %s", launched, err)
                self.watcher.current = self.plan.manifest
                change = ManifestChange(
                    manifest=None, reason=f"the new judges did not start or failed their trial: {err}", digest=change.digest
                )
            else:
                self.plan = replace(self.plan, manifest=change.manifest)
                self.judge_events["judges/swaps"] += 1
                event.update(event="swapped", judges=list(self.cluster.judges), started=started, retired=retired)
                logger.info(
                    "judges swapped from step %d: now %s (started %s, retired %s)",
                    launched,
                    list(self.cluster.judges),
                    started,
                    retired,
                )
        if change.manifest is None:
            self.judge_events["judges/rejected_manifests"] += 1
            event.update(event="rejected", judges=list(self.cluster.judges), reason=change.reason)
        with (self.plan.output / JUDGES_FILE).open("a") as f:
            f.write(json.dumps(event) + "\n")

    def emit(self, writer: MetricsWriter, record: dict) -> None:
        writer.write(record)
        if "eval/win_rate" in record:
            self.last_eval = {k: v for k, v in record.items() if k.startswith("eval/")}
        telemetry.publish({**self.last_eval, **record}, self.run_name)

    # ------------------------------------------------------------------ evaluation
    def eval_samples(self, version: int, step: int) -> tuple[EvalSamples, list[RolloutBatch]]:
        """Held-out samples of the policy the rollout workers serve now (version `version`)."""
        ev = self.cfg.eval
        seeds = [derive_seed(self.cfg.seed, "eval", version, i) for i in range(len(self.cluster.rollouts))]
        refs = sample(self.cluster, step, self.heldout, ev.samples_per_prompt, seeds, ev.temperature)
        judgements = judge({"eval": self.cluster.eval_judge}, refs, step)
        batches: list[RolloutBatch] = ray.get(refs)
        rewards = [r for j in ray.get([per_batch[0] for per_batch in judgements]) for r in j.rewards]
        lengths = [len(r.response_token_ids) for b in batches for r in b.rollouts]
        samples = EvalSamples(version=version, rewards=tuple(rewards), lengths=tuple(lengths))
        self.evals[version] = samples
        return samples, batches

    def evaluate(self, version: int, step: int, start: EvalSamples) -> EvalResult:
        current, batches = self.eval_samples(version, step)
        kl = ray.get([learner.kl_to_reference.remote(*batches) for learner in self.cluster.learners])[0]
        k, temperature = self.cfg.eval.samples_per_prompt, self.plan.eval_judge.temperature
        pool_worst, pool_versions = None, ()
        if self.uses_pool:
            pool_versions = tuple(sorted(set(ray.get(self.cluster.learners[0].opponent_versions.remote()))))
            rates = [
                win_rate_from_rewards(current.rewards, self.evals[v].rewards, k, temperature)
                for v in pool_versions
                if v in self.evals
            ]
            pool_worst = min(rates, key=lambda w: w.win_rate) if rates else None
        result = EvalResult(
            step=step,
            judge=self.plan.eval_judge.name,
            vs_start=win_rate_from_rewards(current.rewards, start.rewards, k, temperature),
            mean_reward=_mean(current.rewards),
            start_mean_reward=_mean(start.rewards),
            mean_response_tokens=_mean(current.lengths),
            start_mean_response_tokens=_mean(start.lengths),
            kl_to_reference=kl,
            pool_worst=pool_worst,
            pool_versions=pool_versions,
        )
        log_eval(result)
        return result

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, state: DriverState, done: int, version: int, last_eval: EvalResult | None) -> DriverState:
        """Everything to continue after step `done` - 1, written atomically (a full disk raises DiskFull)."""
        pool_versions = set(ray.get(self.cluster.learners[0].opponent_versions.remote()))
        state = DriverState(
            **{
                **state.model_dump(),
                "next_step": done,
                "prompt_position": done * self.cfg.rollout.prompts_per_step,
                "policy_version": version,
                # the ring's snapshots, and this version's samples when it is pushed at the next step
                "pool": [e.model_dump() for v, e in sorted(self.evals.items()) if v in pool_versions | {version} and v != 0],
                "last_eval": last_eval.model_dump() if last_eval else None,
            }
        )
        with checkpoints.writing(self.plan.output, done) as tmp:
            ray.get([learner.save_checkpoint.remote(str(tmp.resolve())) for learner in self.cluster.learners])
            dump_config(self.cfg, tmp / "config.yaml")
            self.last_checkpoint = checkpoints.commit(tmp, state, self.cfg.checkpoint.keep_last)
        return state

    def restore(self, state: DriverState, checkpoint: Path) -> None:
        versions = ray.get([learner.load_checkpoint.remote(str(checkpoint.resolve())) for learner in self.cluster.learners])
        if versions[0] != state.policy_version:
            raise RuntimeError(f"{checkpoint}: learner restored version {versions[0]}, driver expected {state.policy_version}")
        ray.get(publish_weights(self.cluster, state.next_step, state.probe))
        self.last_checkpoint = checkpoint

    # ------------------------------------------------------------------ the end
    def finish(self, final: EvalResult | None) -> None:
        """final/ and summary.json (its presence marks the run finished), each replaced only once the
        new one is complete: a crash here leaves the previous ones (an extended run's) in place."""
        out = self.plan.output
        staging = out / ".final-tmp"
        shutil.rmtree(staging, ignore_errors=True)
        ray.get([learner.save.remote(str(staging.resolve()), self.model_path) for learner in self.cluster.learners])
        replace_directory(staging, out / "final")
        summary = {
            "steps": self.cfg.steps,
            "seconds": round(time.perf_counter() - self.started, 1),
            "final_eval": final.model_dump() if final else None,
        }
        write_atomically(out / "summary.json", json.dumps(summary, indent=2))
        if self.cfg.tracking.plots:
            from driver.report import make_plots, write_summary

            plots = make_plots(out)
            logger.info("learning curves: %s; summary: %s", out / "plots", write_summary(out))
            if not plots:
                logger.warning("no plots were written (metrics.jsonl had nothing to plot)")


def replace_directory(new: Path, target: Path) -> None:
    """Put `new` in place of `target`; the old one is deleted only after the new one is in place
    (a crash in between leaves it as `.<name>-old`)."""
    old = target.with_name(f".{target.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(cfg, path: Path) -> None:
    """OUTPUT/config.yaml, replaced atomically (a crash never leaves half of it for --resume to read)."""
    tmp = path.with_name(f".{path.name}.tmp")
    dump_config(cfg, tmp)
    os.replace(tmp, path)


def sample_log_entry(step: int, batches: list[RolloutBatch], judgements: list[list[Judgement]], examples: int = 3) -> dict:
    """samples.jsonl line: the step's prompt ids and a few responses with each judge's reward."""
    first = batches[0]
    return {
        "step": step,
        "policy_version": first.policy_version,
        "prompt_ids": [group[0].prompt_id for b in batches for group in b.groups()],
        "examples": [
            {
                "prompt": r.prompt_text,
                "response": r.response_text,
                "rewards": {j.judge: j.rewards[i] for j in judgements[0] if j.rewards is not None},
            }
            for i, r in enumerate(first.rollouts[:examples])
        ],
    }


def wandb_settings(plan: RunPlan) -> WandbSettings | None:
    project = plan.cfg.tracking.wandb_project
    return WandbSettings(project=project, run_name=plan.output.resolve().name) if project else None


def _mean(values) -> float:
    return sum(values) / len(values)


def log_eval(result: EvalResult) -> None:
    wr = result.vs_start
    verdict = "improved" if wr.ci_low > 0.5 else "got worse" if wr.ci_high < 0.5 else "did not measurably change"
    pool = ""
    if result.pool_worst is not None:
        pool = f"; worst win rate vs the opponent pool {result.pool_worst.win_rate:.3f} (versions {list(result.pool_versions)})"
    logger.info(
        "eval after step %d (judge %s, %d held-out prompts): win rate vs starting policy %.3f [95%% CI %.3f, %.3f] "
        "-> the policy %s; mean reward %.3f -> %.3f; mean response tokens %.1f -> %.1f; KL to reference %.3f%s",
        result.step + 1,
        result.judge,
        wr.num_prompts,
        wr.win_rate,
        wr.ci_low,
        wr.ci_high,
        verdict,
        result.start_mean_reward,
        result.mean_reward,
        result.start_mean_response_tokens,
        result.mean_response_tokens,
        result.kl_to_reference or 0.0,
        pool,
    )


def eval_record(result: EvalResult) -> dict[str, float]:
    wr = result.vs_start
    record = {
        "eval/win_rate": wr.win_rate,
        "eval/win_rate_ci_low": wr.ci_low,
        "eval/win_rate_ci_high": wr.ci_high,
        "eval/mean_reward": result.mean_reward,
        "eval/start_mean_reward": result.start_mean_reward,
        "eval/response_tokens": result.mean_response_tokens,
        "eval/kl_to_reference": result.kl_to_reference,
    }
    if result.pool_worst is not None:
        record["eval/pool_worst_win_rate"] = result.pool_worst.win_rate
        record["eval/pool_worst_ci_low"] = result.pool_worst.ci_low
        record["eval/pool_worst_ci_high"] = result.pool_worst.ci_high
    return record
