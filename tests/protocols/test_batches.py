"""Validation tests for protocols/batches.py: every model with good and bad input."""

import math

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from protocols.batches import (
    BatchSummary,
    JudgedBatch,
    Judgement,
    PairPreference,
    Prompt,
    PromptBatch,
    Rollout,
    RolloutBatch,
    SampleExample,
    summarize,
)
from tests.protocols.protocol_checks import assert_frozen_round_trip_forbids_extras, only_error


def make_rollout(prompt_id="p0", version=2, **overrides) -> dict:
    fields = dict(
        prompt_id=prompt_id,
        prompt_text="say hi",
        prompt_token_ids=(7, 8),
        response_text="hi",
        response_token_ids=(9, 2),
        logprobs=(-0.25, -1e-3),
        policy_version=version,
        finish_reason="stop",
    )
    return fields | overrides


def make_batch(num_prompts=2, k=2, version=2) -> dict:
    rollouts = tuple(Rollout(**make_rollout(f"p{p}", version)) for p in range(num_prompts) for _ in range(k))
    return dict(step=1, policy_version=version, samples_per_prompt=k, rollouts=rollouts)


def make_judged(**judgement) -> dict:
    return dict(batch=RolloutBatch(**make_batch()), judgements=(Judgement(judge="rm", **judgement),))


VALID = [
    (Prompt, lambda: dict(prompt_id="q1", text="What is 2 + 2?")),
    (PromptBatch, lambda: dict(step=0, prompts=(Prompt(prompt_id="q1", text="t"),), samples_per_prompt=4)),
    (Rollout, make_rollout),
    (RolloutBatch, make_batch),
    (PairPreference, lambda: dict(first=0, second=1, probability=0.7)),
    (Judgement, lambda: dict(judge="rm", rewards=(1.0, 0.0, 0.0, 1.0))),
    (JudgedBatch, lambda: make_judged(rewards=(1.0, 0.0, 0.0, 1.0))),
]


@pytest.mark.parametrize(("model", "fields"), VALID, ids=[m.__name__ for m, _ in VALID])
def test_valid_input_builds_a_frozen_model_that_forbids_extras(model: type[BaseModel], fields):
    assert_frozen_round_trip_forbids_extras(model, fields())


@pytest.mark.parametrize(
    ("model", "fields", "loc", "kind"),
    [
        (Prompt, dict(prompt_id="", text="t"), ("prompt_id",), "string_too_short"),
        (Prompt, dict(prompt_id="q", text=""), ("text",), "string_too_short"),
        (Prompt, dict(prompt_id="q"), ("text",), "missing"),
        (
            PromptBatch,
            dict(step=-1, prompts=(dict(prompt_id="q", text="t"),), samples_per_prompt=1),
            ("step",),
            "greater_than_equal",
        ),
        (PromptBatch, dict(step=0, prompts=(), samples_per_prompt=1), ("prompts",), "too_short"),
        (
            PromptBatch,
            dict(step=0, prompts=(dict(prompt_id="q", text="t"),), samples_per_prompt=0),
            ("samples_per_prompt",),
            "greater_than_equal",
        ),
        (
            PromptBatch,
            dict(step=0, prompts=(dict(prompt_id="q", text=""),), samples_per_prompt=1),
            ("prompts", 0, "text"),
            "string_too_short",
        ),
        (Rollout, make_rollout(prompt_id=""), ("prompt_id",), "string_too_short"),
        (Rollout, make_rollout(prompt_token_ids=()), ("prompt_token_ids",), "value_error"),
        (Rollout, make_rollout(response_token_ids=(9, "x")), ("response_token_ids",), "value_error"),
        (Rollout, make_rollout(policy_version=-1), ("policy_version",), "greater_than_equal"),
        (Rollout, make_rollout(finish_reason="eos"), ("finish_reason",), "literal_error"),
        (PairPreference, dict(first=-1, second=1, probability=0.5), ("first",), "greater_than_equal"),
        (PairPreference, dict(first=0, second=1, probability=1.5), ("probability",), "less_than_equal"),
        (PairPreference, dict(first=0, second=1, probability=-0.1), ("probability",), "greater_than_equal"),
        (Judgement, dict(judge="", rewards=(1.0,)), ("judge",), "string_too_short"),
        (
            Judgement,
            dict(judge="rm", preferences=(dict(first=0, second=1, probability=2.0),)),
            ("preferences", 0, "probability"),
            "less_than_equal",
        ),
        (RolloutBatch, dict(make_batch(), step=-1), ("step",), "greater_than_equal"),
        (RolloutBatch, dict(make_batch(), rollouts=()), ("rollouts",), "too_short"),
        (JudgedBatch, dict(make_judged(rewards=(1.0, 0.0, 0.0, 1.0)), judgements=()), ("judgements",), "too_short"),
    ],
)
def test_field_errors_name_the_field(model, fields, loc, kind):
    with pytest.raises(ValidationError) as excinfo:
        model(**fields)
    error = excinfo.value.errors()[0]  # a bad nested item can add a follow-up error on its container
    assert (error["loc"], error["type"]) == (loc, kind)


def test_nan_probability_is_rejected():
    with pytest.raises(ValidationError) as excinfo:
        PairPreference(first=0, second=1, probability=math.nan)
    assert only_error(excinfo)["loc"] == ("probability",)


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (Rollout, make_rollout(logprobs=(-0.5,)), "logprobs has 1 entries but response_token_ids has 2"),
        (Rollout, make_rollout(logprobs=(-0.5, 0.3)), r"logprobs must be <= 0 and not NaN, got \[0.3\]"),
        (Rollout, make_rollout(logprobs=(-0.5, math.nan)), "logprobs must be <= 0 and not NaN"),
        (
            RolloutBatch,
            dict(make_batch(num_prompts=1, k=3), samples_per_prompt=2),
            "3 rollouts is not a multiple of samples_per_prompt=2",
        ),
        (RolloutBatch, dict(make_batch(num_prompts=2, k=2), samples_per_prompt=4), r"rollouts 0..3 mix prompts \['p0', 'p1'\]"),
        (RolloutBatch, dict(make_batch(), policy_version=5), r"rollouts carry policy_version \[2\], batch says 5"),
        (PairPreference, dict(first=3, second=3, probability=0.5), r"cannot be compared with itself \(index 3\)"),
        (Judgement, dict(judge="rm"), "a judgement needs rewards, preferences or both"),
        (Judgement, dict(judge="rm", rewards=(1.0, math.inf)), "rewards must be finite numbers"),
        (Judgement, dict(judge="rm", rewards=(math.nan,)), "rewards must be finite numbers"),
        (JudgedBatch, make_judged(rewards=(1.0, 0.0, 0.0)), "judge 'rm' gave 3 rewards for 4 rollouts"),
        (
            JudgedBatch,
            make_judged(preferences=(PairPreference(first=2, second=4, probability=0.5),)),
            "judge 'rm' compares index 4 of 4 rollouts",
        ),
        (
            JudgedBatch,
            make_judged(preferences=(PairPreference(first=1, second=2, probability=0.5),)),
            "judge 'rm' compares rollouts 1 and 2 of different prompts",
        ),
    ],
)
def test_cross_field_errors_say_what_is_wrong(model, fields, message):
    with pytest.raises(ValidationError, match=message):
        model(**fields)


def test_rollout_edge_cases_that_are_allowed():
    # rounding may give a logprob a hair above 0; an empty response (length cap 0 / instant EOS) is legal
    assert Rollout(**make_rollout(logprobs=(-0.5, 5e-7))).logprobs[1] == np.float32(5e-7)
    empty = Rollout(**make_rollout(response_token_ids=(), logprobs=(), finish_reason="length"))
    assert empty.response_token_ids.shape == (0,) and empty.response_token_ids.dtype == np.int32
    # lists (JSON) and tuples become read-only int32 / float32 arrays
    rollout = Rollout(**make_rollout(prompt_token_ids=[7, 8]))
    assert rollout.prompt_token_ids.tolist() == [7, 8] and rollout.prompt_token_ids.dtype == np.int32
    assert rollout.logprobs.dtype == np.float32 and not rollout.logprobs.flags.writeable


def test_rollout_batch_groups_are_contiguous_per_prompt():
    batch = RolloutBatch(**make_batch(num_prompts=3, k=2))
    groups = batch.groups()
    assert [[r.prompt_id for r in g] for g in groups] == [["p0", "p0"], ["p1", "p1"], ["p2", "p2"]]
    assert all(len(g) == 2 for g in groups)


def test_judgement_with_both_rewards_and_preferences():
    both = Judgement(judge="rm", rewards=(0.0, 1.0, 0.0, 1.0), preferences=(PairPreference(first=1, second=0, probability=0.9),))
    judged = JudgedBatch(batch=RolloutBatch(**make_batch()), judgements=(both,))
    assert judged.judgements[0].preferences[0].probability == 0.9


def test_gap_judged_batch_rejects_duplicate_judge_names():
    batch = RolloutBatch(**make_batch())
    rewards = (1.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValidationError, match="rm"):
        JudgedBatch(batch=batch, judgements=(Judgement(judge="rm", rewards=rewards), Judgement(judge="rm", rewards=rewards)))


# --------------------------------------------------------------------------- judge replicas sharing a batch


def test_part_bounds_cut_whole_groups_the_first_parts_larger():
    from protocols import part_bounds

    assert [part_bounds(7, i, 3) for i in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [part_bounds(4, i, 2) for i in range(2)] == [(0, 2), (2, 4)]
    assert [part_bounds(2, i, 2) for i in range(2)] == [(0, 1), (1, 2)]
    for groups, index, parts in ((2, 0, 3), (4, 2, 2), (4, -1, 2)):
        with pytest.raises(ValueError, match=f"part {index} of {parts}"):
            part_bounds(groups, index, parts)


def test_a_batch_part_holds_whole_prompt_groups():
    batch = RolloutBatch(**{**make_batch(num_prompts=5, k=2, version=0), "step": 3})
    parts = [batch.part(i, 2) for i in range(2)]
    assert [[r.prompt_id for r in p.rollouts] for p in parts] == [["p0", "p0", "p1", "p1", "p2", "p2"], ["p3", "p3", "p4", "p4"]]
    assert all(p.step == 3 and p.samples_per_prompt == 2 for p in parts)
    assert parts[0].rollouts + parts[1].rollouts == batch.rollouts


def test_merged_judgements_index_the_whole_batch():
    from protocols import merge_judgements

    first = Judgement(
        judge="rm",
        rewards=(0.1, math.nan, 0.3, 0.4),
        preferences=(PairPreference(first=0, second=1, probability=0.7), PairPreference(first=2, second=3, probability=0.2)),
        seconds=0.5,
        failed=1,
        unjudged=(1,),
        failure="rollout 1: returned NaN",
    )
    second = Judgement(
        judge="rm",
        rewards=(0.5, 0.6),
        preferences=(PairPreference(first=1, second=0, probability=0.9),),
        seconds=0.75,
    )
    merged = merge_judgements([first, second], [4, 2])
    assert merged.rewards[:1] == (0.1,) and math.isnan(merged.rewards[1]) and merged.rewards[2:] == (0.3, 0.4, 0.5, 0.6)
    assert [(p.first, p.second, p.probability) for p in merged.preferences] == [(0, 1, 0.7), (2, 3, 0.2), (5, 4, 0.9)]
    assert (merged.seconds, merged.failed, merged.unjudged) == (0.75, 1, (1,))
    assert merged.failure == "part 0 (rollouts from 0): rollout 1: returned NaN"
    late = second.model_copy(update={"failed": 1, "unjudged": (0,), "failure": "rollout 0: x"})
    assert merge_judgements([first, late], [4, 2]).unjudged == (1, 4)
    with pytest.raises(ValueError, match="disagree"):
        merge_judgements([first, Judgement(judge="rm", rewards=(0.5, 0.6))], [4, 2])
    with pytest.raises(ValueError, match="2 part judgements for 1 parts"):
        merge_judgements([first, second], [6])


def test_a_summary_holds_what_the_driver_logs_and_nothing_of_the_tokens():
    def rollout(prompt_id: str, tokens: int, finish: str) -> Rollout:
        return Rollout(
            prompt_id=prompt_id,
            prompt_text=f"q {prompt_id}",
            prompt_token_ids=(1, 2),
            response_text=f"a{tokens}",
            response_token_ids=tuple(range(3, 3 + tokens)),
            logprobs=(-0.1,) * tokens,
            policy_version=4,
            finish_reason=finish,
        )

    batch = RolloutBatch(
        step=2,
        policy_version=4,
        samples_per_prompt=2,
        rollouts=(rollout("p", 3, "stop"), rollout("p", 5, "length"), rollout("q", 0, "stop"), rollout("q", 2, "length")),
    )
    summary = summarize(batch, examples=3)
    assert summary == BatchSummary(
        policy_version=4,
        samples_per_prompt=2,
        rollouts=4,
        response_tokens=10,
        truncated=2,
        prompt_ids=("p", "q"),
        examples=(
            SampleExample(prompt="q p", response="a3"),
            SampleExample(prompt="q p", response="a5"),
            SampleExample(prompt="q q", response="a0"),
        ),
    )
    assert len(summary.model_dump_json()) < len(batch.model_dump_json())
