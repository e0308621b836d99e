"""driver/faults.py and the loop's recovery pieces: which actor an error names, the restart budget
and its records, fault injection, a judge that hangs (with a real JudgeActor in the session Ray
cluster). The whole recovery (kills of each actor kind in a real run, compared with an
uninterrupted run) is tests/e2e/test_faults.py."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import pytest
import ray
from pydantic import ValidationError

from driver.faults import FAULTS_FILE, FaultLog, KillSchedule, LearnerLost, Located, RunFailed, dead_actor_id, locate
from protocols import RuleJudgeSpec, RunConfig, summarize
from tests.actors.test_judge_actor import find_prompt, make_batch
from tests.driver.test_judge_swap_paths import cluster_of, dead

HANGS = RuleJudgeSpec(name="stuck", kind="rule", function="tests.rollout.faulty_rules:hangs")


@pytest.fixture(scope="module")
def batch():
    fruits = find_prompt("list 3 fruits:")
    return make_batch([(fruits, " apple pear plum"), (fruits, " apple cat")], samples_per_prompt=2)


def actor_error(actor_id: str) -> ray.exceptions.RayActorError:
    return ray.exceptions.RayActorError(actor_id=actor_id, error_msg="The actor died unexpectedly before finishing this task.")


def test_the_dead_actor_is_found_through_ray_s_wrapping():
    assert dead_actor_id(actor_error("ab12")) == "ab12"
    wrapped = ray.exceptions.RayTaskError("train_step", "traceback", actor_error("cd34"))  # a task whose input died
    assert dead_actor_id(wrapped) == "cd34"
    chained = RuntimeError("outer")
    chained.__cause__ = actor_error("ef56")
    assert dead_actor_id(chained) == "ef56"
    assert dead_actor_id(ray.exceptions.RayTaskError("f", "tb", ValueError("a bug, no death"))) is None
    assert dead_actor_id(ValueError("x")) is None


def test_locate_names_each_kind_of_actor():
    def handle(hex_id: str):
        return SimpleNamespace(_actor_id=SimpleNamespace(hex=lambda: hex_id))

    cluster = SimpleNamespace(
        rollouts=[handle("r0"), handle("r1")],
        learners=[handle("l0")],
        judges={"gt": [handle("j0"), handle("j1")]},
        eval_judge=[handle("e0")],
        eval_spec=SimpleNamespace(name="ground-truth"),
    )
    found = {key: locate(cluster, key) for key in ("r1", "l0", "j1", "e0", "zz")}
    assert found["r1"] == Located("rollout", 1) and found["r1"].name == "rollout-1"
    assert found["l0"].name == "learner-0" and found["l0"].kind == "learner"
    assert found["j1"] == Located("judge", 1, "gt") and found["j1"].name == "judge-gt-1"
    assert found["e0"].name == "eval-judge-ground-truth-0"
    assert found["zz"] is None and locate(cluster, None) is None


def test_the_restart_budget_records_and_metrics(tmp_path):
    log = FaultLog(tmp_path, max_restarts=2)
    assert log.metrics()["faults/restarts"] == 0.0
    err = actor_error("ab")
    log.allow(3, "rollout-0", err, "resume it")
    log.record(3, Located("rollout", 0), err, "replaced", 1.5)
    log.allow(5, "learner-0", err, "resume it")
    log.record(5, Located("learner", 0), err, "restored", 2.25)
    with pytest.raises(RunFailed, match=r"^judge-gt-0 died at step 7 \(RayActorError: The actor died.*\) and the run has used its "
                       r"2 restarts \(reliability.max_restarts\); resume it$"):  # fmt: skip
        log.allow(7, "judge-gt-0", err, "resume it")
    assert log.metrics() == {
        "faults/restarts": 2.0,
        "faults/rollout": 1.0,
        "faults/judge": 0.0,
        "faults/eval": 0.0,
        "faults/learner": 1.0,
        "faults/recovery_seconds": 3.75,
    }
    events = [json.loads(line) for line in (tmp_path / FAULTS_FILE).read_text().splitlines()]
    assert [(e["step"], e["actor"], e["kind"], e["action"], e["seconds"]) for e in events] == [
        (3, "rollout-0", "rollout", "replaced", 1.5),
        (5, "learner-0", "learner", "restored", 2.25),
    ]
    assert events[0]["error"].startswith("RayActorError: The actor died unexpectedly")
    assert "learner-0 died at step 4" in str(LearnerLost(Located("learner", 0), 4, err))


def test_no_restarts_means_the_first_death_stops_the_run(tmp_path):
    with pytest.raises(RunFailed, match="has used its 0 restarts"):
        FaultLog(tmp_path, max_restarts=0).allow(0, "rollout-0", actor_error("ab"), "start again")


def test_kill_schedule_entries_are_checked_and_fire_once(monkeypatch):
    assert RunConfig(reliability={"kill_schedule": ["3:rollout-0", "5:judge-gt-0"]}).reliability.kill_schedule == (
        "3:rollout-0",
        "5:judge-gt-0",
    )
    for bad in ("rollout-0", "x:rollout-0", "3:"):
        with pytest.raises(ValidationError, match="is not 'STEP:ACTOR'"):
            RunConfig(reliability={"kill_schedule": [bad]})
    killed = []
    monkeypatch.setattr("driver.faults.os.kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr("driver.faults.ray.get", lambda ref, timeout: ref)

    class Handle:
        def __init__(self, hex_id: str, pid: int):
            self._actor_id = SimpleNamespace(hex=lambda: hex_id)
            self.pid = SimpleNamespace(remote=lambda: pid)

    cluster = SimpleNamespace(
        rollouts=[Handle("r0", 101)], learners=[Handle("l0", 202)], judges={}, eval_judge=[], eval_spec=None
    )
    schedule = KillSchedule(["1:learner-0", "1:rollout-0", "4:rollout-0"])
    assert schedule.fire(cluster, 0) == []
    assert schedule.fire(cluster, 1) == ["learner-0", "rollout-0"] and [pid for pid, _ in killed] == [202, 101]
    assert schedule.fire(cluster, 1) == []  # once: a step redone after a learner was restored kills nothing
    with pytest.raises(RunFailed, match=r"no actor named 'judge-x-0'"):
        KillSchedule(["2:judge-x-0"]).fire(cluster, 2)

    def dead(ref, timeout):
        raise ray.exceptions.RayActorError(actor_id="l0", error_msg="died")

    monkeypatch.setattr("driver.faults.ray.get", dead)  # killed at an earlier step, not yet met by the loop
    killed.clear()
    assert KillSchedule(["3:learner-0"]).fire(cluster, 3) == ["learner-0"] and killed == []


def test_temperatures_outside_what_sampling_can_use_are_refused():
    for field in ("rollout", "eval"):
        for value in (0.0, 0.001, 11.0, 1e9):
            with pytest.raises(ValidationError, match=f"{field}.temperature"):
                RunConfig(**{field: {"temperature": value}})
        assert getattr(RunConfig(**{field: {"temperature": 0.01}}), field).temperature == 0.01
    with pytest.raises(ValidationError, match="learner.lr"):
        RunConfig(learner={"lr": math.inf})


@pytest.mark.parametrize("on_failure", ["fail", "skip"])
def test_a_judge_that_hangs_is_named_within_its_timeout_or_skipped_and_replaced(
    ray_cluster,
    builtin_models,
    batch,
    tmp_path,
    on_failure,
):
    from driver.cluster import StageTimeout
    from driver.run import InFlight, Loop

    spec = HANGS.model_copy(update={"on_failure": on_failure, "max_skipped_fraction": 1.0})
    cfg = RunConfig(output=str(tmp_path / "run"), reliability={"judge_timeout_s": 3.0})
    cluster = cluster_of([spec], str(builtin_models.policy))
    plan = SimpleNamespace(cfg=cfg, output=tmp_path, task=SimpleNamespace(heldout=()), manifest=None, manifest_path=None)
    loop = Loop.__new__(Loop)  # only what verdicts() reads
    loop.cfg, loop.cluster, loop.plan, loop.model_path = cfg, cluster, plan, str(builtin_models.policy)
    loop.faults, loop.queue, loop.current, loop.served, loop.pending_loads, loop.dropped = (
        FaultLog(tmp_path, 3), [], None, None, [], []
    )  # fmt: skip
    loop.last_checkpoint = None
    old = cluster.judges["stuck"][0]
    ref = ray.put(batch)
    item = InFlight(7, [ref], [[old.judge_batch.remote(ref)]], [ray.put(summarize(batch))], prompts=[], seeds=[0])
    began = time.monotonic()
    try:
        if on_failure == "fail":
            with pytest.raises(StageTimeout, match=r"judge 'stuck' \(kind rule, replica 0\) did not judge step 7's batch 0 "
                               r"within 3s \(reliability.judge_timeout_s\).*on_failure: fail"):  # fmt: skip
                loop.verdicts(item, 0, len(batch.rollouts))
            assert cluster.judges["stuck"][0] is old
        else:
            (judgement,) = loop.verdicts(item, 0, len(batch.rollouts))
            assert judgement.failed == len(batch.rollouts) and judgement.unjudged == tuple(range(len(batch.rollouts)))
            assert all(math.isnan(r) for r in judgement.rewards) and "timed out after 3s" in judgement.failure
            assert cluster.judges["stuck"][0] is not old and dead(old)  # the hung replica was replaced
            (event,) = [json.loads(line) for line in (tmp_path / FAULTS_FILE).read_text().splitlines()]
            assert event["actor"] == "judge-stuck-0" and event["kind"] == "judge" and "hung replica replaced" in event["action"]
        assert time.monotonic() - began < 60
    finally:
        for replica in cluster.judges["stuck"]:
            ray.kill(replica)


@ray.remote(num_cpus=0)
class Rank:
    def pid(self) -> int:
        import os

        return os.getpid()


def test_a_collective_s_error_names_the_dead_rank_through_a_ping(ray_cluster):
    """Rank 0's call can fail first with its collective's error (gloo: connection reset) rather than
    with rank 1's death: the ranks are pinged and the dead one named, with Ray's error saying so."""
    import os
    import signal
    from types import SimpleNamespace

    from driver.faults import dead_of

    ranks = [Rank.remote(), Rank.remote()]
    cluster = SimpleNamespace(rollouts=[], learners=ranks, judges={}, eval_judge=[], eval_spec=None)
    collective = ray.exceptions.RayTaskError("train_step", "tb", RuntimeError("Connection reset by peer"))
    try:
        assert dead_of(cluster, collective) == (None, collective)  # both alive: not a death
        os.kill(ray.get(ranks[1].pid.remote()), signal.SIGKILL)
        assert dead(ranks[1])
        where, death = dead_of(cluster, collective)
        assert where == Located("learner", 1) and isinstance(death, ray.exceptions.RayActorError)
        assert death.actor_id == ranks[1]._actor_id.hex()
        direct = actor_error(ranks[0]._actor_id.hex())  # an error naming its actor needs no ping
        assert dead_of(cluster, direct) == (Located("learner", 0), direct)
    finally:
        for rank in ranks:
            ray.kill(rank)
