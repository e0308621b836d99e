"""Judge outputs checked at the judge actor's boundary (rollout/judges/base.py `collect_verdicts`
and `judgement`): a judge that raises, or answers None, NaN, infinities, non-numbers, a list of the
wrong length or probabilities outside [0, 1], is an error naming the judge, its kind, the step and
what was wrong (on_failure: fail), or leaves exactly those verdicts missing, marked in the
Judgement (on_failure: skip). No model, no Ray: fakes stand in for the model kinds' outputs.
"""

from __future__ import annotations

import math

import pytest

from protocols import (
    JudgedBatch,
    PairwiseJudgeSpec,
    PopulationJudgeSpec,
    RewardModelJudgeSpec,
    RuleJudgeSpec,
)
from rollout.judges import build_judge
from rollout.judges.base import (
    JudgeOutputError,
    NoVerdict,
    both_orders,
    collect_verdicts,
    judge_rollouts,
    judgement,
)
from tests.actors.test_judge_actor import find_prompt, make_batch

FAULTY = "tests.rollout.faulty_rules"


@pytest.fixture(scope="module")
def batch():
    fruits, animals = find_prompt("list 3 fruits:"), find_prompt("name 2 animals:")
    return make_batch(
        [(fruits, " apple pear plum"), (fruits, " apple cat"), (animals, " cat dog"), (animals, " dog")], samples_per_prompt=2
    )


def rule(function: str, **fields) -> RuleJudgeSpec:
    return RuleJudgeSpec(name="faulty", kind="rule", function=f"{FAULTY}:{function}", **fields)


@pytest.mark.parametrize(
    ("function", "what"),
    [
        ("returns_none", "returned None"),
        ("returns_nan", "returned nan"),
        ("returns_inf", "returned inf"),
        ("returns_list", "returned list [1.0, 2.0], not a number"),
        ("returns_text", "returned str '0.5', not a number"),
        ("raises", "raised ZeroDivisionError: the rule divided by zero"),
    ],
)
def test_a_rule_that_gives_no_number_fails_naming_the_judge_kind_step_and_cause(batch, function, what):
    spec = rule(function)
    with pytest.raises(JudgeOutputError) as info:
        judgement(spec, collect_verdicts(build_judge(spec), batch), step=7)
    message = str(info.value)
    assert message.startswith(f"judge 'faulty' (kind rule) at step 7: no verdict for any of its 4: {what}"), message
    assert "on_failure: fail" in message
    if function == "raises":  # the user's traceback stays reachable
        assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_only_the_rollouts_without_a_verdict_are_named(batch):
    spec = rule("nan_for_cat")
    with pytest.raises(JudgeOutputError, match=r"at step 3: no verdict for 2 of 4: rollout 1, rollout 2: returned nan"):
        judgement(spec, collect_verdicts(build_judge(spec), batch), step=3)
    with pytest.raises(JudgeOutputError, match="judge 'faulty': no verdict for 2 of 4"):
        judge_rollouts(build_judge(spec), batch)  # the strict helper for callers without a policy


def test_skip_marks_exactly_the_missing_verdicts_and_they_cannot_reach_training(batch):
    spec = rule("nan_for_cat", on_failure="skip", max_skipped_fraction=0.5)
    out = judgement(spec, collect_verdicts(build_judge(spec), batch), step=3)
    assert out.failed == 2 and out.asked == 4 and out.unjudged == (1, 2)
    assert math.isnan(out.rewards[1]) and math.isnan(out.rewards[2])
    assert out.rewards[0] == pytest.approx(1.0) and out.rewards[3] > 0.0  # the others are judged as usual
    assert "rollout 1, rollout 2: returned nan" in out.failure
    with pytest.raises(ValueError, match=r"judge 'faulty' gave no verdict for rollouts \[1, 2\]"):
        JudgedBatch(batch=batch, judgements=(out,))  # what the learner builds: refused


class Pointwise:
    """A stand-in for a model judge's output (reward_model): whatever `out` says."""

    def __init__(self, out):
        self.name, self.out = "model", out

    def score(self, prompts, responses):
        return self.out(len(prompts))


class Pairwise:
    """A stand-in for a pairwise / self / http judge's output."""

    def __init__(self, out):
        self.name, self.out = "model", out

    def compare(self, prompts, first, second):
        return self.out(len(prompts))


REWARD_MODEL = RewardModelJudgeSpec(name="model", kind="reward_model", path="unused")
PAIRWISE = PairwiseJudgeSpec(name="model", kind="pairwise", path="unused")


@pytest.mark.parametrize(
    ("judge", "spec", "what"),
    [
        (Pointwise(lambda n: [math.nan] + [0.5] * (n - 1)), REWARD_MODEL, "no verdict for 1 of 4: rollout 0: returned nan"),
        (Pointwise(lambda n: [0.5] * (n - 1)), REWARD_MODEL, "no verdict for any of its 4: returned 3 rewards for 4 rollouts"),
        (
            Pointwise(lambda n: None),
            REWARD_MODEL,
            "no verdict for any of its 4: returned NoneType None instead of a list of 4 rewards",
        ),
        (Pairwise(lambda n: [0.5] * (n + 1)), PAIRWISE, "no verdict for any of its 2: returned 3 probabilities for 2 pairs"),
        (
            Pairwise(lambda n: [1.5] + [0.5] * (n - 1)),
            PAIRWISE,
            r"no verdict for 1 of 2: pair \(0, 1\): returned probability 1.5, outside \[0, 1\]",
        ),
        (Pairwise(lambda n: [None] * n), PAIRWISE, "no verdict for any of its 2: returned None"),
        (Pairwise(lambda n: 1 / 0), PAIRWISE, "no verdict for any of its 2: raised ZeroDivisionError: division by zero"),
    ],
)
def test_every_kind_of_output_is_checked(batch, judge, spec, what):
    kind = spec.kind
    with pytest.raises(JudgeOutputError, match=rf"^judge 'model' \(kind {kind}\) at step 5: {what}"):
        judgement(spec, collect_verdicts(judge, batch), step=5)
    skipped = judgement(spec.model_copy(update={"on_failure": "skip"}), collect_verdicts(judge, batch), step=5)
    assert skipped.failed >= 1 and skipped.unjudged


def test_a_causal_lm_verdict_that_is_nan_in_either_order_is_no_verdict():
    def one_order(prompts, first, second):  # pairwise / self judges: sigmoid of NaN logits is NaN
        return [math.nan if (a, b) == ("y", "x") else 0.75 for a, b in zip(first, second)]

    p = both_orders(one_order, ["q", "q"], ["a", "x"], ["b", "y"])
    assert p[0] == pytest.approx(0.5)  # 0.5 * (0.75 + 1 - 0.75)
    assert p[1] == NoVerdict("returned nan")  # never averaged into a number


def test_a_population_member_without_a_verdict_is_named(batch):
    members = (
        {"name": "gt", "kind": "rule", "function": "rollout.tasks.wordlist:ground_truth"},
        {"name": "catless", "kind": "rule", "function": f"{FAULTY}:nan_for_cat"},
    )
    spec = PopulationJudgeSpec(
        name="crowd", kind="population", mode="vote", members=members, on_failure="skip", max_skipped_fraction=0.9
    )
    out = judgement(spec, collect_verdicts(build_judge(spec), batch), step=2)
    # pairs (0, 1) and (2, 3) each hold a response with "cat": no vote can be counted for them
    assert out.failed == 2 and out.preferences == () and out.unjudged == (0, 1, 2, 3)
    assert "member 'catless': returned nan" in out.failure
    with pytest.raises(JudgeOutputError, match=r"judge 'crowd' \(kind population\) at step 2: .*member 'catless'"):
        judgement(spec.model_copy(update={"on_failure": "fail"}), collect_verdicts(build_judge(spec), batch), step=2)


def test_the_manifest_schema_of_the_failure_policy():
    assert rule("returns_nan").on_failure == "fail"  # the default: a missing verdict stops the run
    assert rule("returns_nan", on_failure="skip").max_skipped_fraction == 0.1
    with pytest.raises(ValueError, match="max_skipped_fraction"):
        rule("returns_nan", on_failure="skip", max_skipped_fraction=1.0)  # < 1: a judge must give some verdicts
    with pytest.raises(ValueError, match="on_failure is the population's"):
        PopulationJudgeSpec(
            name="crowd", kind="population", members=({"name": "m", "kind": "rule", "function": "a.b:c", "on_failure": "skip"},)
        )
    from protocols import JudgeManifest

    with pytest.raises(ValueError, match="eval judge 'faulty' has on_failure 'skip'"):
        JudgeManifest(judges=(rule("returns_nan"),), eval=rule("returns_nan", on_failure="skip"))
