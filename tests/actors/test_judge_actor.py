"""JudgeActor (actors/judge.py) through the session Ray cluster: a rule judge and the built-in
reward model judging real RolloutBatches, placed with the options of deploy/placement.py.

The reward-model batching check runs the plain RewardModelJudge in this process (no Ray).
"""

from __future__ import annotations

import pytest

from protocols import Judgement, Prompt, RewardModelJudgeSpec, Rollout, RolloutBatch, RuleJudgeSpec
from rollout.tasks import wordlist

GROUND_TRUTH = "rollout.tasks.wordlist:ground_truth"


def find_prompt(text: str) -> Prompt:
    (prompt,) = [p for p in wordlist.train_prompts() + wordlist.heldout_prompts() if p.text == text]
    return prompt


def make_batch(pairs: list[tuple[Prompt, str]], samples_per_prompt: int, version: int = 2) -> RolloutBatch:
    """Rollouts of (prompt, response text); token ids are small dummies (judges read only text)."""
    rollouts = tuple(
        Rollout(
            prompt_id=prompt.prompt_id,
            prompt_text=prompt.text,
            prompt_token_ids=(1, 2, 3, 4),
            response_text=response,
            response_token_ids=tuple(range(5, 5 + len(response.split()))) + (2,),  # words, then EOS
            logprobs=(-0.25,) * (len(response.split()) + 1),
            policy_version=version,
            finish_reason="stop",
        )
        for prompt, response in pairs
    )
    return RolloutBatch(step=0, policy_version=version, samples_per_prompt=samples_per_prompt, rollouts=rollouts)


def perfect(prompt: Prompt) -> str:
    category, n = wordlist.parse_prompt(prompt.text)
    return " " + " ".join(wordlist.CATEGORIES[category][:n])


def clearly_bad(prompt: Prompt) -> str:
    """2n repeats of one off-topic word: topical 0, exact_count 0, varied 1 / 2n."""
    category, n = wordlist.parse_prompt(prompt.text)
    other = "tools" if category != "tools" else "fruits"
    return " " + " ".join([wordlist.CATEGORIES[other][0]] * (2 * n))


@pytest.fixture(scope="module")
def rule_batch() -> RolloutBatch:
    fruits, animals = find_prompt("list 3 fruits:"), find_prompt("name 2 animals:")
    others = [p for p in wordlist.heldout_prompts() if p.text not in (fruits.text, animals.text)][:2]
    pairs = [
        (fruits, " apple pear plum"),
        (fruits, " apple cat apple apple"),
        (animals, " cat dog dog"),
        (animals, ""),  # an empty response (the EOS straight away)
    ]
    for prompt in others:
        pairs += [(prompt, perfect(prompt)), (prompt, clearly_bad(prompt))]
    return make_batch(pairs, samples_per_prompt=2)


# --------------------------------------------------------------------------- rule judge


@pytest.fixture(scope="module")
def rule_actor(ray_cluster):
    from actors.judge import JudgeActor
    from deploy.placement import judge_options

    spec = RuleJudgeSpec(name="ground-truth", kind="rule", function=GROUND_TRUTH)
    actor = JudgeActor.options(**judge_options(spec, 0)).remote(spec, None)
    yield actor
    ray_cluster.kill(actor)


def test_rule_judge_matches_the_function(ray_cluster, rule_actor, rule_batch):
    judgement = ray_cluster.get(rule_actor.judge_batch.remote(rule_batch))
    assert isinstance(judgement, Judgement)
    assert judgement.judge == "ground-truth" and judgement.preferences is None
    expected = tuple(wordlist.ground_truth(r.prompt_text, r.response_text) for r in rule_batch.rollouts)
    assert judgement.rewards == expected  # same function, same inputs, same floats
    assert judgement.rewards[0] == pytest.approx(1.0)  # perfect: 0.5 * 1 + 0.3 * 1 + 0.2 * 1
    assert judgement.rewards[1] == pytest.approx(0.675)  # 0.5 * 3/4 + 0.3 * (1 - 1/3) + 0.2 * 2/4
    # " cat dog dog" for n = 2: topical 3/3, exact_count 1 - |3 - 2| / 2 = 1/2, varied 2/3
    # 0.5 * 1 + 0.3 * 0.5 + 0.2 * 2/3 = 0.5 + 0.15 + 0.1333333 = 0.7833333
    assert judgement.rewards[2] == pytest.approx(0.7833333, abs=1e-7)
    assert judgement.rewards[3] == 0.0  # empty response
    assert judgement.rewards[4] == pytest.approx(1.0) and judgement.rewards[5] < 0.2


def test_rule_judge_takes_an_object_ref(ray_cluster, rule_actor, rule_batch):
    # The driver passes the rollout worker's ObjectRef straight to the judge.
    ref = ray_cluster.put(rule_batch)
    direct = ray_cluster.get(rule_actor.judge_batch.remote(rule_batch))
    via_ref = ray_cluster.get(rule_actor.judge_batch.remote(ref))
    assert (via_ref.judge, via_ref.rewards) == (direct.judge, direct.rewards)
    assert via_ref.seconds is not None and via_ref.seconds >= 0.0  # the judge reports its own time


def test_placement_options_give_a_named_actor(ray_cluster, rule_actor, rule_batch):
    from deploy.placement import judge_options

    spec = RuleJudgeSpec(name="ground-truth", kind="rule", function=GROUND_TRUTH, replicas=2, num_cpus=1.5)
    options = judge_options(spec, 0)
    assert options["name"] == "judge-ground-truth-0"
    assert (options["num_cpus"], options["num_gpus"]) == (1.5, 0.0)
    assert options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"  # floor(1.5)
    assert judge_options(spec, 1, prefix="eval-judge")["name"] == "eval-judge-ground-truth-1"
    # rule_actor was created with these options for replica 0: Ray finds it by that name
    found = ray_cluster.get_actor("judge-ground-truth-0")
    assert found == rule_actor  # handles compare by actor id
    judgement = ray_cluster.get(found.judge_batch.remote(rule_batch))
    assert judgement.judge == "ground-truth" and len(judgement.rewards) == len(rule_batch.rollouts)


def test_bad_judge_output_is_an_error_naming_the_judge_and_skip_counts_it(ray_cluster, rule_batch):
    """The actor boundary: a rule returning NaN stops with JudgeOutputError naming judge, kind and
    step (on_failure: fail), or answers with the missing verdicts marked (skip); the repr says so."""
    import ray

    from actors.judge import JudgeActor
    from rollout.judges.base import JudgeOutputError

    spec = RuleJudgeSpec(name="faulty", kind="rule", function="tests.rollout.faulty_rules:nan_for_cat")
    strict = JudgeActor.remote(spec, None)
    lenient = JudgeActor.remote(spec.model_copy(update={"on_failure": "skip", "max_skipped_fraction": 0.5}), None)
    try:
        batch = rule_batch.model_copy(update={"step": 9})
        with pytest.raises(ray.exceptions.RayTaskError) as info:
            ray_cluster.get(strict.judge_batch.remote(batch))
        assert isinstance(info.value.cause, JudgeOutputError)
        assert str(info.value.cause).startswith(
            "judge 'faulty' (kind rule) at step 9: no verdict for 2 of 8: rollout 1, rollout 2: returned nan"
        )
        assert "1 failed (last at step 9: JudgeOutputError)" in ray_cluster.get(strict.__ray_call__.remote(repr))
        judgement = ray_cluster.get(lenient.judge_batch.remote(batch))
        assert judgement.failed == 2 and judgement.unjudged == (1, 2) and "returned nan" in judgement.failure
        assert "2 without a verdict (last at step 9)" in ray_cluster.get(lenient.__ray_call__.remote(repr))
    finally:
        ray_cluster.kill(strict)
        ray_cluster.kill(lenient)


# --------------------------------------------------------------------------- reward-model judge


@pytest.fixture(scope="module")
def rm_spec(builtin_models) -> RewardModelJudgeSpec:
    # batch_size 4 over 12 rollouts: three forward passes, each with right padding
    return RewardModelJudgeSpec(name="rm", kind="reward_model", path=str(builtin_models.reward_model), batch_size=4)


@pytest.fixture(scope="module")
def rm_batch() -> RolloutBatch:
    prompts = [find_prompt("list 3 fruits:")] + [p for p in wordlist.heldout_prompts() if p.text != "list 3 fruits:"][:5]
    pairs = []
    for prompt in prompts:
        good = " apple pear plum" if prompt.text == "list 3 fruits:" else perfect(prompt)
        bad = " hammer hammer hammer hammer hammer" if prompt.text == "list 3 fruits:" else clearly_bad(prompt)
        pairs += [(prompt, good), (prompt, bad)]
    return make_batch(pairs, samples_per_prompt=2)


@pytest.fixture(scope="module")
def rm_actor(ray_cluster, rm_spec):
    from actors.judge import JudgeActor
    from deploy.placement import judge_options

    actor = JudgeActor.options(**judge_options(rm_spec, 0)).remote(rm_spec, rm_spec.path)
    yield actor
    ray_cluster.kill(actor)


def test_reward_model_prefers_perfect_answers(ray_cluster, rm_actor, rm_batch):
    judgement = ray_cluster.get(rm_actor.judge_batch.remote(rm_batch))
    assert judgement.judge == "rm" and len(judgement.rewards) == len(rm_batch.rollouts)
    for (good, bad), group in zip(zip(judgement.rewards[::2], judgement.rewards[1::2]), rm_batch.groups()):
        assert good > bad + 1.0, (group[0].prompt_text, group[0].response_text, good, group[1].response_text, bad)


def test_reward_model_batching_does_not_change_scores(ray_cluster, rm_actor, rm_spec, rm_batch):
    from rollout.judges.reward_model import RewardModelJudge

    prompts = [r.prompt_text for r in rm_batch.rollouts]
    responses = [r.response_text for r in rm_batch.rollouts]
    one = RewardModelJudge(rm_spec.model_copy(update={"batch_size": 1}), rm_spec.path)
    reference = one.score(prompts, responses)  # no padding at all
    for batch_size in (5, 64):  # a ragged last batch (12 = 5 + 5 + 2), then everything at once
        one.batch_size = batch_size
        assert one.score(prompts, responses) == pytest.approx(reference, abs=1e-4)
    # the actor (batch_size 4, another process) agrees too
    remote = ray_cluster.get(rm_actor.judge_batch.remote(rm_batch)).rewards
    assert list(remote) == pytest.approx(reference, abs=1e-4)


# --------------------------------------------------------------------------- replicas sharing a batch


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_replicas_share_a_batch_and_their_parts_join_to_the_whole(ray_cluster, rule_batch, replicas):
    """driver/cluster.py `ask`: each replica judges a contiguous part of the prompt groups; the joined
    judgement equals one replica judging the whole batch, pointwise (rule) and pairwise (population)."""
    from actors.judge import JudgeActor
    from driver.cluster import ask
    from protocols import PopulationJudgeSpec

    groups = len(rule_batch.rollouts) // rule_batch.samples_per_prompt
    rule = RuleJudgeSpec(name="ground-truth", kind="rule", function=GROUND_TRUTH)
    crowd = PopulationJudgeSpec(
        name="crowd",
        kind="population",
        mode="draw",
        seed=5,
        members=(
            dict(name="topical", kind="rule", function="rollout.tasks.wordlist:topical", temperature=0.1),
            dict(name="count", kind="rule", function="rollout.tasks.wordlist:exact_count", temperature=0.1),
        ),
    )
    for spec in (rule, crowd):
        actors = [JudgeActor.remote(spec, None, {"topical": None, "count": None}) for _ in range(replicas)]
        try:
            ref = ray_cluster.put(rule_batch)
            whole = ray_cluster.get(actors[0].judge_batch.remote(ref))
            joined, calls = ask(actors, ref, step=4, b=1, groups=groups, k=rule_batch.samples_per_prompt)
            joined = ray_cluster.get(joined)
            if replicas == 1:
                assert calls == [(0, calls[0][1])]  # whole, replica (step + b) % 1
            else:
                assert [r for r, _ in calls] == list(range(replicas))
                sizes = [len(ray_cluster.get(c).rewards or ()) or len(ray_cluster.get(c).preferences) for _, c in calls]
                rollouts = [4, 4] if replicas == 2 else [4, 2, 2]  # whole groups of 2, the first part larger
                assert sizes == (rollouts if spec is rule else [n // 2 for n in rollouts])  # one pair per group
            assert joined.rewards == whole.rewards
            assert joined.preferences == whole.preferences
            assert (joined.failed, joined.unjudged) == (whole.failed, whole.unjudged) == (0, ())
            assert (spec is rule) == (joined.rewards is not None)
        finally:
            for actor in actors:
                ray_cluster.kill(actor)
    assert groups == 4
