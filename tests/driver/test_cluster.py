"""driver/cluster.py and deploy/placement.py with several rollout workers, learner ranks and judge
replicas, by hand: which worker gets which prompts and seed, which replica judges which batch,
where each actor is placed, and the resource guards. Stand-in actor handles record the calls
(no Ray cluster, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deploy import placement
from driver.cluster import Cluster, asked_replicas, check_resources, judge, sample
from protocols import JudgeManifest, LearnerConfig, Prompt, RolloutConfig, RuleJudgeSpec, RunConfig


class Handle:
    """A stand-in actor handle: `handle.method.remote(*args)` returns (name, method, args)."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, method: str):
        return SimpleNamespace(remote=lambda *args, **kwargs: (self.name, method, args))


def prompts(n: int) -> list[Prompt]:
    return [Prompt(prompt_id=f"p{i}", text=f"list {i % 6 + 1} fruits:") for i in range(n)]


def test_sample_gives_each_worker_its_contiguous_shard_and_its_own_seed():
    cluster = Cluster(rollouts=[Handle("w0"), Handle("w1"), Handle("w2")], learners=[], judges={}, eval_judge=[])
    calls = sample(cluster, 7, prompts(8), 4, seeds=[101, 202, 303], temperature=0.5)
    assert [(name, method) for name, method, _ in calls] == [("w0", "generate"), ("w1", "generate"), ("w2", "generate")]
    batches = [args[0] for _, _, args in calls]
    assert [[p.prompt_id for p in b.prompts] for b in batches] == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6", "p7"]]
    assert all(b.step == 7 and b.samples_per_prompt == 4 for b in batches)
    assert [args[1:] for _, _, args in calls] == [(101, 0.5), (202, 0.5), (303, 0.5)]
    with pytest.raises(ValueError):  # one seed per worker, never silently reused
        sample(cluster, 7, prompts(8), 4, seeds=[101, 202])


def test_judge_replicas_share_a_batch_and_take_single_groups_in_turn(monkeypatch):
    import actors.judge

    monkeypatch.setattr(actors.judge, "merge_parts", SimpleNamespace(remote=lambda sizes, *parts: ("merged", sizes, parts)))
    judges = {"gt": [Handle("gt-0"), Handle("gt-1")], "rm": [Handle("rm-0")], "three": [Handle(f"t-{i}") for i in range(3)]}
    # batches of one prompt group: batch b of step s goes to replica (s + b) % replicas, in manifest order
    refs, asked = judge(judges, ["batch0", "batch1"], step=5, groups=[1, 1], k=4)
    assert [[(name, args) for name, _, args in per_batch] for per_batch in refs] == [
        [("gt-1", ("batch0",)), ("rm-0", ("batch0",)), ("t-2", ("batch0",))],
        [("gt-0", ("batch1",)), ("rm-0", ("batch1",)), ("t-0", ("batch1",))],
    ]
    assert asked[0, 0] == [(1, refs[0][0])] and asked[1, 2] == [(0, refs[1][2])]
    # over steps, one worker's batch visits every replica of a judge
    assert {judge(judges, ["b"], step=s, groups=[1], k=4)[0][0][2][0] for s in range(3)} == {"t-0", "t-1", "t-2"}
    # more groups: every replica judges a part (whole groups, the first parts larger), joined in order
    refs, asked = judge(judges, ["batch0"], step=5, groups=[5], k=4)
    gt, rm, three = refs[0]
    assert gt == ("merged", [12, 8], (("gt-0", "judge_batch", ("batch0",)), ("gt-1", "judge_batch", ("batch0",))))
    assert rm == ("rm-0", "judge_batch", ("batch0",))  # one replica: the whole batch
    assert three[:2] == ("merged", [8, 8, 4]) and [r for r, _ in asked[0, 2]] == [0, 1, 2]
    # a batch of 2 groups uses 2 of the 3 replicas
    ((_, _, three),) = judge(judges, ["b"], step=0, groups=[2], k=4)[0]
    assert three[:2] == ("merged", [4, 4]) and [call[0] for call in three[2]] == ["t-0", "t-1"]
    # what `ask` uses, said once (a self judge's replicas get weights only if they will be asked)
    assert asked_replicas(3, step=0, b=0, groups=2) == [0, 1] and asked_replicas(3, step=5, b=1, groups=1) == [0]
    assert asked_replicas(2, step=5, b=0, groups=5) == [0, 1] and asked_replicas(1, step=9, b=3, groups=7) == [0]


def test_placement_one_bundle_per_worker_then_per_rank_and_named_actors():
    cfg = RunConfig(rollout=RolloutConfig(num_workers=2, num_cpus=1.5), learner=LearnerConfig(num_workers=3, num_cpus=2.0))
    pg = object()  # the strategy only carries it
    rollouts = [placement.rollout_options(cfg, i, pg) for i in range(2)]
    learners = [placement.learner_options(cfg, r, pg) for r in range(3)]
    assert [o["name"] for o in rollouts + learners] == ["rollout-0", "rollout-1", "learner-0", "learner-1", "learner-2"]
    assert [o["scheduling_strategy"].placement_group_bundle_index for o in rollouts + learners] == [0, 1, 2, 3, 4]
    assert all(o["scheduling_strategy"].placement_group is pg for o in rollouts + learners)
    assert [o["num_cpus"] for o in rollouts + learners] == [1.5, 1.5, 2.0, 2.0, 2.0]
    assert rollouts[0]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"  # floor(1.5)
    assert learners[0]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"


def judges(*cpus: float, replicas: int = 1, gpus: float = 0.0) -> list[RuleJudgeSpec]:
    return [
        RuleJudgeSpec(
            name=f"j{i}",
            kind="rule",
            function="rollout.tasks.wordlist:ground_truth",
            num_cpus=c,
            num_gpus=gpus,
            replicas=replicas,
        )
        for i, c in enumerate(cpus)
    ]


def test_required_resources_add_up_workers_ranks_and_every_judge_replica():
    cfg = RunConfig(
        rollout=RolloutConfig(num_workers=2, num_cpus=1.5, num_gpus=0.5),
        learner=LearnerConfig(num_workers=2, num_cpus=1.0, num_gpus=1.0),
    )
    needed = placement.required_resources(cfg, judges(0.5, 0.25, replicas=3, gpus=0.125))
    # CPU: 2 x 1.5 + 2 x 1.0 + 3 x (0.5 + 0.25); GPU: 2 x 0.5 + 2 x 1.0 + 3 x 2 x 0.125
    assert needed == {"CPU": 7.25, "GPU": 3.75}
    assert placement.judge_resources(judges(0.5, 0.25, replicas=3, gpus=0.125)) == {"CPU": 2.25, "GPU": 0.75}


def test_check_resources_names_what_is_missing(monkeypatch):
    import driver.cluster

    cfg = RunConfig(rollout=RolloutConfig(num_workers=2), learner=LearnerConfig(num_workers=1))
    plan = SimpleNamespace(cfg=cfg, manifest=JudgeManifest(judges=tuple(judges(1.0))), eval_judge=judges(1.0)[0])
    # 2 workers + 1 rank + 1 judge + the eval judge = 5 CPUs
    monkeypatch.setattr(driver.cluster.ray, "cluster_resources", lambda: {"CPU": 5.0})
    check_resources(plan)
    monkeypatch.setattr(driver.cluster.ray, "cluster_resources", lambda: {"CPU": 4.5, "memory": 1.0})
    with pytest.raises(RuntimeError, match=r"the run needs 5 CPU but the cluster has 4\.5"):
        check_resources(plan)
    gpu_cfg = cfg.model_copy(update={"learner": LearnerConfig(num_workers=1, num_gpus=1.0)})
    monkeypatch.setattr(driver.cluster.ray, "cluster_resources", lambda: {"CPU": 8.0})
    with pytest.raises(RuntimeError, match=r"the run needs 1 GPU but the cluster has 0"):
        check_resources(SimpleNamespace(**{**vars(plan), "cfg": gpu_cfg}))
