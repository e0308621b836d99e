"""Actor deaths during a run: which actor, whether the run may recover, and the record of each.

The loop (driver/run.py) recovers from a dead actor in one of two ways:

- a rollout worker or a judge replica is *replaced*: a new actor takes its name and placement,
  is given, batch by batch, the weights each of its lost batches was launched with, and re-does
  that work with the same prompts and seeds; whatever depended on the lost work (every judge's
  verdicts on a lost batch) is re-issued too. A step's data are then the ones an uninterrupted run
  would have had (at any `rollout.max_staleness`, since each batch gets its own weights back);
- a learner rank is *restored*: every rank is replaced, loads the last checkpoint (or starts over
  when there is none) and the steps since are redone, exactly as `--resume` would redo them.

Each recovery counts against `reliability.max_restarts`; past it the run stops with `RunFailed`
(one line: the actor, the step, the error, how to continue). Each is logged, appended to
OUTPUT/faults.jsonl and counted in the `faults/*` metrics of every later step record.
`KillSchedule` is the fault injection that tests and bench/soak.py use (`reliability.kill_schedule`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ray

if TYPE_CHECKING:
    from driver.cluster import Cluster

logger = logging.getLogger("driver")
FAULTS_FILE = "faults.jsonl"
Kind = Literal["rollout", "judge", "eval", "learner"]
KINDS: tuple[Kind, ...] = ("rollout", "judge", "eval", "learner")


class RunFailed(RuntimeError):
    """The run cannot go on (restarts used up, or a failure that is not an actor death); one line."""


@dataclass(frozen=True)
class Located:
    kind: Kind
    index: int  # rollout worker / learner rank / replica
    judge: str | None = None  # the judge's name (kind judge or eval)

    @property
    def name(self) -> str:
        """The actor's Ray name (deploy/placement.py)."""
        if self.kind == "judge":
            return f"judge-{self.judge}-{self.index}"
        if self.kind == "eval":
            return f"eval-judge-{self.judge}-{self.index}"
        return f"{self.kind}-{self.index}"


class LearnerLost(Exception):
    """A learner rank (`where`) died at `step`: the run restores every rank from its last checkpoint."""

    def __init__(self, where: Located, step: int, error: BaseException):
        super().__init__(f"{where.name} died at step {step}: {first_line(error)}")
        self.where, self.step, self.error = where, step, error


def dead_of(cluster: Cluster, error: BaseException) -> tuple[Located | None, BaseException]:
    """Which of the run's actors `error` reports dead (else a learner rank found dead) and the error
    that says so; (None, error) if none."""
    where = locate(cluster, dead_actor_id(error))
    if where is None and (found := dead_learner(cluster)) is not None:
        return found
    return where, error


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def dead_actor_id(error: BaseException) -> str | None:
    """The hex id of the actor whose death `error` reports (through Ray's task-error wrapping), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ray.exceptions.RayActorError):
            return current.actor_id
        current = getattr(current, "cause", None) or current.__cause__
    return None


def actors_of(cluster: Cluster) -> Iterable[tuple[Located, Any]]:
    """(where, handle) of every actor of the run."""
    for i, handle in enumerate(cluster.rollouts):
        yield Located("rollout", i), handle
    for r, handle in enumerate(cluster.learners):
        yield Located("learner", r), handle
    for name, replicas in cluster.judges.items():
        for i, handle in enumerate(replicas):
            yield Located("judge", i, name), handle
    eval_name = cluster.eval_spec.name if cluster.eval_spec is not None else "eval"
    for i, handle in enumerate(cluster.eval_judge):
        yield Located("eval", i, eval_name), handle


def locate(cluster: Cluster, actor_id: str | None) -> Located | None:
    """Which of the run's actors has id `actor_id` (None: not one of them, e.g. already replaced)."""
    if actor_id is None:
        return None
    for where, handle in actors_of(cluster):
        if handle._actor_id.hex() == actor_id:
            return where
    return None


def dead_learner(cluster: Cluster, timeout_s: float = 10.0) -> tuple[Located, BaseException] | None:
    """The learner rank that is dead, if one is, and Ray's error saying so: a rank's call can fail
    first with its collective's error (gloo: connection reset) rather than with the death of the
    rank it was talking to."""
    pings = {learner.__ray_ready__.remote(): rank for rank, learner in enumerate(cluster.learners)}
    pending, deadline = list(pings), time.monotonic() + timeout_s
    while pending:  # (a busy rank answers late: alive)
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            ray.get(ready[0])
        except ray.exceptions.RayActorError as death:
            return Located("learner", pings[ready[0]]), death
    return None


class FaultLog:
    """Recoveries so far: the budget, OUTPUT/faults.jsonl and the `faults/*` metrics."""

    def __init__(self, output: Path, max_restarts: int):
        self.path = output / FAULTS_FILE
        self.max_restarts = max_restarts
        self.restarts = 0
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.seconds = 0.0

    def allow(self, step: int, actor: str, error: BaseException, resume_hint: str) -> None:
        """Take one restart from the budget, or raise RunFailed if none is left."""
        if self.restarts >= self.max_restarts:
            raise RunFailed(
                f"{actor} died at step {step} ({first_line(error)}) and the run has used its "
                f"{self.max_restarts} restarts (reliability.max_restarts); {resume_hint}"
            )
        self.restarts += 1
        logger.warning(
            "%s died at step %d (%s); recovering (restart %d of %d)",
            *(actor, step, first_line(error), self.restarts, self.max_restarts),
        )

    def record(self, step: int, where: Located, error: BaseException, action: str, seconds: float) -> None:
        self.by_kind[where.kind] += 1
        self.seconds += seconds
        event = {
            "step": step,
            "time": round(time.time(), 3),
            "actor": where.name,
            "kind": where.kind,
            "error": first_line(error),
            "action": action,
            "seconds": round(seconds, 3),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")
        logger.warning("recovered from %s's death at step %d in %.1fs: %s", where.name, step, seconds, action)

    def metrics(self) -> dict[str, float]:
        """Cumulative over this driver process: restarts, per kind of actor, seconds spent recovering."""
        return {
            "faults/restarts": float(self.restarts),
            **{f"faults/{kind}": float(n) for kind, n in self.by_kind.items()},
            "faults/recovery_seconds": round(self.seconds, 3),
        }


class KillSchedule:
    """`reliability.kill_schedule`: SIGKILL an actor's process as a step begins, once per entry.

    The process id is asked of the actor itself (`pid`), so the actor must be on this machine (a
    local cluster, as in tests and bench/soak.py).
    """

    def __init__(self, entries: Iterable[str]):
        self.pending: list[tuple[int, str]] = []
        for entry in entries:
            step, _, actor = entry.partition(":")
            self.pending.append((int(step), actor))

    def fire(self, cluster: Cluster, step: int) -> list[str]:
        """Kill the actors due at `step`; returns their names."""
        due = [actor for at, actor in self.pending if at == step]
        if not due:
            return []
        self.pending = [(at, actor) for at, actor in self.pending if at != step]
        handles = {where.name: handle for where, handle in actors_of(cluster)}
        for actor in due:
            if actor not in handles:
                raise RunFailed(f"reliability.kill_schedule: no actor named {actor!r} (the run has {sorted(handles)})")
            try:
                pid = ray.get(handles[actor].pid.remote(), timeout=120)
            except ray.exceptions.RayActorError:  # dead already (an earlier kill the loop has not met yet)
                logger.warning("fault injection: %s is already dead at step %d; nothing to kill", actor, step)
                continue
            logger.warning("fault injection: SIGKILL %s (pid %d) at step %d", actor, pid, step)
            os.kill(pid, signal.SIGKILL)
        return due
