"""deploy/placement.py: custom resources and the placement strategy. By hand (the options and
bundles it builds, the totals the resource check reads) and on a real two-node Ray cluster (where
PACK, SPREAD and STRICT_SPREAD put the bundles, and custom resources pinning them)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from deploy import placement
from driver.cluster import check_resources
from protocols import JudgeManifest, LearnerConfig, RolloutConfig, RuleJudgeSpec, RunConfig


def judge(name: str = "gt", replicas: int = 1, **resources: float) -> RuleJudgeSpec:
    return RuleJudgeSpec(
        name=name, kind="rule", function="rollout.tasks.wordlist:ground_truth", replicas=replicas, resources=resources
    )


PINNED = RunConfig(
    rollout=RolloutConfig(num_workers=2, resources={"rollout_node": 1}),
    learner=LearnerConfig(num_workers=1, num_cpus=2, resources={"learner_node": 1}),
)


def test_custom_resources_reach_the_bundles_and_every_actor_s_options():
    assert placement.group_bundles(PINNED) == [
        {"CPU": 1.0, "rollout_node": 1.0},
        {"CPU": 1.0, "rollout_node": 1.0},
        {"CPU": 2.0, "learner_node": 1.0},
    ]
    pg = object()
    assert [placement.rollout_options(PINNED, i, pg)["resources"] for i in range(2)] == [{"rollout_node": 1.0}] * 2
    assert placement.learner_options(PINNED, 0, pg)["resources"] == {"learner_node": 1.0}
    assert placement.judge_options(judge(rollout_node=0.01), 0)["resources"] == {"rollout_node": 0.01}
    # none asked: plain bundles, no custom resources
    assert placement.group_bundles(RunConfig()) == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert placement.rollout_options(RunConfig(), 0, pg)["resources"] == {}


def test_required_resources_add_up_custom_resources_and_a_local_cluster_gets_all_of_them():
    judges = [judge("a", replicas=3, rollout_node=0.01), judge("b", other=2)]
    assert placement.custom_resources(PINNED, judges) == {"rollout_node": 2.03, "learner_node": 1.0, "other": 2.0}
    assert placement.required_resources(PINNED, judges) == {
        "CPU": 4.0,
        "GPU": 0.0,
        "rollout_node": 2.03,
        "learner_node": 1.0,
        "other": 2.0,
    }
    assert placement.local_resources(PINNED, [judge("big", replicas=2, other=900)]) == {
        "rollout_node": 1000.0,
        "learner_node": 1000.0,
        "other": 1800.0,
    }
    assert placement.local_resources(RunConfig(), [judge()]) == {}


def test_sampling_ahead_with_more_threads_than_cores_is_warned_about():
    ahead = RunConfig(rollout=RolloutConfig(max_staleness=1), learner=LearnerConfig(num_cpus=2))
    line = placement.shared_cores_warning(ahead, 2)
    assert line is not None and "rollout.max_staleness 1" in line and "run 3 threads" in line and "2 cores" in line
    assert placement.shared_cores_warning(ahead, 3) is None  # they fit
    assert placement.shared_cores_warning(RunConfig(), 1) is None  # on-policy: nothing overlaps
    assert placement.shared_cores_warning(RunConfig(rollout=RolloutConfig(max_staleness=1)), 2) is None  # 1 + 1 on 2
    two_workers = RunConfig(rollout=RolloutConfig(max_staleness=2, num_workers=2))
    assert "run 3 threads" in (placement.shared_cores_warning(two_workers, 2) or "")
    on_gpus = RunConfig(rollout=RolloutConfig(max_staleness=1, num_gpus=1), learner=LearnerConfig(num_cpus=2, num_gpus=1))
    assert placement.shared_cores_warning(on_gpus, 2) is None


def test_check_resources_names_a_custom_resource_no_node_has(monkeypatch):
    import driver.cluster

    plan = SimpleNamespace(cfg=PINNED, manifest=JudgeManifest(judges=(judge(rollout_node=0.01),)), eval_judge=judge())
    monkeypatch.setattr(
        driver.cluster.ray, "cluster_resources", lambda: {"CPU": 8.0, "rollout_node": 100.0, "learner_node": 100.0}
    )
    check_resources(plan)
    monkeypatch.setattr(driver.cluster.ray, "cluster_resources", lambda: {"CPU": 8.0, "rollout_node": 100.0})
    with pytest.raises(RuntimeError, match=r"the run needs 1 learner_node but the cluster has 0"):
        check_resources(plan)


def test_a_judge_swap_needing_a_custom_resource_the_cluster_lacks_is_refused_before_anything_starts(monkeypatch):
    import driver.cluster
    from driver.cluster import Cluster, swap_judges

    assert placement.judge_resources([judge("a", replicas=2, rollout_node=0.5), judge("b")]) == {
        "CPU": 0.0,
        "GPU": 0.0,
        "rollout_node": 1.0,
    }
    old = judge("old", rollout_node=0.01)
    cluster = Cluster(rollouts=[], learners=[], judges={"old": ["handle"]}, eval_judge=[], judge_specs={"old": old})
    monkeypatch.setattr(driver.cluster.ray, "available_resources", lambda: {"CPU": 4.0, "rollout_node": 99.99})
    monkeypatch.setattr(driver.cluster, "start_judges", lambda *a, **k: pytest.fail("started a judge"))
    with pytest.raises(RuntimeError, match=r"the new judges need .*'gpu_node': 1\.0"):
        swap_judges(cluster, [old, judge("new", gpu_node=1)], RunConfig(), "unused", 3, [])
    assert cluster.judges == {"old": ["handle"]}  # nothing retired


def test_the_group_is_placed_with_the_configured_strategy_and_timeout(monkeypatch):
    seen = {}

    def fake_group(bundles, strategy, name):
        seen.update(bundles=bundles, strategy=strategy)
        return SimpleNamespace(ready=lambda: "ready-ref")

    monkeypatch.setattr(placement, "placement_group", fake_group)
    monkeypatch.setattr(placement.ray, "wait", lambda refs, timeout: (seen.update(timeout=timeout) or [], refs))
    monkeypatch.setattr(placement.ray, "available_resources", lambda: {"CPU": 1.0})
    cfg = PINNED.model_copy(
        update={"placement": PINNED.placement.model_copy(update={"strategy": "STRICT_SPREAD", "timeout_s": 7.0})}
    )
    with pytest.raises(RuntimeError, match=r"could not place .* \(STRICT_SPREAD\) within 7s: available"):
        placement.create_placement_group(cfg)
    assert seen == {"bundles": placement.group_bundles(cfg), "strategy": "STRICT_SPREAD", "timeout": 7.0}
    with pytest.raises(RuntimeError, match=r"\(SPREAD\) within 2s"):  # explicit arguments win
        placement.create_placement_group(cfg, strategy="SPREAD", timeout_s=2.0)


@pytest.mark.parametrize(
    "section, error",
    [
        ({"rollout": {"resources": {"CPU": 1}}}, "CPU: not a custom resource"),
        ({"learner": {"resources": {"GPU": 1, "memory": 2}}}, "GPU, memory: not a custom resource"),
        ({"learner": {"resources": {"learner_node": 0}}}, "greater than 0"),
        ({"placement": {"strategy": "pack"}}, "'PACK', 'SPREAD', 'STRICT_PACK' or 'STRICT_SPREAD'"),
        ({"placement": {"timeout_s": 0}}, "greater than 0"),
    ],
)
def test_config_refuses_what_ray_would_misread(section, error):
    with pytest.raises(ValidationError, match=error):
        RunConfig.model_validate(section)


def test_a_judge_s_resources_refuse_cpus_too():
    with pytest.raises(ValidationError, match="CPU: not a custom resource"):
        judge(CPU=1)


@pytest.fixture(scope="module")
def two_nodes(without_session_ray):
    """A real two-node Ray cluster in this process (ray.cluster_utils), 2 CPUs per node."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"rollout_node": 10}, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=2, resources={"learner_node": 10})
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()


def placed(cfg: RunConfig) -> list[str]:
    """Node id of each bundle, the group removed (and its CPUs free again) afterwards."""
    import ray
    from ray.util.placement_group import placement_group_table, remove_placement_group

    pg = placement.create_placement_group(cfg)
    nodes = placement_group_table(pg)["bundles_to_node_id"]
    remove_placement_group(pg)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < 4.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return [nodes[i] for i in range(len(nodes))]


def strategy(name: str, cfg: RunConfig | None = None, timeout_s: float = 30.0) -> RunConfig:
    cfg = cfg or RunConfig()
    return cfg.model_copy(update={"placement": cfg.placement.model_copy(update={"strategy": name, "timeout_s": timeout_s})})


@pytest.mark.slow
def test_strategies_and_custom_resources_on_two_real_nodes(two_nodes):
    assert len(two_nodes) == 2
    rollout_node = next(i for i, r in two_nodes.items() if "rollout_node" in r)
    learner_node = next(i for i, r in two_nodes.items() if "learner_node" in r)
    # one rollout worker + one learner rank, 1 CPU each
    assert len(set(placed(strategy("PACK")))) == 1  # both fit on one node
    assert len(set(placed(strategy("STRICT_PACK")))) == 1
    assert len(set(placed(strategy("SPREAD")))) == 2  # one per node
    assert len(set(placed(strategy("STRICT_SPREAD")))) == 2
    # custom resources beat PACK's wish for one node
    assert placed(
        strategy(
            "PACK",
            RunConfig(rollout=RolloutConfig(resources={"rollout_node": 1}), learner=LearnerConfig(resources={"learner_node": 1})),
        )
    ) == [rollout_node, learner_node]
    # three bundles cannot go on three distinct nodes of two: the run fails, naming the strategy
    three = RunConfig(rollout=RolloutConfig(num_workers=2))
    with pytest.raises(RuntimeError, match=r"could not place .* \(STRICT_SPREAD\) within 3s"):
        placement.create_placement_group(strategy("STRICT_SPREAD", three, timeout_s=3.0))
