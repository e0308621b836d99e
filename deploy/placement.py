"""Where actors run and with what: the one place that sets resources, names and environments.

Rollout workers and learner ranks get one placement-group bundle each, placed with
`placement.strategy` (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD), so a run that does not fit fails
before any model loads; judge replicas ask for their own resources from the manifest and are not in
the group. Custom resources (`rollout.resources`, `learner.resources`, a judge's `resources`) pin
actors to the nodes started with them (`ray start --resources`); docs/deploy.md. Actor names follow
the dashboard convention `rollout-<i>`, `learner-<rank>`, `judge-<name>-<i>` (`eval-judge-<name>-<i>`).
"""

from __future__ import annotations

import math
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from protocols import RunConfig
from protocols.judges import JudgeSpec


def _threads(num_cpus: float) -> str:
    return str(max(1, math.floor(num_cpus)))


def _bundle(num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, float]:
    bundle = {"CPU": num_cpus}
    if num_gpus:
        bundle["GPU"] = num_gpus
    return {**bundle, **resources}


def required_resources(cfg: RunConfig, judges: list[JudgeSpec]) -> dict[str, float]:
    """Total logical CPUs/GPUs, and custom resources, the run asks Ray for."""
    r, lr = cfg.rollout, cfg.learner
    cpus = r.num_workers * r.num_cpus + lr.num_workers * lr.num_cpus + sum(j.replicas * j.num_cpus for j in judges)
    gpus = r.num_workers * r.num_gpus + lr.num_workers * lr.num_gpus + sum(j.replicas * j.num_gpus for j in judges)
    return {"CPU": cpus, "GPU": gpus, **custom_resources(cfg, judges)}


def shared_cores_warning(cfg: RunConfig, cores: int) -> str | None:
    """One line when sampling ahead of learning cannot overlap on this machine, else None.

    With rollout.max_staleness > 0 the rollout workers generate while the learner ranks train; on
    CPUs that only pays when their threads (each actor runs num_cpus of them) fit the cores. On two
    cores a 2-thread learner and a 1-thread vLLM worker ran no faster one batch ahead than
    on-policy (BENCHMARKS.md, SmolLM2 against TRL): the learner's passes slowed by up to 3x while
    generation ran beside them."""
    r, lr = cfg.rollout, cfg.learner
    if r.max_staleness == 0 or r.num_gpus or lr.num_gpus:
        return None
    threads = r.num_workers * r.num_cpus + lr.num_workers * lr.num_cpus
    if threads <= cores:
        return None
    return (
        f"rollout.max_staleness {r.max_staleness} overlaps sampling with learning, but the rollout workers and learner "
        f"ranks run {threads:g} threads (num_cpus) on this machine's {cores} cores, so they will share cores and gain "
        "little from it; make rollout.num_cpus and learner.num_cpus add up to the cores, or set rollout.max_staleness 0"
    )


def custom_resources(cfg: RunConfig, judges: list[JudgeSpec]) -> dict[str, float]:
    """Custom resources (name -> total amount) the run's workers, ranks and judge replicas ask for."""
    total: dict[str, float] = {}
    asks = [
        (cfg.rollout.num_workers, cfg.rollout.resources),
        (cfg.learner.num_workers, cfg.learner.resources),
        *((j.replicas, j.resources) for j in judges),
    ]
    for count, resources in asks:
        for name, amount in resources.items():
            total[name] = total.get(name, 0.0) + count * amount
    return total


LOCAL_CUSTOM_AMOUNT = 1000.0  # a local cluster's amount of each custom resource the run names


def local_resources(cfg: RunConfig, judges: list[JudgeSpec]) -> dict[str, float]:
    """Custom resources for a cluster the driver starts itself: one node, so pinning means nothing
    there; it gets every custom resource the run names, plenty of each (judges swapped in later
    may ask for more), and the same config runs on one machine and on a cluster."""
    return {name: max(LOCAL_CUSTOM_AMOUNT, amount) for name, amount in custom_resources(cfg, judges).items()}


def group_bundles(cfg: RunConfig) -> list[dict[str, float]]:
    """One placement-group bundle per rollout worker, then one per learner rank."""
    r, lr = cfg.rollout, cfg.learner
    out = [_bundle(max(r.num_cpus, 1e-3), r.num_gpus, r.resources) for _ in range(r.num_workers)]
    return out + [_bundle(max(lr.num_cpus, 1e-3), lr.num_gpus, lr.resources) for _ in range(lr.num_workers)]


def create_placement_group(cfg: RunConfig, strategy: str | None = None, timeout_s: float | None = None) -> PlacementGroup:
    """The run's bundles (`group_bundles`), placed with `strategy` (default `placement.strategy`); waits
    up to `timeout_s` (default `placement.timeout_s`) until they are placed."""
    strategy = strategy or cfg.placement.strategy
    timeout_s = cfg.placement.timeout_s if timeout_s is None else timeout_s
    bundles = group_bundles(cfg)
    pg = placement_group(bundles, strategy=strategy, name="online-rlhf")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(
            f"the cluster could not place {bundles} ({strategy}) within {timeout_s:.0f}s: available {ray.available_resources()}"
        )
    return pg


def rollout_options(cfg: RunConfig, index: int, pg: PlacementGroup) -> dict[str, Any]:
    r = cfg.rollout
    env = {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine in the actor process: tensors pass directly
        "VLLM_HOST_IP": "127.0.0.1",  # single-process engine: nothing leaves the node
        "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM logs every in-place reload at INFO
        "TOKENIZERS_PARALLELISM": "false",
    }
    if not r.num_gpus:
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(max(1, math.ceil(r.kv_cache_gib))),
            VLLM_CPU_OMP_THREADS_BIND="nobind",  # share cores with the learner instead of pinning core 0
            OMP_NUM_THREADS=_threads(r.num_cpus),
        )
    return dict(
        name=f"rollout-{index}",
        num_cpus=r.num_cpus,
        num_gpus=r.num_gpus,
        resources=dict(r.resources),
        runtime_env={"env_vars": env},
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index),
    )


def learner_options(cfg: RunConfig, rank: int, pg: PlacementGroup) -> dict[str, Any]:
    lc = cfg.learner
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if not lc.num_gpus:
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS=_threads(lc.num_cpus))
    return dict(
        name=f"learner-{rank}",
        num_cpus=lc.num_cpus,
        num_gpus=lc.num_gpus,
        resources=dict(lc.resources),
        runtime_env={"env_vars": env},
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=cfg.rollout.num_workers + rank),
    )


def judge_options(spec: JudgeSpec, replica: int, prefix: str = "judge") -> dict[str, Any]:
    env = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": _threads(spec.num_cpus)}
    return dict(
        name=f"{prefix}-{spec.name}-{replica}",
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus,
        resources=dict(spec.resources),
        runtime_env={"env_vars": env},
    )


def judge_resources(judges: list[JudgeSpec]) -> dict[str, float]:
    """Logical CPUs/GPUs, and custom resources, the given judges' replicas ask Ray for."""
    custom: dict[str, float] = {}
    for j in judges:
        for name, amount in j.resources.items():
            custom[name] = custom.get(name, 0.0) + j.replicas * amount
    return {
        "CPU": sum(j.replicas * j.num_cpus for j in judges),
        "GPU": sum(j.replicas * j.num_gpus for j in judges),
        **custom,
    }
