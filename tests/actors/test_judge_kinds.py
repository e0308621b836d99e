"""The model-backed judge kinds (pairwise, self, population) through real JudgeActors in the
session Ray cluster, started by the driver's `start_judges` (driver/cluster.py) on the tiny
built-in models. The self judge also takes new weights through the driver's `publish_weights`,
from a stand-in learner actor that exports a modified policy and its probe the way
actors/learner.py does."""

from __future__ import annotations

import pytest
import ray
import torch

from protocols import (
    PairwiseJudgeSpec,
    PopulationJudgeSpec,
    RolloutBatch,
    RunConfig,
    SelfJudgeSpec,
    SyncProbe,
    WeightVersion,
)
from rollout.judges.base import comparison_pairs
from rollout.tasks import wordlist
from tests.actors.test_judge_actor import clearly_bad, find_prompt, make_batch, perfect

K = 3  # samples per prompt: 3 within-group pairs each


@pytest.fixture(scope="module")
def batch() -> RolloutBatch:
    fruits = find_prompt("list 3 fruits:")
    other = [p for p in wordlist.heldout_prompts() if p.text != fruits.text][0]
    pairs = [(fruits, " apple pear plum"), (fruits, " apple apple cat"), (fruits, " apple cat dog red")]
    pairs += [(other, perfect(other)), (other, clearly_bad(other)), (other, "")]
    return make_batch(pairs, samples_per_prompt=K)


def check_preferences(judgement, batch: RolloutBatch, name: str, mode: str = "all_pairs") -> list[float]:
    """The within-group pairs of `mode`, in comparison_pairs order; returns their probabilities."""
    assert judgement.judge == name and judgement.rewards is None
    expected = comparison_pairs(len(batch.rollouts), K, mode)
    assert [(p.first, p.second) for p in judgement.preferences] == expected
    return [p.probability for p in judgement.preferences]


def in_process(spec, batch: RolloutBatch, mode: str = "all_pairs") -> list[float]:
    """The same judge built in this process (as the actor builds it) on the same pairs."""
    from driver.builtin import resolve_model_path
    from rollout.judges import build_judge

    def path_of(s):
        return resolve_model_path(s.path) if getattr(s, "path", None) else None

    members = {m.name: path_of(m) for m in spec.members} if spec.kind == "population" else None
    judge = build_judge(spec, path_of(spec), members)
    pairs = comparison_pairs(len(batch.rollouts), K, mode)
    r = batch.rollouts
    return judge.compare(
        [r[i].prompt_text for i, _ in pairs], [r[i].response_text for i, _ in pairs], [r[j].response_text for _, j in pairs]
    )


def start(ray_cluster, spec, policy_path: str):
    from driver.cluster import start_judges

    (replicas,) = start_judges([spec], RunConfig(), policy_path).values()
    return replicas[0]


# --------------------------------------------------------------------------- pairwise


def test_pairwise_judge_actor(ray_cluster, builtin_models, batch):
    spec = PairwiseJudgeSpec(name="policy-as-judge", kind="pairwise", path="builtin:policy", batch_size=4, comparisons="adjacent")
    actor = start(ray_cluster, spec, str(builtin_models.policy))
    try:
        judgement = ray_cluster.get(actor.judge_batch.remote(batch))
        got = check_preferences(judgement, batch, "policy-as-judge", "adjacent")  # (0, 1), (1, 2) per prompt
        assert got == pytest.approx(in_process(spec, batch, "adjacent"), abs=1e-6)
        assert any(abs(p - 0.5) > 1e-4 for p in got)  # real verdicts, not ties
        assert judgement.seconds > 0.0
        with pytest.raises(TypeError, match="kind 'pairwise' does not take policy weights"):
            ray_cluster.get(actor.load_weights.remote({}, None))
    finally:
        ray_cluster.kill(actor)


# --------------------------------------------------------------------------- population


def test_population_judge_actor(ray_cluster, builtin_models, batch):
    # one member of each usable kind without a server: rule, reward_model, pairwise
    spec = PopulationJudgeSpec(
        name="crowd",
        kind="population",
        mode="draw",
        seed=3,
        members=(
            dict(name="topical", kind="rule", function="rollout.tasks.wordlist:topical", temperature=0.0),
            dict(name="rm", kind="reward_model", path="builtin:reward-model", temperature=0.5),
            dict(name="policy", kind="pairwise", path="builtin:policy"),
        ),
    )
    actor = start(ray_cluster, spec, str(builtin_models.policy))
    try:
        first = check_preferences(ray_cluster.get(actor.judge_batch.remote(batch)), batch, "crowd")
        again = check_preferences(ray_cluster.get(actor.judge_batch.remote(batch)), batch, "crowd")
        assert first == pytest.approx(again, abs=1e-6)  # the draws depend only on the triples
        assert first == pytest.approx(in_process(spec, batch), abs=1e-6)  # and not on the process
        vote = spec.model_copy(update={"name": "crowd-vote", "mode": "vote"})
        voter = start(ray_cluster, vote, str(builtin_models.policy))
        try:
            voted = check_preferences(ray_cluster.get(voter.judge_batch.remote(batch)), batch, "crowd-vote")
            assert voted == pytest.approx(in_process(vote, batch), abs=1e-6)
        finally:
            ray_cluster.kill(voter)
    finally:
        ray_cluster.kill(actor)


# --------------------------------------------------------------------------- self


@ray.remote
class StandInLearner:
    """Exports a fixed (WeightVersion, state dict), like LearnerActor.export on rank 0."""

    def __init__(self, version: WeightVersion, state: dict[str, torch.Tensor]):
        self.version, self.state = version, state

    @ray.method(num_returns=2)
    def export(self, step: int, probe_sequences: list[list[int]]):
        return self.version, self.state


def modified_policy(path: str, scale: float) -> tuple[dict[str, torch.Tensor], list[list[int]], SyncProbe]:
    """The policy with one layer's weights scaled, some probe sequences, and its logprobs on them
    computed as the learner's probe is (common/tensors.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.tensors import probe_logprobs

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state[LAYER] = state[LAYER] * scale
    model.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(path)
    sequences = [tokenizer("list 3 fruits: apple pear plum")["input_ids"], tokenizer("name 2 animals: cat")["input_ids"]]
    rows = probe_logprobs(model, sequences)
    probe = SyncProbe(token_ids=tuple(tuple(s) for s in sequences), logprobs=tuple(tuple(r) for r in rows))
    return state, sequences, probe


LAYER = "model.layers.1.mlp.down_proj.weight"


def version_of(number: int, state: dict[str, torch.Tensor], probe: SyncProbe) -> WeightVersion:
    return WeightVersion(
        version=number,
        step=max(0, number - 1),
        num_tensors=len(state),
        num_bytes=sum(t.numel() * t.element_size() for t in state.values()),
        probe=probe,
    )


def test_self_judge_actor_follows_the_policy(ray_cluster, builtin_models, batch):
    from driver.cluster import Cluster, publish_weights
    from protocols import RuleJudgeSpec

    policy = str(builtin_models.policy)
    spec = SelfJudgeSpec(name="self", kind="self", batch_size=4)
    actor = start(ray_cluster, spec, policy)
    gt = RuleJudgeSpec(name="gt-kinds", kind="rule", function="rollout.tasks.wordlist:ground_truth")
    rule_actor = start(ray_cluster, gt, policy)
    learner = None
    try:
        assert ray_cluster.get(actor.policy_version.remote()) == 0
        before = check_preferences(ray_cluster.get(actor.judge_batch.remote(batch)), batch, "self")

        # the driver's publish_weights: rollout workers (none here) first, then every self judge
        state, sequences, probe = modified_policy(policy, scale=3.0)
        learner = StandInLearner.remote(version_of(1, state, probe), state)
        cluster = Cluster(
            rollouts=[],
            learners=[learner],
            judges={"self": [actor], "gt-kinds": [rule_actor]},
            eval_judge=[],
            judge_specs={"self": spec, "gt-kinds": gt},
        )
        refs = publish_weights(cluster, 0, sequences)
        assert len(refs) == 1  # the rule judge gets no weights
        (report,) = ray_cluster.get(refs)
        assert (report.worker, report.version) == ("judge-self", 1)
        assert report.max_abs_logprob_diff < 1e-4  # same weights, same math as the learner
        assert ray_cluster.get(actor.policy_version.remote()) == 1
        after = check_preferences(ray_cluster.get(actor.judge_batch.remote(batch)), batch, "self")
        assert max(abs(a - b) for a, b in zip(before, after)) > 1e-4  # judged by the new weights

        # a probe the loaded weights do not reproduce stops the run
        wrong = SyncProbe(token_ids=probe.token_ids, logprobs=tuple(tuple(x - 0.5 for x in row) for row in probe.logprobs))
        with pytest.raises(ray_cluster.exceptions.RayTaskError, match="probe logprob gap"):
            ray_cluster.get(actor.load_weights.remote(state, version_of(2, state, wrong)))
        assert ray_cluster.get(actor.policy_version.remote()) == 1
        # an older version number is taken (work redone after a fault), proven by its probe
        assert ray_cluster.get(actor.load_weights.remote(state, version_of(0, state, probe))).version == 0
        assert ray_cluster.get(actor.policy_version.remote()) == 0
        with pytest.raises(ray_cluster.exceptions.RayTaskError, match="kind 'rule' does not take policy weights"):
            ray_cluster.get(rule_actor.load_weights.remote(state, version_of(2, state, probe)))
    finally:
        for handle in (actor, rule_actor, learner):
            if handle is not None:
                ray_cluster.kill(handle)


def test_self_judge_rejects_a_state_dict_that_does_not_match(builtin_models):
    """strict=True: a missing tensor is an error, not a silently half-updated policy (no Ray)."""
    from rollout.judges import build_judge

    judge = build_judge(SelfJudgeSpec(name="self", kind="self"), str(builtin_models.policy))
    state, _, probe = modified_policy(str(builtin_models.policy), scale=1.0)
    del state[LAYER]
    with pytest.raises(RuntimeError, match="Missing key"):
        judge.load_weights(state, version_of(1, state, probe))
    assert judge.policy_version == 0
