"""The branches of a live judge swap (driver/cluster.py `swap_judges`, driver/run.py
`Loop.maybe_swap_judges`) with real rule JudgeActors in the session Ray cluster: unchanged judges
keep their actors, a swap that cannot fit is refused, a full cluster stops the old judges first,
judgements owed by the old judges are drained (staleness > 0), and a new judge that fails to
start leaves the old judges serving. The e2e test (tests/e2e/test_judge_swap.py) covers the happy
path through a real run."""

from __future__ import annotations

import collections
import json
import logging
import time

import pytest
import ray

import driver.cluster
from driver.cluster import Cluster, judge, start_judges, swap_judges
from protocols import JudgeManifest, RolloutConfig, RuleJudgeSpec, RunConfig, summarize
from rollout.tasks import wordlist
from tests.actors.test_judge_actor import find_prompt, make_batch

GT = RuleJudgeSpec(name="ground-truth", kind="rule", function="rollout.tasks.wordlist:ground_truth", temperature=0.0)
TOPICAL = RuleJudgeSpec(name="topical", kind="rule", function="rollout.tasks.wordlist:topical")
VARIED = RuleJudgeSpec(name="varied", kind="rule", function="rollout.tasks.wordlist:varied")
# passes the schema (an import path), fails in the actor: the function does not exist
MISSING = "rollout.tasks.wordlist:no_such_criterion"


@pytest.fixture(scope="module")
def batch():
    fruits = find_prompt("list 3 fruits:")
    return make_batch([(fruits, " apple pear plum"), (fruits, " apple apple cat dog")], samples_per_prompt=2)


def cluster_of(specs, policy: str) -> Cluster:
    return Cluster(
        rollouts=[],
        learners=[],
        judges=start_judges(specs, RunConfig(), policy),
        eval_judge=[],
        judge_specs={s.name: s for s in specs},
    )


def rewards(handle, batch) -> list[float]:
    return list(ray.get(handle.judge_batch.remote(batch)).rewards)


def expected(function, batch) -> list[float]:
    return [function(r.prompt_text, r.response_text) for r in batch.rollouts]


def dead(handle, within_s: float = 30.0) -> bool:
    """The actor is dead, or dies within `within_s` (ray.kill is asynchronous: a call made right
    after it may still be served)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=max(1.0, deadline - time.monotonic()))
        except ray.exceptions.RayActorError:
            return True
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.2)
    return False


def kill_all(cluster: Cluster) -> None:
    for replicas in cluster.judges.values():
        for handle in replicas:
            ray.kill(handle)


def test_unchanged_judges_keep_their_actors_changed_ones_are_restarted(ray_cluster, builtin_models, batch):
    cluster = cluster_of([GT, TOPICAL], str(builtin_models.policy))
    try:
        gt, topical = cluster.judges["ground-truth"][0], cluster.judges["topical"][0]
        assert swap_judges(cluster, [VARIED, GT], RunConfig(), "unused", 3, []) == (["varied"], ["topical"])
        assert list(cluster.judges) == ["varied", "ground-truth"]  # the new manifest's order
        assert cluster.judge_specs == {"varied": VARIED, "ground-truth": GT}
        assert cluster.judges["ground-truth"][0] is gt and rewards(gt, batch) == expected(wordlist.ground_truth, batch)
        assert rewards(cluster.judges["varied"][0], batch) == expected(wordlist.varied, batch)
        assert dead(topical)

        # a changed judge keeps its name (Ray actor names are unique): the old replica goes first
        heavier = GT.model_copy(update={"weight": 2.0})
        assert swap_judges(cluster, [VARIED, heavier], RunConfig(), "unused", 4, []) == (["ground-truth"], ["ground-truth"])
        assert dead(gt) and cluster.judge_specs["ground-truth"] == heavier
        assert rewards(cluster.judges["ground-truth"][0], batch) == expected(wordlist.ground_truth, batch)
    finally:
        kill_all(cluster)


def test_a_swap_that_cannot_fit_is_refused_and_a_full_cluster_stops_the_old_judges_first(
    ray_cluster, builtin_models, batch, monkeypatch, caplog
):
    cluster = cluster_of([GT, TOPICAL.model_copy(update={"num_cpus": 1.0})], str(builtin_models.policy))
    try:
        gt, topical = cluster.judges["ground-truth"][0], cluster.judges["topical"][0]
        # the cluster as the swap sees it: half a CPU free; retiring 'topical' would free 1 more
        monkeypatch.setattr(driver.cluster.ray, "available_resources", lambda: {"CPU": 0.5})
        too_big = VARIED.model_copy(update={"num_cpus": 2.0})
        with pytest.raises(
            RuntimeError,
            match=r"the new judges need \{'CPU': 2.0, 'GPU': 0.0\}; only \{'CPU': 0.5\} "
            r"plus the retired judges' \{'CPU': 1.0, 'GPU': 0.0\}",
        ):
            swap_judges(cluster, [GT, too_big], RunConfig(), "unused", 3, [])
        assert cluster.judges == {"ground-truth": [gt], "topical": [topical]} and not dead(topical, within_s=1.0)

        events = []
        retire, start = driver.cluster._retire, driver.cluster.start_judges
        monkeypatch.setattr(driver.cluster, "_retire", lambda c, names: (events.append(("stop", list(names))), retire(c, names)))
        monkeypatch.setattr(
            driver.cluster,
            "start_judges",
            lambda specs, *a, **k: (events.append(("start", [s.name for s in specs])), start(specs, *a, **k))[1],
        )
        fits_after = VARIED.model_copy(update={"num_cpus": 1.25})  # > 0.5 free, <= 0.5 + 1 freed
        with caplog.at_level(logging.WARNING, logger="driver"):
            assert swap_judges(cluster, [GT, fits_after], RunConfig(), "unused", 3, []) == (["varied"], ["topical"])
        assert events == [("stop", ["topical"]), ("start", ["varied"]), ("stop", [])]  # old ones first
        assert "do not fit beside the old ones; stopping the old ones first" in caplog.text
        assert cluster.judges["ground-truth"] == [gt] and dead(topical)  # the unchanged judge kept serving
        assert rewards(cluster.judges["varied"][0], batch) == expected(wordlist.varied, batch)

        events.clear()  # room beside the old ones: new judges start before the old stop
        monkeypatch.setattr(driver.cluster.ray, "available_resources", lambda: {"CPU": 8.0})
        assert swap_judges(cluster, [GT, TOPICAL], RunConfig(), "unused", 4, []) == (["topical"], ["varied"])
        assert events == [("stop", []), ("start", ["topical"]), ("stop", ["varied"])]
    finally:
        kill_all(cluster)


def test_a_new_judge_that_fails_to_start_leaves_the_old_judges_serving(ray_cluster, builtin_models, batch):
    cluster = cluster_of([GT, TOPICAL], str(builtin_models.policy))
    try:
        gt, topical = cluster.judges["ground-truth"][0], cluster.judges["topical"][0]
        broken = RuleJudgeSpec(name="broken", kind="rule", function=MISSING)
        with pytest.raises(ray.exceptions.RayActorError, match="no_such_criterion"):
            swap_judges(cluster, [GT, broken], RunConfig(), "unused", 3, [])
        assert cluster.judges == {"ground-truth": [gt], "topical": [topical]}
        assert cluster.judge_specs == {"ground-truth": GT, "topical": TOPICAL}
        # a new judge that did start beside the broken one is stopped again: retrying without the
        # broken one can start it under its name
        with pytest.raises(ray.exceptions.RayActorError, match="no_such_criterion"):
            swap_judges(cluster, [GT, TOPICAL, VARIED, broken], RunConfig(), "unused", 3, [])
        assert cluster.judges == {"ground-truth": [gt], "topical": [topical]}
        assert swap_judges(cluster, [GT, TOPICAL, VARIED], RunConfig(), "unused", 3, []) == (["varied"], [])
        assert rewards(cluster.judges["varied"][0], batch) == expected(wordlist.varied, batch)
        # a changed judge under the same name that fails to start: its old replica had to go first
        # (actor names are unique), and is back after the failure
        changed = TOPICAL.model_copy(update={"function": MISSING})
        with pytest.raises(ray.exceptions.RayActorError, match="no_such_criterion"):
            swap_judges(cluster, [GT, changed, VARIED], RunConfig(), "unused", 4, [])
        assert list(cluster.judges) == ["ground-truth", "topical", "varied"] and cluster.judges["ground-truth"] == [gt]
        assert cluster.judge_specs == {"ground-truth": GT, "topical": TOPICAL, "varied": VARIED}
        assert rewards(cluster.judges["topical"][0], batch) == expected(wordlist.topical, batch)
        assert rewards(gt, batch) == expected(wordlist.ground_truth, batch)
    finally:
        kill_all(cluster)


@ray.remote
def arrives_late(batch, seconds: float):
    """A rollout batch that is still being sampled when the swap begins."""
    time.sleep(seconds)
    return batch


def test_loop_drains_what_the_old_judges_owe_then_swaps_or_keeps_them(ray_cluster, builtin_models, batch, tmp_path, monkeypatch):
    from driver.plan import resolve_plan
    from driver.run import JUDGES_FILE, InFlight, Loop

    path = tmp_path / "judges.yaml"
    path.write_text("judges:\n  - {name: ground-truth, kind: rule, function: rollout.tasks.wordlist:ground_truth}\n")
    manifest = JudgeManifest(judges=(GT.model_copy(update={"temperature": 1.0}),))
    cfg = RunConfig(output=str(tmp_path / "run"), rollout=RolloutConfig(max_staleness=2))
    plan = resolve_plan(cfg, manifest, manifest_path=path)
    plan.output.mkdir(parents=True)
    cluster = cluster_of(manifest.judges, str(builtin_models.policy))
    loop = Loop(plan, cluster, str(builtin_models.policy), time.perf_counter())
    old = cluster.judges["ground-truth"][0]
    try:
        # two batches in flight (staleness 2), still being sampled, owed by the old judge
        queue = collections.deque()
        for step in (5, 6):
            refs = [arrives_late.remote(batch, 1.0)]
            verdicts = judge(cluster.judges, refs, step, groups=[1], k=len(batch.rollouts))[0]
            queue.append(InFlight(step, refs, verdicts, [ray.put(summarize(batch))]))
        swap = driver.run.swap_judges

        def drained_first(c, *args):
            owed = [ref for item in queue for per_batch in item.judgements for ref in per_batch]
            ready, _ = ray.wait(owed, num_returns=len(owed), timeout=0)
            assert len(ready) == len(owed), "the swap began before the old judges delivered what they owed"
            return swap(c, *args)

        monkeypatch.setattr(driver.run, "swap_judges", drained_first)
        path.write_text("judges:\n  - {name: topical, kind: rule, function: rollout.tasks.wordlist:topical}\n")
        loop.maybe_swap_judges(queue, 7, [])
        for item in queue:  # judged by the old judge, delivered although it is gone now
            (judgement,) = ray.get(item.judgements[0])
            assert judgement.judge == "ground-truth" and list(judgement.rewards) == expected(wordlist.ground_truth, batch)
        assert list(cluster.judges) == ["topical"] and dead(old)
        assert [j.name for j in loop.plan.manifest.judges] == ["topical"] and loop.judge_events["judges/swaps"] == 1

        # a manifest whose judge fails to start: recorded as rejected, the current judges stay
        path.write_text(f"judges:\n  - {{name: varied, kind: rule, function: {MISSING}}}\n")
        monkeypatch.setattr(
            driver.run.ManifestWatcher,
            "poll",
            lambda self: driver.run.ManifestChange(
                manifest=JudgeManifest(judges=(RuleJudgeSpec(name="varied", kind="rule", function=MISSING),)),
                reason=None,
                digest="d",
            ),
        )  # (the file check would reject it before any actor started)
        loop.maybe_swap_judges(collections.deque(), 8, [])
        assert list(cluster.judges) == ["topical"] and [j.name for j in loop.plan.manifest.judges] == ["topical"]
        assert loop.judge_events == {"judges/swaps": 1.0, "judges/rejected_manifests": 1.0}
        events = [json.loads(line) for line in (plan.output / JUDGES_FILE).read_text().splitlines()]
        assert [(e["step"], e["event"], e["judges"]) for e in events] == [
            (7, "swapped", ["topical"]),
            (8, "rejected", ["topical"]),
        ]
        assert events[0]["started"] == ["topical"] and events[0]["retired"] == ["ground-truth"]
        assert (
            events[1]["reason"].startswith("the new judges did not start or failed their trial: ")
            and "no_such_criterion" in events[1]["reason"]
        )
        assert rewards(cluster.judges["topical"][0], batch) == expected(wordlist.topical, batch)
    finally:
        kill_all(cluster)


FAULTY = "tests.rollout.faulty_rules"
NAN = RuleJudgeSpec(name="nan", kind="rule", function=f"{FAULTY}:returns_nan")
RAISES = RuleJudgeSpec(name="raises", kind="rule", function=f"{FAULTY}:raises")


def test_new_judges_are_tried_before_they_are_trusted(ray_cluster, builtin_models, batch):
    """A new judge that raises, answers NaN / None, misses more verdicts than it may, or is too slow
    on a few rollouts of the latest batch is refused, and the old judges keep serving."""
    from driver.cluster import JudgeTrialError

    cluster = cluster_of([GT], str(builtin_models.policy))
    cluster.last_sampled = ray.put(batch)  # what `sample` records: the latest batch
    try:
        gt = cluster.judges["ground-truth"][0]
        for bad, what in ((NAN, "returned nan"), (RAISES, "raised ZeroDivisionError: the rule divided by zero")):
            with pytest.raises(
                JudgeTrialError,
                match=rf"^judge '{bad.name}' \(kind rule\) failed its trial on 2 rollouts "
                rf"of step 0: judge '{bad.name}' \(kind rule\) at step 0: .*{what}",
            ):
                swap_judges(cluster, [GT, bad], RunConfig(), "unused", 3, [])
            assert cluster.judges == {"ground-truth": [gt]} and cluster.judge_specs == {"ground-truth": GT}
        # a changed judge under the same name: its old replica had to go first, and is back after the failed trial
        changed = GT.model_copy(update={"function": f"{FAULTY}:returns_none"})
        with pytest.raises(JudgeTrialError, match="returned None"):
            swap_judges(cluster, [changed], RunConfig(), "unused", 4, [])
        assert cluster.judge_specs == {"ground-truth": GT} and dead(gt)
        assert rewards(cluster.judges["ground-truth"][0], batch) == expected(wordlist.ground_truth, batch)

        # on_failure: skip: its trial may miss up to max_skipped_fraction (here 1 of 2: " ... cat dog")
        catless = RuleJudgeSpec(
            name="catless", kind="rule", function=f"{FAULTY}:nan_for_cat", on_failure="skip", max_skipped_fraction=0.4
        )
        with pytest.raises(
            JudgeTrialError,
            match=r"judge 'catless' \(kind rule\) gave no verdict for 1 of 2 in its "
            r"trial on 2 rollouts of step 0, more than its max_skipped_fraction 0.4",
        ):
            swap_judges(cluster, [GT, catless], RunConfig(), "unused", 5, [])
        with pytest.raises(
            JudgeTrialError,
            match=r"judge 'slow' \(kind rule\) did not judge its trial batch "
            r"\(2 rollouts of step 0\) within 2s",
        ):
            swap_judges(
                cluster,
                [RuleJudgeSpec(name="slow", kind="rule", function=f"{FAULTY}:slow")],
                RunConfig(),
                "unused",
                5,
                [],
                trial_timeout_s=2.0,
            )
        assert list(cluster.judges) == ["ground-truth"]
        lenient = catless.model_copy(update={"max_skipped_fraction": 0.5})
        assert swap_judges(cluster, [GT, lenient], RunConfig(), "unused", 5, []) == (["catless"], [])
    finally:
        kill_all(cluster)


def test_loop_rejects_a_manifest_whose_judges_fail_their_trial_and_keeps_the_old_ones(
    ray_cluster, builtin_models, batch, tmp_path, caplog
):
    from driver.plan import resolve_plan
    from driver.run import JUDGES_FILE, Loop

    path = tmp_path / "judges.yaml"
    path.write_text("judges:\n  - {name: ground-truth, kind: rule, function: rollout.tasks.wordlist:ground_truth}\n")
    manifest = JudgeManifest(judges=(GT.model_copy(update={"temperature": 1.0}),))
    plan = resolve_plan(RunConfig(output=str(tmp_path / "run")), manifest, manifest_path=path)
    plan.output.mkdir(parents=True)
    cluster = cluster_of(manifest.judges, str(builtin_models.policy))
    cluster.last_sampled = ray.put(batch)
    loop = Loop(plan, cluster, str(builtin_models.policy), time.perf_counter())
    old = cluster.judges["ground-truth"][0]
    try:
        # passes every file check (the function imports), fails on real rollouts
        path.write_text(f"judges:\n  - {{name: nan, kind: rule, function: '{FAULTY}:returns_nan'}}\n")
        with caplog.at_level(logging.ERROR, logger="driver"):
            loop.maybe_swap_judges(collections.deque(), 6, [])
        assert cluster.judges == {"ground-truth": [old]} and loop.plan.manifest == manifest
        assert loop.judge_events == {"judges/swaps": 0.0, "judges/rejected_manifests": 1.0}
        (event,) = [json.loads(line) for line in (plan.output / JUDGES_FILE).read_text().splitlines()]
        assert event["event"] == "rejected" and event["step"] == 6 and event["judges"] == ["ground-truth"]
        assert "judge 'nan' (kind rule) failed its trial" in event["reason"] and "returned nan" in event["reason"]
        assert "judge swap at step 6 failed; keeping the current judges" in caplog.text
        loop.maybe_swap_judges(collections.deque(), 7, [])  # the same file: judged once, not retried every step
        assert len((plan.output / JUDGES_FILE).read_text().splitlines()) == 1
        assert rewards(old, batch) == expected(wordlist.ground_truth, batch)  # still the judge
    finally:
        kill_all(cluster)
