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
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from upath import UPath

from actors import telemetry
from deploy.loading import config_yaml, dump_config
from driver import checkpoints
from driver import storage as run_storage
from driver.builtin import resolve_model_path
from driver.checkpoints import DriverState, EvalSamples
from driver.cluster import (
    Cluster,
    StageTimeout,
    ask,
    asked_replicas,
    broadcast_weights,
    check_resources,
    connect,
    export_weights,
    form_weight_group,
    judge,
    replace_named,
    sample,
    sample_summarized,
    send_weights,
    shard,
    start_actors,
    start_judge,
    start_learners,
    start_rollout,
    swap_judges,
    wait_for,
    weight_receivers,
)
from driver.faults import FaultLog, KillSchedule, LearnerLost, Located, dead_of, first_line
from driver.judge_failures import JudgeFailures
from driver.manifest_watch import ManifestChange, ManifestWatcher
from driver.plan import RunPlan
from driver.resume import Checkpoint
from driver.signals import StopSignals
from driver.stats import rollout_stats, step_line
from driver.tracking import MetricsWriter, WandbSettings, truncate_after
from driver.watchdog import Watchdog
from learner.algorithms import algorithm_config, get_algorithm
from learner.opponents import snapshot_due
from protocols import (
    BatchSummary,
    EvalResult,
    Judgement,
    JudgeSpec,
    Prompt,
    PromptBatch,
    RolloutBatch,
    SyncReport,
    WeightVersion,
    summarize,
)
from protocols.judges import POINTWISE_KINDS
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
    summaries: list  # ObjectRef[BatchSummary] per batch: what the driver reads of it
    prompts: list[Prompt] = field(default_factory=list)  # empty: restored from a checkpoint (nothing to re-issue)
    seeds: list[int] = field(default_factory=list)  # per rollout worker
    weights: tuple | None = None  # (ObjectRef[WeightVersion], ObjectRef[weights]) served when it was launched
    gathered: bool = False  # its batches and verdicts are in hand: nothing to re-issue if an actor dies
    asked: dict = field(default_factory=dict)  # (batch, judge position) -> [(replica, ref)] of the judge calls


@dataclass
class Unsettled:
    """A trained step whose weights the receivers are still loading. Its record is completed and
    written once their reports are checked (`Loop.settle`), while the learner runs the next step."""

    step: int
    record: dict
    examples: dict
    exported: tuple  # (ObjectRef[WeightVersion], ObjectRef[weights])
    reports: list  # ObjectRef[SyncReport] per weight receiver


def run(plan: RunPlan, resume: Checkpoint | None = None) -> Summary:
    """Start (or join) Ray, start the actors, train, evaluate; `resume` continues plan.output from
    that checkpoint (chosen and checked by driver/resume.py). A learner rank that dies restores
    every rank from the last checkpoint and the loop goes on from there (driver/faults.py)."""
    cfg = plan.cfg
    started = time.perf_counter()
    model_path = resolve_model_path(cfg.model.path)
    if resume is not None:
        logger.info("resuming %s from %s (step %d of %d)", plan.output, resume.path, resume.step, cfg.steps)
    plan.output.mkdir(parents=True, exist_ok=True)
    write_config(cfg, plan.output / "config.yaml")
    stop = StopSignals()
    stop.install()
    watchdog = Watchdog.start()  # a SIGKILLed driver's local cluster is killed with it (driver/watchdog.py)
    try:
        we_started = connect(plan)
        stop.install()  # ray.init replaced SIGTERM's handler with its own
        try:
            check_resources(plan)
            cluster = start_actors(plan, model_path)
            if cfg.learner.weight_sync == "broadcast":
                form_weight_group(cluster, cfg, cfg.reliability.start_timeout_s)
            logger.info("actors ready in %.1fs; run directory %s", time.perf_counter() - started, plan.output.resolve())
            faults = FaultLog(plan.output, cfg.reliability.max_restarts)
            kills = KillSchedule(cfg.reliability.kill_schedule)
            state, checkpoint, rewound = (resume.state, resume.path, False) if resume else (None, None, False)
            while True:
                loop = Loop(plan, cluster, model_path, started, stop, faults, kills)
                try:
                    return loop.run(state, checkpoint, rewound=rewound)
                except LearnerLost as lost:
                    plan, checkpoint, rewound = loop.plan, loop.last_checkpoint, True
                    state = checkpoints.load_state(checkpoint) if checkpoint is not None else None
                    restore_learners(loop, lost)
        finally:
            if we_started:
                ray.shutdown()
    finally:
        watchdog.stop()
        stop.restore()


def restore_learners(loop: Loop, lost: LearnerLost) -> None:
    """After a learner rank died: every rank replaced; with no checkpoint yet, the rollout workers
    and self judges get the starting weights back (the loop then starts over); with one, the loop's
    restore loads it."""
    cluster, cfg, began = loop.cluster, loop.cfg, time.perf_counter()
    checkpoint = loop.last_checkpoint
    loop.faults.allow(lost.step, lost.where.name, lost.error, loop.resume_hint())
    learners, setups = replace_named(  # every rank: a dead one leaves the others stuck in its collectives
        lambda: start_learners(cfg, loop.model_path, cluster.pg, cfg.reliability.start_timeout_s), list(cluster.learners)
    )
    wait_for(setups, cfg.reliability.start_timeout_s, "restarting the learner", "start_timeout_s")
    cluster.learners = learners
    if cfg.learner.weight_sync == "broadcast":  # a new rank 0: every member joins its group
        form_weight_group(cluster, cfg, cfg.reliability.start_timeout_s)
    if checkpoint is None and loop.probe:  # (no probe yet: nothing was synced, the receivers hold the start)
        exported = export_weights(cluster, 0, loop.probe)
        wait_for(send_weights(cluster, exported), cfg.reliability.sync_timeout_s, "the starting weights", "sync_timeout_s")
    where = f"its checkpoint {checkpoint}" if checkpoint is not None else "the start (no checkpoint yet)"
    loop.faults.record(
        lost.step,
        lost.where,
        lost.error,
        f"every learner rank replaced; the run continues from {where}, redoing the steps since",
        time.perf_counter() - began,
    )


class Loop:
    def __init__(
        self,
        plan: RunPlan,
        cluster: Cluster,
        model_path: str,
        started: float,
        stop: StopSignals | None = None,
        faults: FaultLog | None = None,
        kills: KillSchedule | None = None,
    ):
        self.plan, self.cfg, self.cluster, self.model_path, self.started = plan, plan.cfg, cluster, model_path, started
        self.stop = stop or StopSignals()  # (not installed: never requested)
        self.faults = faults or FaultLog(plan.output, plan.cfg.reliability.max_restarts)
        self.kills = kills or KillSchedule(())
        self.last_checkpoint: UPath | None = None
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
        self.queue: collections.deque[InFlight] = collections.deque()  # launched, not yet trained on
        self.current: InFlight | None = None  # the step being trained on
        self.served: tuple | None = None  # (version, weights) refs the rollout workers and self judges hold now
        self.pending_loads: list = []  # weight loads of replaced actors, checked at the next sync
        self.dropped: list = []  # refs of work lost with a dead actor (see `drain_dropped`)
        self.probe: list[list[int]] = []
        self.unsettled: Unsettled | None = None  # the last step, until its weight sync is checked
        self.learner_version = 0  # the policy version of the learner's last update
        self.writer: MetricsWriter | None = None
        self.samples_out = None  # samples.jsonl, open while the loop runs
        self.ends: collections.deque[float] = collections.deque(maxlen=21)  # recent step ends: ETA
        self.final: EvalResult | None = None

    # ------------------------------------------------------------------ the loop
    def run(self, state: DriverState | None, checkpoint: UPath | None, rewound: bool = False) -> Summary:
        """Steps state.next_step.. (all, without a state); `rewound`: the loop starts again after a
        learner was lost, so the records past its starting point are redone like a resume's."""
        cfg = self.cfg
        restored: list[checkpoints.InFlightStep] = []
        if state is None:
            state = self.start_state()
        else:
            restored = self.restore(state, checkpoint)
        self.probe = [list(p) for p in state.probe]
        self.evals.update({e.version: e for e in (state.start, *state.pool)})
        stream = PromptStream(self.plan.task.train, seed=cfg.seed, position=state.prompt_position)
        self.queue = collections.deque(
            InFlight(
                s.step,
                [ray.put(b) for b in s.batches],
                [[ray.put(j) for j in per] for per in s.judgements],
                [ray.put(summarize(b)) for b in s.batches],
            )
            for s in restored
        )
        launched = state.next_step + len(self.queue)
        done = state.next_step
        version = state.policy_version
        self.ends.append(time.perf_counter())
        self.final = final = state.last_eval
        resume_step = state.next_step if (checkpoint is not None or rewound) else None
        samples_log = self.plan.output / SAMPLES_FILE
        if resume_step is not None:
            truncate_after(samples_log, resume_step)
        with (
            MetricsWriter(
                self.plan.output, tensorboard=cfg.tracking.tensorboard, wandb=wandb_settings(self.plan), resume_step=resume_step
            ) as writer,
            samples_log.open("a") as samples,
        ):
            self.writer, self.samples_out = writer, samples
            for step in range(state.next_step, cfg.steps):
                if self.stop.requested:  # a SIGTERM / SIGINT: stop at this step boundary
                    break
                self.kills.fire(self.cluster, step)
                if self.watcher is not None and launched < cfg.steps:
                    self.maybe_swap_judges(self.queue, launched, self.probe)
                while launched < cfg.steps and len(self.queue) <= cfg.rollout.max_staleness:
                    self.queue.append(self.launch(launched, stream))
                    launched += 1
                self.current = self.queue.popleft()
                self.train_step(self.current, self.probe, queue_depth=len(self.queue))
                self.current = None
                done = step + 1
                version = self.learner_version
                evaluating = done == cfg.steps or bool(cfg.eval.every and done % cfg.eval.every == 0)
                snapshot = self.uses_pool and snapshot_due(version, self.snapshot_every) and not evaluating
                checkpointing = bool(cfg.checkpoint.every and done % cfg.checkpoint.every == 0)  # (the last step's included)
                if snapshot or evaluating or checkpointing:
                    self.settle()  # what follows uses the synced receivers, and the step's record comes first
                if snapshot:
                    self.eval_samples(version, step)  # the next snapshot's samples, while it is served
                if evaluating:  # (also records this version's samples for the pool)
                    self.final = final = self.evaluate(version, step, state.start)
                    self.emit(writer, {"step": step, "time": round(time.perf_counter() - self.started, 3), **eval_record(final)})
                if checkpointing:
                    state = self.checkpoint(state, done, version, final)
            self.settle()
        if done < cfg.steps:
            return self.stopped(state, done, version, final)
        self.finish(final)
        return Summary(steps=cfg.steps, seconds=time.perf_counter() - self.started, final_eval=final)

    def launch(self, step: int, stream: PromptStream) -> InFlight:
        """Sample step `step` on every rollout worker and have every judge judge it (ObjectRefs)."""
        cfg = self.cfg
        prompts = stream.next(cfg.rollout.prompts_per_step)
        seeds = [derive_seed(cfg.seed, "train", step, i) for i in range(len(self.cluster.rollouts))]
        k = cfg.rollout.samples_per_prompt
        refs, summaries = sample_summarized(self.cluster, step, prompts, k, seeds)
        groups = [len(part) for part in shard(prompts, len(self.cluster.rollouts))]
        judgements, asked = judge(self.cluster.judges, refs, step, groups, k)
        return InFlight(step, refs, judgements, summaries, prompts, seeds, self.served, asked=asked)

    def start_state(self) -> DriverState:
        """Step 0: the starting policy's held-out samples (the win-rate baseline) and the sync probe."""
        start, batches = self.eval_samples(0, step=0)
        probe = [r.sequence_token_ids[:32].tolist() for r in batches[0].rollouts[:2]]
        # the starting weights, by reference: what a replaced actor re-does the first batches with
        self.served = self.learner_call(0, lambda: export_weights(self.cluster, 0, probe))
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

    def train_step(self, item: InFlight, probe: list[list[int]], queue_depth: int) -> None:
        """One step: gather, learn, publish the new weights. While the learner works, the previous
        step's weight sync is checked and its record written; this step's waits for the next one."""
        rc = self.cfg.reliability
        step_start = time.perf_counter()
        summaries, judgements, judge_start, judge_seconds = self.recovering(item.step, lambda: self.gather(item))
        item.gathered = True
        summaries, judgements, trained = self.judge_failures.apply(
            item.step, summaries, judgements, item.batches, self.cluster.judge_specs
        )
        learn_start = time.perf_counter()
        calls = [
            learner.train_step.remote(
                item.step, self.plan.judge_weights, self.plan.judge_temperatures, [tuple(j) for j in judgements], *trained
            )
            for learner in self.cluster.learners
        ]
        try:
            sync_wait = self.settle()  # the receivers load the previous step's weights beside this update
        except BaseException:
            self.dropped += calls
            raise
        results = self.learner_call(
            item.step,
            lambda: wait_for(
                calls, rc.learn_timeout_s, f"the learner's step {item.step}", "learn_timeout_s", self.learner_names()
            ),
        )
        if self.cfg.learner.weight_sync == "broadcast":
            bucket = self.cfg.learner.weight_bucket_mb << 20
            exported, sent = self.learner_call(item.step, lambda: broadcast_weights(self.cluster, item.step, probe, bucket))
        else:
            exported = self.learner_call(item.step, lambda: export_weights(self.cluster, item.step, probe))
            sent = send_weights(self.cluster, exported)
        self.served = exported
        waits = {
            "time/rollout_wait": judge_start - step_start,
            "time/judge_wait": learn_start - judge_start,
            "time/learner_wait": time.perf_counter() - learn_start - sync_wait,
            "time/sync_wait": sync_wait,  # on the previous step's sync, while this step's update ran
        }
        record = {
            "step": item.step,
            "time": round(time.perf_counter() - self.started, 3),
            **rollout_stats(summaries, judgements, self.plan.judge_weights),
            "rollout/queue_depth": float(queue_depth),
            "judge/seconds": judge_seconds,
            **results[0].metrics,
            "learner/policy_version": float(results[0].policy_version),
            "learner/staleness": float(results[0].policy_version - 1 - results[0].trained_on_version),
            "time/step_seconds": time.perf_counter() - step_start,
            **waits,  # the driver's waits on each stage; the rest of step_seconds is its own bookkeeping
            **self.judge_events,  # cumulative: a swap shows up from the first step the new judges labelled
            **self.judge_failures.metrics(),
            **self.faults.metrics(),
        }
        record["rollout/tokens_per_s"] = record["rollout/response_tokens"] / record["time/step_seconds"]
        self.learner_version = results[0].policy_version
        self.unsettled = Unsettled(item.step, record, sample_log_entry(item.step, summaries, judgements), exported, sent)
        self.drain_dropped()

    def settle(self) -> float:
        """Check the last trained step's weight sync (every receiver's load and probe, within
        reliability.sync_timeout_s; a receiver that died is replaced and every receiver sent the
        weights again), then write that step's record and samples. Returns the seconds waited."""
        u, self.unsettled = self.unsettled, None
        if u is None:
            return 0.0
        start = time.perf_counter()
        reports = self.checked_sync(u.step, u.exported, u.reports)
        waited = time.perf_counter() - start
        version: WeightVersion = ray.get(u.exported[0])
        u.record.update(
            {
                "sync/seconds": max(r.seconds for r in reports),
                "sync/max_probe_gap": max(r.max_abs_logprob_diff for r in reports),
                "sync/export_seconds": version.export_seconds,
            }
        )
        self.publish(u)
        return waited

    def publish(self, u: Unsettled) -> None:
        """A settled step's record to the metrics, its samples to samples.jsonl, its progress line."""
        assert self.writer is not None and self.samples_out is not None
        cfg, record, step = self.cfg, u.record, u.step
        self.emit(self.writer, record)
        self.samples_out.write(json.dumps(u.examples) + "\n")
        self.samples_out.flush()
        self.ends.append(time.perf_counter())
        done = step + 1
        if step % cfg.log_every == 0 or done == cfg.steps:
            eta = (self.ends[-1] - self.ends[0]) / max(len(self.ends) - 1, 1) * (cfg.steps - done)
            logger.info(step_line(record, cfg.steps, eta, self.final.vs_start.win_rate if self.final else None))

    def gather(self, item: InFlight) -> tuple[list[BatchSummary], list[list[Judgement]], float, float]:
        """The summaries of the step's batches (the batches themselves stay in the object store) and
        every judge's verdicts on them, each wait bounded."""
        rc = self.cfg.reliability
        summaries: list[BatchSummary] = wait_for(
            item.summaries,
            rc.sample_timeout_s,
            f"step {item.step}'s samples",
            "sample_timeout_s",
            [f"rollout-{i}" for i in range(len(item.summaries))],
        )
        judge_start = time.perf_counter()  # what was left of sampling when the step began, then judging
        judgements = [self.verdicts(item, b, summary.rollouts) for b, summary in enumerate(summaries)]
        return summaries, judgements, judge_start, time.perf_counter() - judge_start

    def verdicts(self, item: InFlight, b: int, rollouts: int) -> list[Judgement]:
        """Every judge's Judgement of batch `b` of `item`, within reliability.judge_timeout_s. A judge
        that overruns fails the run under on_failure 'fail'; under 'skip' the batch counts as unjudged
        by it and its hung replica is replaced (and whatever else it owed re-issued)."""
        refs = item.judgements[b]
        timeout = self.cfg.reliability.judge_timeout_s
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        out: list[Judgement] = []
        for position, (name, ref) in enumerate(zip(list(self.cluster.judges), refs, strict=True)):
            if ref in ready:
                out.append(ray.get(ref))
                continue
            spec = self.cluster.judge_specs[name]
            hung = [r for r, call in self.asked(item, b, position) if not ray.wait([call], timeout=0)[0]]
            what = (
                f"judge {name!r} (kind {spec.kind}, replica {', '.join(map(str, hung)) or '?'}) did not judge step "
                f"{item.step}'s batch {b} within {timeout:g}s (reliability.judge_timeout_s)"
            )
            if spec.on_failure != "skip":
                raise StageTimeout(f"{what}; its manifest entry has on_failure: fail (use skip to go on without it)")
            logger.warning("%s: its verdicts count as missing (on_failure: skip); replacing the replica", what)
            out.append(unjudged(name, spec, rollouts, f"timed out after {timeout:g}s"))
            for replica in hung:
                self.replace_recorded(
                    Located("judge", replica, name),
                    item.step,
                    StageTimeout(what),
                    "its verdicts on the batch counted as missing; hung replica ",
                )
        return out

    def sync(self, step: int, probe: list[list[int]]) -> list[SyncReport]:
        """Learner -> rollout workers and self judges, waited for."""
        exported = self.learner_call(step, lambda: export_weights(self.cluster, step, probe))
        self.served = exported
        return self.checked_sync(step, exported, send_weights(self.cluster, exported))

    def checked_sync(self, step: int, exported: tuple, sent: list) -> list[SyncReport]:
        """The receivers' reports on the weights `exported` (`sent`: their load calls), and those of
        replaced actors' loads, within reliability.sync_timeout_s. A receiver that died is replaced
        and every receiver is sent the weights again."""
        refs: list | None = sent

        def check() -> list[SyncReport]:
            nonlocal refs
            if refs is None:  # after a recovery
                refs = send_weights(self.cluster, exported)
            receivers = [f"rollout-{i}" for i in range(len(self.cluster.rollouts))]
            pending, self.pending_loads = self.pending_loads, []
            timeout = self.cfg.reliability.sync_timeout_s
            what = f"the weight sync after step {step}"
            try:
                reports = wait_for([*refs, *pending], timeout, what, "sync_timeout_s", receivers)
                if any(r is None for r in reports):  # a failed broadcast (its receivers said so): by the object store
                    logger.warning("step %d: the weight broadcast failed; sending the weights through the object store", step)
                    refs = send_weights(self.cluster, exported)
                    reports = wait_for(refs, timeout, what, "sync_timeout_s", receivers)
            except ray.exceptions.RayError:  # (a death during the fallback too: its refs are dropped, re-sent after)
                self.dropped += refs
                refs = None
                raise
            return reports[: len(refs)]

        return self.recovering(step, check)

    def maybe_swap_judges(self, queue, launched: int, probe: list[list[int]]) -> None:
        """At a step boundary: if the manifest file changed, swap to its judges or say why not.

        Batches already launched keep the judges they were sent to (their judgements are awaited
        here, so the old actors owe nothing when they are killed); step `launched` is the first
        one the new judges label.
        """
        change = self.watcher.poll()
        if change is None:
            return
        self.settle()  # a retired self judge owes no weight load
        event = {"step": launched, "manifest": str(self.plan.manifest_path), "digest": change.digest}
        if change.manifest is not None:
            owed = [ref for item in queue for refs in item.judgements for ref in refs]
            if owed:  # drain: the old judges finish what they were given
                timeout = self.cfg.reliability.judge_timeout_s
                ready, _ = ray.wait(owed, num_returns=len(owed), timeout=timeout)
                if len(ready) < len(owed):
                    raise StageTimeout(
                        f"the judges did not finish the {len(owed) - len(ready)} batches they owe within {timeout:g}s "
                        f"(reliability.judge_timeout_s) before the judge swap at step {launched}"
                    )
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
        """Held-out samples of the policy the rollout workers serve now (version `version`), with
        the eval judge's rewards; redone whole after a rollout worker or eval judge is replaced."""
        samples, batches = self.recovering(step, lambda: self._eval_samples(version, step))
        self.evals[version] = samples
        return samples, batches

    def _eval_samples(self, version: int, step: int) -> tuple[EvalSamples, list[RolloutBatch]]:
        ev, timeout = self.cfg.eval, self.cfg.reliability.eval_timeout_s
        seeds = [derive_seed(self.cfg.seed, "eval", version, i) for i in range(len(self.cluster.rollouts))]
        refs = sample(self.cluster, step, self.heldout, ev.samples_per_prompt, seeds, ev.temperature)
        groups = [len(part) for part in shard(self.heldout, len(refs))]
        judgements, _ = judge({"eval": self.cluster.eval_judge}, refs, step, groups, ev.samples_per_prompt)
        names = [f"rollout-{i}" for i in range(len(refs))]
        batches: list[RolloutBatch] = wait_for(refs, timeout, f"held-out samples of version {version}", "eval_timeout_s", names)
        verdicts = wait_for([per_batch[0] for per_batch in judgements], timeout, "the eval judge", "eval_timeout_s")
        rewards = [r for j in verdicts for r in j.rewards]
        lengths = [len(r.response_token_ids) for b in batches for r in b.rollouts]
        return EvalSamples(version=version, rewards=tuple(rewards), lengths=tuple(lengths)), batches

    def evaluate(self, version: int, step: int, start: EvalSamples) -> EvalResult:
        current, batches = self.eval_samples(version, step)
        timeout = self.cfg.reliability.eval_timeout_s
        kl = self.learner_call(
            step,
            lambda: wait_for(
                [learner.kl_to_reference.remote(*batches) for learner in self.cluster.learners],
                timeout,
                "the KL to the reference",
                "eval_timeout_s",
                self.learner_names(),
            )[0],
        )
        k, temperature = self.cfg.eval.samples_per_prompt, self.plan.eval_judge.temperature
        pool_worst, pool_versions = None, ()
        if self.uses_pool:
            pool_versions = tuple(sorted(set(self.opponent_versions(step))))
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

    def opponent_versions(self, step: int) -> list[int]:
        return self.learner_call(
            step,
            lambda: wait_for(
                self.cluster.learners[0].opponent_versions.remote(),
                self.cfg.reliability.learn_timeout_s,
                "the opponent pool's versions",
                "learn_timeout_s",
                ["learner-0"],
            ),
        )

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, state: DriverState, done: int, version: int, last_eval: EvalResult | None) -> DriverState:
        """Everything to continue after step `done` - 1, written atomically (a full disk raises DiskFull):
        the learner's state, and the steps already sampled and judged ahead of it (max_staleness > 0)."""
        pool_versions = set(self.opponent_versions(done))
        ahead = [self.recovering(done, lambda item=item: self.settled(item)) for item in self.queue]
        state = DriverState(
            **{
                **state.model_dump(),
                "next_step": done,
                "prompt_position": (done + len(ahead)) * self.cfg.rollout.prompts_per_step,
                "in_flight": [s.step for s in ahead],
                "policy_version": version,
                # the ring's snapshots, and this version's samples when it is pushed at the next step
                "pool": [e.model_dump() for v, e in sorted(self.evals.items()) if v in pool_versions | {version} and v != 0],
                "last_eval": last_eval.model_dump() if last_eval else None,
            }
        )
        with checkpoints.writing(self.run_location, done) as tmp:
            targets = run_storage.save_targets(self.learner_nodes(done), tmp, shared=self.cfg.storage is not None)
            returned = self.learner_call(
                done,
                lambda: wait_for(
                    [learner.save_checkpoint.remote(target) for learner, target in zip(self.cluster.learners, targets)],
                    self.cfg.reliability.checkpoint_timeout_s,
                    f"checkpoint step-{done:06d}",
                    "checkpoint_timeout_s",
                    self.learner_names(),
                ),
            )
            run_storage.write_returned(returned, tmp)
            if ahead:
                checkpoints.save_in_flight(tmp, ahead)
            (tmp / "config.yaml").write_text(config_yaml(self.cfg))
            if self.cfg.storage is not None:  # the records up to here, before the checkpoint counts
                run_storage.mirror(self.plan.output, self.cfg.storage)
            self.last_checkpoint = checkpoints.commit(tmp, state, self.cfg.checkpoint.keep_last)
        return state

    @property
    def run_location(self) -> UPath:
        """Where checkpoints go: the storage (config `storage`) or the run directory."""
        return checkpoints.run_location(self.plan.output, self.cfg.storage)

    def learner_nodes(self, step: int) -> list[str]:
        """The Ray node of each learner rank (they may have been replaced on other nodes)."""
        return self.learner_call(
            step,
            lambda: wait_for(
                [learner.node_id.remote() for learner in self.cluster.learners],
                self.cfg.reliability.learn_timeout_s,
                "the learner ranks' nodes",
                "learn_timeout_s",
                self.learner_names(),
            ),
        )

    def settled(self, item: InFlight) -> checkpoints.InFlightStep:
        """A launched step's batches and verdicts, waited for (to be saved with a checkpoint)."""
        _, judgements, *_ = self.gather(item)
        batches = ray.get(item.batches)  # (done: their summaries are in)
        return checkpoints.InFlightStep(step=item.step, batches=tuple(batches), judgements=tuple(map(tuple, judgements)))

    def restore(self, state: DriverState, checkpoint: UPath | None) -> list[checkpoints.InFlightStep]:
        """The learner ranks load `checkpoint` and the rollout workers and self judges get its weights;
        returns its in-flight steps (trained on next, as the uninterrupted run did)."""
        assert checkpoint is not None
        rc = self.cfg.reliability
        sources = run_storage.load_arguments(self.learner_nodes(state.next_step), checkpoint, shared=self.cfg.storage is not None)
        versions = self.learner_call(
            state.next_step,
            lambda: wait_for(
                [learner.load_checkpoint.remote(*source) for learner, source in zip(self.cluster.learners, sources)],
                rc.checkpoint_timeout_s,
                f"loading {checkpoint}",
                "checkpoint_timeout_s",
                self.learner_names(),
            ),
        )
        if versions[0] != state.policy_version:
            raise RuntimeError(f"{checkpoint}: learner restored version {versions[0]}, driver expected {state.policy_version}")
        self.probe = [list(p) for p in state.probe]
        self.sync(state.next_step, self.probe)
        self.last_checkpoint = checkpoint
        return checkpoints.load_in_flight(checkpoint, state)

    # ------------------------------------------------------------------ recovery (driver/faults.py)
    def recovering(self, step: int, call):
        """call(), again after each recovery from an actor's death (a learner's: LearnerLost)."""
        while True:
            try:
                return call()
            except ray.exceptions.RayError as err:
                self.recover(err, step)

    def learner_call(self, step: int, call):
        """call() of the learner ranks; a rank's death is LearnerLost (the run restores from its checkpoint)."""
        try:
            return call()
        except ray.exceptions.RayError as err:
            where, death = dead_of(self.cluster, err)
            if where is not None and where.kind == "learner":
                raise LearnerLost(where, step, death) from err
            raise

    def recover(self, err: ray.exceptions.RayError, step: int) -> None:
        """Replace the actor whose death `err` reports and re-issue its lost work; re-raise `err` if
        it is not the death of one of the run's actors."""
        where, death = dead_of(self.cluster, err)
        if where is None:
            raise err
        if where.kind == "learner":
            raise LearnerLost(where, step, death) from err
        self.replace_recorded(where, step, death)

    def replace_recorded(self, where: Located, step: int, err: BaseException, prefix: str = "") -> None:
        """`replace` within the restart budget, recorded (faults.jsonl, faults/* metrics)."""
        self.faults.allow(step, where.name, err, self.resume_hint())
        began = time.perf_counter()
        action = prefix + self.replace(where)
        self.faults.record(step, where, err, action, time.perf_counter() - began)

    def in_flight(self) -> list[InFlight]:
        return [*([self.current] if self.current is not None else []), *self.queue]

    def replace(self, where: Located) -> str:
        """A new actor in place of the one at `where`, given back the work it owed; returns what was done."""
        cfg, cluster, items = self.cfg, self.cluster, [i for i in self.in_flight() if i.prompts and not i.gathered]
        rc = cfg.reliability
        held: dict[str, tuple | None] = {}  # actor id -> weights it will hold once its queued calls ran
        if where.kind == "rollout":
            i = where.index
            new = replace_named(lambda: start_rollout(cfg, self.model_path, i, cluster.pg), cluster.rollouts[i])
            wait_for(new.policy_version.remote(), rc.start_timeout_s, f"restarting {where.name}", "start_timeout_s")
            cluster.rollouts[i] = new
            if cfg.learner.weight_sync == "broadcast":  # the group lost a member: every member joins a new one
                form_weight_group(cluster, cfg, rc.start_timeout_s)
            held[new._actor_id.hex()] = None  # a new engine holds the starting weights
            for item in items:
                self.load(new, item.weights, held)
                part = shard(item.prompts, len(cluster.rollouts))[i]
                batch = PromptBatch(step=item.step, prompts=tuple(part), samples_per_prompt=cfg.rollout.samples_per_prompt)
                self.dropped += [item.batches[i], item.summaries[i], *item.judgements[i], *self.calls(item, i)]
                item.batches[i], item.summaries[i] = new.sample.remote(batch, item.seeds[i], None)
                # every judge's verdicts on the lost batch went with it
                item.judgements[i] = [self.judge_again(name, item, i, held) for name in cluster.judges]
            self.load(new, self.served, held)
            self.restore_served(held)
            steps = [item.step for item in items]
            return f"replaced; re-sampled its batches of steps {steps} with their seeds and weights" if steps else "replaced"
        if where.kind == "eval":
            spec = cluster.eval_spec
            assert spec is not None
            new = replace_named(
                lambda: start_judge(spec, where.index, cfg, self.model_path, prefix="eval-judge"), cluster.eval_judge[where.index]
            )
            wait_for(new.__ray_ready__.remote(), rc.start_timeout_s, f"restarting {where.name}", "start_timeout_s")
            cluster.eval_judge[where.index] = new
            return "replaced (the evaluation is redone)"
        name, spec = where.judge, cluster.judge_specs[str(where.judge)]
        assert name is not None
        new = replace_named(lambda: start_judge(spec, where.index, cfg, self.model_path), cluster.judges[name][where.index])
        wait_for(new.__ray_ready__.remote(), rc.start_timeout_s, f"restarting {where.name}", "start_timeout_s")
        cluster.judges[name][where.index] = new
        held[new._actor_id.hex()] = None  # a new self judge holds the starting weights
        position, again = list(cluster.judges).index(name), []
        for item in items:
            for b in range(len(item.batches)):
                if where.index in [r for r, _ in self.asked(item, b, position)]:
                    self.dropped += [item.judgements[b][position], *self.calls(item, b, position)]
                    item.judgements[b][position] = self.judge_again(name, item, b, held)
                    again.append((item.step, b))
        if spec.kind == "self":
            self.load(new, self.served, held)
        self.restore_served(held)
        return f"replaced; re-judged (step, batch) {again}" if again else "replaced"

    def drain_dropped(self) -> None:
        """Fetch the refs of work lost with a dead actor once they have failed: Ray would otherwise
        report each as an unhandled error when it is garbage-collected. The fault itself is recorded
        (faults.jsonl) and its work re-done; these errors only repeat it."""
        if not self.dropped:
            return
        self.dropped = list(dict.fromkeys(self.dropped))  # (a whole batch's verdict is its only call)
        ready, self.dropped = ray.wait(self.dropped, num_returns=len(self.dropped), timeout=0)
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as err:
                logger.debug("work lost with a replaced actor: %s", first_line(err))

    def judge_again(self, name: str, item: InFlight, b: int, held: dict[str, tuple | None]):
        """Judge `name`'s verdicts on batch `b` of `item` asked again; a self judge is given the
        weights the item was launched with first (`held` tracks what each replica holds)."""
        cfg, replicas, position = self.cfg, self.cluster.judges[name], list(self.cluster.judges).index(name)
        groups = len(shard(item.prompts, len(self.cluster.rollouts))[b])
        if self.cluster.judge_specs[name].kind == "self":  # only the replicas that will be asked
            for r in asked_replicas(len(replicas), item.step, b, groups):
                self.load(replicas[r], item.weights, held)
        ref, item.asked[b, position] = ask(replicas, item.batches[b], item.step, b, groups, cfg.rollout.samples_per_prompt)
        return ref

    def asked(self, item: InFlight, b: int, position: int) -> list[tuple[int, object]]:
        """[(replica, ref)] of the calls behind judge `position`'s verdict on batch `b` of `item`
        (recorded by `ask`; else the replica whose turn it was took the whole batch)."""
        if (b, position) in item.asked:
            return item.asked[b, position]
        replicas = list(self.cluster.judges.values())[position]
        return [((item.step + b) % len(replicas), item.judgements[b][position])]

    def calls(self, item: InFlight, b: int, position: int | None = None) -> list:
        """The judge calls behind batch `b`'s verdict refs (of one judge, or of all): work lost with them."""
        positions = range(len(item.judgements[b])) if position is None else [position]
        return [call for p in positions for _, call in item.asked.get((b, p), [])]

    def load(self, actor, weights: tuple | None, held: dict[str, tuple | None]) -> None:
        """Queue `weights` on `actor` unless it will hold them already (a live actor holds the served
        weights); the load's report is checked at the next sync."""
        key = actor._actor_id.hex()
        if weights is None or held.get(key, self.served) is weights:
            return
        version_ref, weights_ref = weights
        self.pending_loads.append(actor.load_weights.remote(weights_ref, version_ref))
        held[key] = weights

    def restore_served(self, held: dict[str, tuple | None]) -> None:
        """Every weight follower that was given older weights for re-done work gets the served ones back."""
        followers = {a._actor_id.hex(): a for a in weight_receivers(self.cluster)}
        for key, weights in list(held.items()):
            if key in followers and weights is not self.served:
                self.load(followers[key], self.served, held)

    def learner_names(self) -> list[str]:
        return [f"learner-{r}" for r in range(len(self.cluster.learners))]

    def resume_hint(self) -> str:
        if self.last_checkpoint is not None:
            return f"continue from its checkpoint {self.last_checkpoint} with `python -m driver --resume {self.plan.output}`"
        return "it has no checkpoint yet: start it again"

    # ------------------------------------------------------------------ the end
    def finish(self, final: EvalResult | None) -> None:
        """final/ and summary.json (its presence marks the run finished), each replaced only once the
        new one is complete: a crash here leaves the previous ones (an extended run's) in place."""
        out = self.plan.output
        staging = out / ".final-tmp"
        shutil.rmtree(staging, ignore_errors=True)
        targets = run_storage.save_targets(self.learner_nodes(self.cfg.steps), UPath(staging.resolve()), shared=False)
        returned = self.learner_call(
            self.cfg.steps,
            lambda: wait_for(
                [learner.save.remote(target, self.model_path) for learner, target in zip(self.cluster.learners, targets)],
                self.cfg.reliability.checkpoint_timeout_s,
                "saving the final policy",
                "checkpoint_timeout_s",
                self.learner_names(),
            ),
        )
        run_storage.write_returned(returned, UPath(staging))
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
        if self.cfg.storage is not None:
            sent = run_storage.mirror(out, self.cfg.storage)
            logger.info("run directory copied to %s (%.1f MiB)", self.cfg.storage, sent / (1 << 20))


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


def sample_log_entry(step: int, summaries: list[BatchSummary], judgements: list[list[Judgement]]) -> dict:
    """samples.jsonl line: the step's prompt ids and a few responses (the first batch's summary
    examples) with each judge's reward."""
    first = summaries[0]
    return {
        "step": step,
        "policy_version": first.policy_version,
        "prompt_ids": [prompt_id for summary in summaries for prompt_id in summary.prompt_ids],
        "examples": [
            {
                "prompt": example.prompt,
                "response": example.response,
                "rewards": {j.judge: j.rewards[i] for j in judgements[0] if j.rewards is not None},
            }
            for i, example in enumerate(first.examples)
        ],
    }


def unjudged(name: str, spec: JudgeSpec, n: int, reason: str) -> Judgement:
    """Judge `name`'s Judgement of a batch of `n` rollouts when it gave none at all (it timed out
    under on_failure: skip)."""
    everything = {"failed": n, "unjudged": tuple(range(n)), "failure": reason}
    if spec.kind in POINTWISE_KINDS:
        return Judgement(judge=name, rewards=(math.nan,) * n, **everything)
    return Judgement(judge=name, preferences=(), **everything)


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
