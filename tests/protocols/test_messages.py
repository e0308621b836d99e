"""Validation tests for protocols/messages.py: every model with good and bad input."""

import math

import pytest
from pydantic import BaseModel, ValidationError

from protocols.messages import EvalResult, LearnerStepResult, SyncProbe, SyncReport, WeightVersion, WinRate
from tests.protocols.protocol_checks import assert_frozen_round_trip_forbids_extras


def probe() -> dict:
    return dict(token_ids=((1, 2, 3), (4, 5)), logprobs=((-0.5, -1.0), (-2.0,)))


def win_rate(**overrides) -> dict:
    return dict(win_rate=0.6, ci_low=0.5, ci_high=0.7, num_prompts=64, num_comparisons=256) | overrides


def weight_version(**overrides) -> dict:
    return dict(version=3, step=2, num_tensors=10, num_bytes=4096, probe=SyncProbe(**probe())) | overrides


def eval_result(**overrides) -> dict:
    return (
        dict(
            step=10,
            judge="ground-truth",
            vs_start=WinRate(**win_rate()),
            mean_reward=0.4,
            start_mean_reward=0.1,
            mean_response_tokens=12.5,
            start_mean_response_tokens=20.0,
        )
        | overrides
    )


def step_result(**overrides) -> dict:
    return dict(step=0, policy_version=1, trained_on_version=0, metrics={"learner/mnpo/loss": 0.5}) | overrides


VALID = [
    (SyncProbe, probe),
    (WeightVersion, weight_version),
    (SyncReport, lambda: dict(worker="rollout-0", version=3, seconds=0.25, max_abs_logprob_diff=1e-5)),
    (LearnerStepResult, step_result),
    (WinRate, win_rate),
    (EvalResult, eval_result),
]


@pytest.mark.parametrize(("model", "fields"), VALID, ids=[m.__name__ for m, _ in VALID])
def test_valid_input_builds_a_frozen_model_that_forbids_extras(model: type[BaseModel], fields):
    assert_frozen_round_trip_forbids_extras(model, fields())


@pytest.mark.parametrize(
    ("model", "fields", "loc", "kind"),
    [
        (SyncProbe, dict(token_ids=(), logprobs=()), ("token_ids",), "too_short"),
        (SyncProbe, dict(token_ids=((1, 2),), logprobs=(("x",),)), ("logprobs", 0, 0), "float_parsing"),
        (WeightVersion, weight_version(version=-1), ("version",), "greater_than_equal"),
        (WeightVersion, weight_version(step=-1), ("step",), "greater_than_equal"),
        (WeightVersion, weight_version(num_tensors=0), ("num_tensors",), "greater_than_equal"),
        (WeightVersion, weight_version(num_bytes=0), ("num_bytes",), "greater_than_equal"),
        (WeightVersion, weight_version(probe=dict(token_ids=((1, 2),))), ("probe", "logprobs"), "missing"),
        (SyncReport, dict(worker="w", version=-1, seconds=0.0, max_abs_logprob_diff=0.0), ("version",), "greater_than_equal"),
        (SyncReport, dict(worker="w", version=0, seconds=-1.0, max_abs_logprob_diff=0.0), ("seconds",), "greater_than_equal"),
        (
            SyncReport,
            dict(worker="w", version=0, seconds=0.0, max_abs_logprob_diff=-1e-9),
            ("max_abs_logprob_diff",),
            "greater_than_equal",
        ),
        (LearnerStepResult, step_result(step=-1), ("step",), "greater_than_equal"),
        (LearnerStepResult, step_result(policy_version=0), ("policy_version",), "greater_than_equal"),
        (LearnerStepResult, step_result(trained_on_version=-1), ("trained_on_version",), "greater_than_equal"),
        (LearnerStepResult, step_result(metrics={"learner/x": "high"}), ("metrics", "learner/x"), "float_parsing"),
        (WinRate, win_rate(win_rate=1.2, ci_high=1.0), ("win_rate",), "less_than_equal"),
        (WinRate, win_rate(ci_low=-0.1), ("ci_low",), "greater_than_equal"),
        (WinRate, win_rate(ci_high=1.1), ("ci_high",), "less_than_equal"),
        (WinRate, win_rate(num_prompts=0), ("num_prompts",), "greater_than_equal"),
        (WinRate, win_rate(num_comparisons=0), ("num_comparisons",), "greater_than_equal"),
        (EvalResult, eval_result(step=-1), ("step",), "greater_than_equal"),
        (EvalResult, eval_result(vs_start=win_rate(num_prompts=0)), ("vs_start", "num_prompts"), "greater_than_equal"),
        (EvalResult, eval_result(mean_response_tokens=-1.0), ("mean_response_tokens",), "greater_than_equal"),
        (EvalResult, eval_result(start_mean_response_tokens=-1.0), ("start_mean_response_tokens",), "greater_than_equal"),
    ],
)
def test_field_errors_name_the_field(model, fields, loc, kind):
    with pytest.raises(ValidationError) as excinfo:
        model(**fields)
    error = excinfo.value.errors()[0]
    assert (error["loc"], error["type"]) == (loc, kind)


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (SyncProbe, dict(token_ids=((1, 2),), logprobs=((-1.0,), (-1.0,))), "one entry per probe sequence"),
        (SyncProbe, dict(token_ids=((1, 2), (3,)), logprobs=((-1.0,), ())), r"probe 1: need >= 2 tokens"),
        (SyncProbe, dict(token_ids=((1, 2, 3),), logprobs=((-1.0,),)), r"probe 0: .*len\(logprobs\) == len\(token_ids\) - 1"),
        (LearnerStepResult, step_result(metrics={"loss": 0.5}), "metric 'loss' must be prefixed 'learner/'"),
        (LearnerStepResult, step_result(metrics={"rollout/x": 0.5}), "metric 'rollout/x' must be prefixed 'learner/'"),
        (LearnerStepResult, step_result(metrics={"learner/x": math.nan}), "metric 'learner/x' is not finite: nan"),
        (LearnerStepResult, step_result(metrics={"learner/x": -math.inf}), "metric 'learner/x' is not finite: -inf"),
        (WinRate, win_rate(win_rate=0.8), "need ci_low <= win_rate <= ci_high, got 0.5, 0.8, 0.7"),
        (WinRate, win_rate(win_rate=0.4), "need ci_low <= win_rate <= ci_high, got 0.5, 0.4, 0.7"),
    ],
)
def test_cross_field_errors_say_what_is_wrong(model, fields, message):
    with pytest.raises(ValidationError, match=message):
        model(**fields)


def test_optional_fields_and_edges():
    assert EvalResult(**eval_result(mean_reward=None, start_mean_reward=None)).mean_reward is None
    assert LearnerStepResult(**step_result(metrics={})).metrics == {}
    assert WinRate(**win_rate(win_rate=0.5, ci_low=0.5, ci_high=0.5)).win_rate == 0.5  # a degenerate CI is fine
    nested = WeightVersion(**weight_version(probe=probe()))  # a plain dict validates into SyncProbe
    assert isinstance(nested.probe, SyncProbe) and nested.probe.token_ids[1] == (4, 5)


def test_gap_learner_step_trains_on_an_older_version():
    with pytest.raises(ValidationError, match="trained_on_version"):
        LearnerStepResult(**step_result(policy_version=2, trained_on_version=2))
