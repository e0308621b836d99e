"""Starting Ray and the run's actors, and the few calls the loop makes on them.

Every call here returns ObjectRefs; the loop in driver/run.py decides when to wait.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray

from deploy import placement
from driver.builtin import resolve_model_path
from driver.checkout import worker_runtime_env
from driver.plan import RunPlan
from protocols import JudgeSpec, Prompt, PromptBatch, RunConfig, part_bounds

logger = logging.getLogger("driver")
T = TypeVar("T")


@dataclass
class Cluster:
    """Handles of every actor of the run."""

    rollouts: list
    learners: list
    judges: dict[str, list]  # name -> replicas
    eval_judge: list
    # name -> spec of every training judge; kept in step with `judges` (publish_weights reads the kinds)
    judge_specs: dict[str, JudgeSpec] = field(default_factory=dict)
    # ObjectRef[RolloutBatch] of the latest batch sampled (`sample`): what new judges are tried on
    last_sampled: Any = None
    # the placement group of the rollout workers' and learner ranks' bundles (a replacement takes its bundle)
    pg: Any = None
    # name -> the eval judge's spec (its replicas are `eval_judge`)
    eval_spec: JudgeSpec | None = None


def connect(plan: RunPlan) -> bool:
    """Join `--address`/RAY_ADDRESS or start a local cluster. True if we started it."""
    address = plan.cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=worker_runtime_env(joined=True) or None)
        logger.info("joined Ray cluster at %s", address)
        return False
    needed = placement.required_resources(plan.cfg, [*plan.manifest.judges, plan.eval_judge])
    shared = placement.shared_cores_warning(plan.cfg, os.cpu_count() or 1)
    if shared:
        logger.warning(shared)
    loopback = plan.cfg.security.local_cluster_bind == "loopback"
    with loopback_node(loopback):
        ray.init(
            address="local",  # a new cluster even if `ray start` left one running on this machine
            num_cpus=max(os.cpu_count() or 1, math.ceil(needed["CPU"])),
            resources=placement.local_resources(plan.cfg, [*plan.manifest.judges, plan.eval_judge]),  # one node: all
            include_dashboard=False,
            runtime_env=worker_runtime_env(joined=False),  # the workers import the project from this checkout
            **({"_node_ip_address": LOOPBACK} if loopback else {}),
        )
    logger.info(
        "started a local Ray cluster on %s (%s)", LOOPBACK if loopback else "the node's network address", ray.cluster_resources()
    )
    return True


LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def loopback_node(on: bool = True) -> Iterator[None]:
    """While on: a Ray node started here takes 127.0.0.1 as its address, so that every service it
    starts (GCS, raylet, workers, the dashboard agent and its unauthenticated Prometheus metrics
    endpoint) listens on 127.0.0.1 only.

    Ray 2.60 replaces a loopback `_node_ip_address` by the machine's network address, unless its
    single-machine mode is on: the flag `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` sets, read once when
    ray is imported (ray._private.ray_constants.ENABLE_RAY_CLUSTER). It is set only around the
    start of the node: nothing else reads it (`ray start` on the command line honours the
    environment variable itself; docs/security.md).
    """
    if not on:
        yield
        return
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def check_resources(plan: RunPlan) -> None:
    needed = placement.required_resources(plan.cfg, [*plan.manifest.judges, plan.eval_judge])
    have = ray.cluster_resources()
    for key, amount in needed.items():
        if amount > have.get(key, 0.0) + 1e-9:
            raise RuntimeError(f"the run needs {amount:g} {key} but the cluster has {have.get(key, 0.0):g}: {have}")


def start_actors(plan: RunPlan, model_path: str, timeout_s: float | None = None) -> Cluster:
    """Every actor of the run, started and ready (models loaded) within `timeout_s`."""
    cfg = plan.cfg
    timeout_s = cfg.reliability.start_timeout_s if timeout_s is None else timeout_s
    pg = placement.create_placement_group(cfg)
    rollouts = [start_rollout(cfg, model_path, i, pg) for i in range(cfg.rollout.num_workers)]
    learners, setups = start_learners(cfg, model_path, pg, timeout_s)
    judges = start_judges(plan.manifest.judges, cfg, model_path)
    eval_judge = start_judges([plan.eval_judge], cfg, model_path, prefix="eval-judge")[plan.eval_judge.name]
    wait_for(setups, timeout_s, "starting the learner", "start_timeout_s", [f"learner-{r}" for r in range(len(learners))])
    wait_for(
        [r.policy_version.remote() for r in rollouts],
        timeout_s,
        "starting the rollout workers (vLLM engines)",
        "start_timeout_s",
        [f"rollout-{i}" for i in range(len(rollouts))],
    )
    return Cluster(
        rollouts=rollouts,
        learners=learners,
        judges=judges,
        eval_judge=eval_judge,
        judge_specs={spec.name: spec for spec in plan.manifest.judges},
        pg=pg,
        eval_spec=plan.eval_judge,
    )


def start_rollout(cfg: RunConfig, model_path: str, index: int, pg: Any) -> Any:
    """Rollout worker `index` in its bundle of `pg` (a replacement takes the dead one's name and bundle)."""
    from actors.rollout import RolloutActor

    return RolloutActor.options(**placement.rollout_options(cfg, index, pg)).remote(
        model_path, cfg.rollout, cfg.model.dtype, cfg.seed + index, f"rollout-{index}", cfg.model.chat_template
    )


def start_learners(cfg: RunConfig, model_path: str, pg: Any, timeout_s: float) -> tuple[list, list]:
    """Every learner rank, and the ObjectRefs of their `setup` (the torch.distributed group joined)."""
    from actors.learner import LearnerActor

    world = cfg.learner.num_workers
    learners = [LearnerActor.options(**placement.learner_options(cfg, r, pg)).remote(r, world) for r in range(world)]
    rendezvous = learners[0].rendezvous.remote(cfg.learner.master_port)
    addr, port = wait_for(rendezvous, timeout_s, "starting learner-0", "start_timeout_s")
    return learners, [learner.setup.remote(model_path, cfg, addr, port) for learner in learners]


def replace_named(start: Callable[[], T], old: Any | list | None = None, timeout_s: float = 60.0) -> T:
    """start() a replacement for `old` (a handle or a list of them) under the same Ray names: the old
    actors are killed (if still alive) and awaited dead first, since a name is free only then."""
    olds = [] if old is None else old if isinstance(old, list) else [old]
    for handle in olds:
        ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + timeout_s
    for handle in olds:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=max(1.0, deadline - time.monotonic()))
        except ray.exceptions.RayActorError:
            pass  # dead, as asked
        except ray.exceptions.GetTimeoutError:
            raise StageTimeout(f"{handle} did not stop within {timeout_s:g}s of being killed") from None
    while True:
        try:
            return start()
        except ValueError as err:  # Ray: "The name ... is already taken" until the GCS drops the dead actor's name
            if "already taken" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


class StageTimeout(RuntimeError):
    """A call the driver waits on did not return in time; the message names the actors and the knob."""


def wait_for(refs: Any, timeout_s: float, what: str, knob: str, who: Sequence[str] | None = None) -> Any:
    """ray.get(refs) within `timeout_s`; else StageTimeout naming what was waited for, the actors
    that had not answered (`who`, aligned with `refs`) and the `reliability.<knob>` that sets the limit.

    Fails fast: the first call that fails raises at once, without waiting for the others (a learner
    rank that died leaves the other ranks waiting on it in a collective)."""
    listed = refs if isinstance(refs, list) else [refs]
    deadline = time.monotonic() + timeout_s
    pending, values = list(listed), {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            late = [who[i] for i, ref in enumerate(listed) if ref in pending] if who else []
            raise StageTimeout(
                f"{what}: no answer{' from ' + ', '.join(late) if late else ''} within {timeout_s:g}s "
                f"(reliability.{knob}); the actor is hung or far slower than expected: raise reliability.{knob} if it "
                f"is only slow"
            )
        values.update(zip(ready, ray.get(ready)))  # (raises now if that call failed)
    return [values[ref] for ref in listed] if isinstance(refs, list) else values[refs]


def start_judges(specs: Sequence[JudgeSpec], cfg: RunConfig, model_path: str, prefix: str = "judge") -> dict[str, list]:
    """name -> replicas (JudgeActor handles) of each spec.

    Model paths are resolved here ('builtin:...' built on first use): a judge's own `path`, each
    population member's `path`, and for a self judge the run's policy (`model_path`, already
    resolved), which it loads in the run's dtype and verifies syncs against `rollout.sync_tolerance`.
    """
    return {spec.name: [start_judge(spec, i, cfg, model_path, prefix) for i in range(spec.replicas)] for spec in specs}


def start_judge(spec: JudgeSpec, replica: int, cfg: RunConfig, model_path: str, prefix: str = "judge") -> Any:
    """One replica of `spec` (see start_judges)."""
    from actors.judge import JudgeActor

    def path_of(s) -> str | None:
        return resolve_model_path(s.path) if getattr(s, "path", None) else None

    path = model_path if spec.kind == "self" else path_of(spec)
    members = {m.name: path_of(m) for m in spec.members} if spec.kind == "population" else None
    return JudgeActor.options(**placement.judge_options(spec, replica, prefix)).remote(
        spec, path, members, cfg.model.dtype, cfg.rollout.sync_tolerance
    )


def shard(prompts: list[Prompt], parts: int) -> list[list[Prompt]]:
    """Split prompts into `parts` contiguous, non-empty, nearly equal chunks."""
    return [prompts[slice(*part_bounds(len(prompts), i, parts))] for i in range(parts)]


def sample(
    cluster: Cluster, step: int, prompts: list[Prompt], k: int, seeds: list[int], temperature: float | None = None
) -> list:
    """Launch generation on every rollout worker; returns ObjectRef[RolloutBatch] per worker."""
    refs = [
        worker.generate.remote(batch, seed, temperature)
        for worker, batch, seed in zip(cluster.rollouts, prompt_batches(cluster, step, prompts, k), seeds, strict=True)
    ]
    cluster.last_sampled = refs[0]
    return refs


def sample_summarized(cluster: Cluster, step: int, prompts: list[Prompt], k: int, seeds: list[int]) -> tuple[list, list]:
    """`sample` for training: (ObjectRef[RolloutBatch], ObjectRef[BatchSummary]) lists, one per worker;
    the driver reads only the summaries."""
    pairs = [
        worker.sample.remote(batch, seed, None)
        for worker, batch, seed in zip(cluster.rollouts, prompt_batches(cluster, step, prompts, k), seeds, strict=True)
    ]
    cluster.last_sampled = pairs[0][0]
    return [batch for batch, _ in pairs], [summary for _, summary in pairs]


def prompt_batches(cluster: Cluster, step: int, prompts: list[Prompt], k: int) -> list[PromptBatch]:
    """Each rollout worker's PromptBatch: its contiguous shard of `prompts`."""
    return [PromptBatch(step=step, prompts=tuple(part), samples_per_prompt=k) for part in shard(prompts, len(cluster.rollouts))]


def judge(replica_sets: dict[str, list], batches: list, step: int, groups: list[int], k: int) -> tuple[list[list], dict]:
    """Per batch, one ObjectRef[Judgement] per judge (see `ask`; `groups`: prompt groups of each
    batch, `k` samples each); and {(batch, judge position): [(replica, its ref)]}."""
    refs, asked = [], {}
    for b, ref in enumerate(batches):
        refs.append([])
        for position, replicas in enumerate(replica_sets.values()):
            verdicts, asked[b, position] = ask(replicas, ref, step, b, groups[b], k)
            refs[b].append(verdicts)
    return refs, asked


def ask(replicas: list, batch: Any, step: int, b: int, groups: int, k: int) -> tuple[Any, list[tuple[int, Any]]]:
    """ObjectRef[Judgement] of one judge on batch `b` of `step` (`groups` prompt groups of `k`
    samples), and [(replica, ref)] of the calls made. The replicas share the batch: each judges a
    contiguous part of its prompt groups, joined by `merge_parts`; a single replica (or a single
    group) is asked for the whole batch, replica (step + b) % replicas taking batches in turn."""
    from actors.judge import merge_parts

    chosen = asked_replicas(len(replicas), step, b, groups)
    if len(chosen) == 1:
        (r,) = chosen
        ref = replicas[r].judge_batch.remote(batch)
        return ref, [(r, ref)]
    n = len(chosen)
    parts = [(r, replicas[r].judge_batch.remote(batch, part=(r, n))) for r in chosen]
    sizes = [(hi - lo) * k for lo, hi in (part_bounds(groups, r, n) for r in range(n))]
    return merge_parts.remote(sizes, *(ref for _, ref in parts)), parts


def asked_replicas(replicas: int, step: int, b: int, groups: int) -> list[int]:
    """Which of a judge's `replicas` `ask` gives batch `b` of `step` (`groups` prompt groups)."""
    n = min(replicas, groups)
    return [(step + b) % replicas] if n <= 1 else list(range(n))


def export_weights(cluster: Cluster, step: int, probe: list[list[int]]) -> tuple:
    """(ObjectRef[WeightVersion], ObjectRef[state dict]) of the learner's current policy.

    Every rank takes part (the ZeRO-3 gather is collective); only rank 0's export carries them.
    """
    exports = [learner.export.remote(step, probe) for learner in cluster.learners]
    ray.get([v for v, _ in exports[1:]])  # other ranks only join the gather
    return exports[0]


def publish_weights(cluster: Cluster, step: int, probe: list[list[int]]) -> list:
    """Learner -> rollout workers and self judges, through the object store.

    Returns ObjectRef[SyncReport]s: one per rollout worker (in order), then one per replica of
    every training judge of kind 'self' (which judges with the current policy). The weights are
    put in the object store once, by the learner, and every receiver reads the same object.
    """
    return send_weights(cluster, export_weights(cluster, step, probe))


def form_weight_group(cluster: Cluster, cfg: RunConfig, timeout_s: float) -> None:
    """learner.weight_sync broadcast: learner rank 0 and every rollout worker join a new broadcast
    group (replacing any old one: after an actor was replaced, every member joins again). NCCL
    when the learner and the rollout workers have GPUs, else gloo; the group's own timeout is
    reliability.sync_timeout_s."""
    host, port = wait_for(cluster.learners[0].rendezvous.remote(0), timeout_s, "the weight group's address", "start_timeout_s")
    backend = "nccl" if cfg.learner.num_gpus > 0 and cfg.rollout.num_gpus > 0 else "gloo"
    world, group_timeout = 1 + len(cluster.rollouts), cfg.reliability.sync_timeout_s
    joins = [cluster.learners[0].join_weight_group.remote(host, port, world, backend, group_timeout)]
    joins += [
        worker.join_weight_group.remote(host, port, rank, world, backend, group_timeout)
        for rank, worker in enumerate(cluster.rollouts, start=1)
    ]
    names = ["learner-0", *(f"rollout-{i}" for i in range(len(cluster.rollouts)))]
    wait_for(joins, timeout_s, f"forming the weight broadcast group ({backend}, {world} members)", "start_timeout_s", names)
    logger.info("weight broadcast group formed: learner-0 and %d rollout workers over %s", len(cluster.rollouts), backend)


def broadcast_weights(cluster: Cluster, step: int, probe: list[list[int]], bucket_bytes: int) -> tuple[tuple, list]:
    """learner.weight_sync broadcast: ((ObjectRef[WeightVersion], ObjectRef[weights]), ObjectRef[SyncReport
    | None] per weight receiver). Rank 0 broadcasts to the rollout workers (each report None if the
    broadcast failed); self judges load from the object store, as `send_weights` does."""
    calls = [learner.broadcast_weights.remote(step, probe, bucket_bytes) for learner in cluster.learners]
    ray.get([v for v, _ in calls[1:]])  # other ranks only join the gather
    version_ref, weights_ref = calls[0]
    receivers = weight_receivers(cluster)
    reports = [r.receive_weights.remote() for r in cluster.rollouts]
    reports += [j.load_weights.remote(weights_ref, version_ref) for j in receivers[len(cluster.rollouts) :]]
    return (version_ref, weights_ref), reports


def weight_receivers(cluster: Cluster) -> list:
    """Who follows the policy's weights: every rollout worker (in order), then every replica of
    every training judge of kind 'self'."""
    self_judges = [
        replica for name, replicas in cluster.judges.items() if cluster.judge_specs[name].kind == "self" for replica in replicas
    ]
    return [*cluster.rollouts, *self_judges]


def send_weights(cluster: Cluster, exported: tuple) -> list:
    """ObjectRef[SyncReport] per weight receiver of the exported (version, weights) refs."""
    version_ref, weights_ref = exported
    return [receiver.load_weights.remote(weights_ref, version_ref) for receiver in weight_receivers(cluster)]


def swap_judges(
    cluster: Cluster,
    specs: Sequence[JudgeSpec],
    cfg: RunConfig,
    model_path: str,
    step: int,
    probe: list[list[int]],
    trial_timeout_s: float | None = None,
) -> tuple[list[str], list[str]]:
    """Replace the training judges by `specs`; returns (started, retired) judge names.

    Judges whose spec is unchanged keep their actors. New ones are started, must answer and must
    pass their trial (`try_judges`: judge a few rollouts of the latest sampled batch, every verdict
    checked, within `trial_timeout_s`) before the old ones are killed, so a judge that fails to
    start or its trial leaves the old set in place (the error propagates; old judges that had to
    stop first, a changed judge's old replicas or all of them on a full cluster, are started
    again). A new self judge gets the current policy weights first. The caller has drained every
    judgement the old actors owed.
    """
    keep = {s.name for s in specs if cluster.judge_specs.get(s.name) == s}
    fresh = [s for s in specs if s.name not in keep]
    retired = [name for name in cluster.judges if name not in keep]
    needed, free = placement.judge_resources(fresh), ray.available_resources()
    freed = placement.judge_resources([cluster.judge_specs[name] for name in retired])
    if any(amount > free.get(key, 0.0) + freed.get(key, 0.0) + 1e-9 for key, amount in needed.items()):
        raise RuntimeError(f"the new judges need {needed}; only {free} plus the retired judges' {freed} would be free")
    fits_beside = all(amount <= free.get(key, 0.0) + 1e-9 for key, amount in needed.items())
    if not fits_beside:  # a full cluster: the old judges must go first
        logger.warning("judge swap: the new judges do not fit beside the old ones; stopping the old ones first")
    # a changed judge keeps its name, and Ray actor names are unique: its old replicas go first
    first = retired if not fits_beside else [name for name in retired if name in {s.name for s in fresh}]
    before, before_specs = dict(cluster.judges), dict(cluster.judge_specs)
    _retire(cluster, first)
    try:
        started = _start_ready(
            cluster, fresh, cfg, model_path, step, probe, TRIAL_TIMEOUT_S if trial_timeout_s is None else trial_timeout_s
        )
    except BaseException:
        if first:  # the judges stopped to make room serve again, in their old order
            back = _start_ready(cluster, [before_specs[name] for name in first], cfg, model_path, step, probe)
            cluster.judges = {name: back.get(name) or replicas for name, replicas in before.items()}
            cluster.judge_specs = before_specs
        raise
    _retire(cluster, [name for name in retired if name not in first])
    order = [s.name for s in specs]  # manifest order: per_judge pairing labels by judge position
    cluster.judges = {name: (cluster.judges.get(name) or started[name]) for name in order}
    cluster.judge_specs = {s.name: s for s in specs}
    return sorted(started), sorted(retired)


def _start_ready(
    cluster: Cluster,
    specs: Sequence[JudgeSpec],
    cfg: RunConfig,
    model_path: str,
    step: int,
    probe: list[list[int]],
    trial_timeout_s: float | None = None,
) -> dict[str, list]:
    """Start `specs` and wait until they answer; a self judge gets the current policy weights first;
    with `trial_timeout_s`, each replica then passes its trial (`try_judges`).

    If any fails, every replica started here is stopped (freeing its name) and the error propagates.
    """
    started = start_judges(specs, cfg, model_path)
    try:
        ray.get([replica.__ray_ready__.remote() for replicas in started.values() for replica in replicas])
        selfs = [r for s in specs if s.kind == "self" for r in started[s.name]]
        if selfs:  # a new self judge judges with the current policy, not the starting one
            version_ref, weights_ref = export_weights(cluster, step, probe)
            if ray.get(version_ref).version > 0:  # version 0 is the starting policy, which they loaded
                ray.get([r.load_weights.remote(weights_ref, version_ref) for r in selfs])
        if trial_timeout_s is not None:
            try_judges(started, specs, cluster.last_sampled, trial_timeout_s)
    except BaseException:
        for replicas in started.values():
            for replica in replicas:
                ray.kill(replica)
        raise
    return started


def _retire(cluster: Cluster, names: list[str]) -> None:
    for name in names:
        for replica in cluster.judges.pop(name):
            ray.kill(replica)
        del cluster.judge_specs[name]


TRIAL_TIMEOUT_S = 300.0  # a new judge's trial: seconds for every replica to judge the trial batch
TRIAL_GROUPS = 2  # prompt groups of the latest sampled batch a new judge is tried on


class JudgeTrialError(RuntimeError):
    """A new judge failed its trial before a swap: raised, missed verdicts or did not answer in time."""


def try_judges(started: dict[str, list], specs: Sequence[JudgeSpec], batch_ref: Any, timeout_s: float) -> None:
    """Every replica in `started` judges the first TRIAL_GROUPS prompt groups of `batch_ref` (the
    latest sampled batch) within `timeout_s`, every verdict checked as in the run (actors/judge.py):
    it must not raise, and may miss no more verdicts than its `max_skipped_fraction` (with
    on_failure 'fail': none). JudgeTrialError naming the judge otherwise. Before any rollout was
    sampled (a resume's first step) there is nothing to try them on: logged, and they are trusted."""
    if batch_ref is None:
        logger.warning("judge swap: no rollouts sampled yet to try the new judges %s on; trusting them untried", sorted(started))
        return
    deadline = time.monotonic() + timeout_s
    try:
        batch = ray.get(batch_ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise JudgeTrialError(f"no rollouts to try the new judges on within {timeout_s:g}s") from None
    trial = batch.model_copy(update={"rollouts": batch.rollouts[: TRIAL_GROUPS * batch.samples_per_prompt]})
    what = f"{len(trial.rollouts)} rollouts of step {trial.step}"
    by_name = {s.name: s for s in specs}
    calls = [
        (name, i, replica.judge_batch.remote(trial, trial=True))
        for name, replicas in started.items()
        for i, replica in enumerate(replicas)
    ]
    ready, _ = ray.wait([ref for *_, ref in calls], num_returns=len(calls), timeout=max(0.0, deadline - time.monotonic()))
    for name, i, ref in calls:
        spec = by_name[name]
        who = f"judge {name!r} (kind {spec.kind}{f', replica {i}' if len(started[name]) > 1 else ''})"
        if ref not in ready:
            raise JudgeTrialError(f"{who} did not judge its trial batch ({what}) within {timeout_s:g}s")
        try:
            judgement = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None) or err
            raise JudgeTrialError(f"{who} failed its trial on {what}: {cause}") from None
        cap = spec.max_skipped_fraction if spec.on_failure == "skip" else 0.0
        if judgement.failed and judgement.failed / judgement.asked > cap:
            raise JudgeTrialError(
                f"{who} gave no verdict for {judgement.failed} of {judgement.asked} in its trial on {what}, more than "
                f"its max_skipped_fraction {cap:g}: {judgement.failure}"
            )
