"""Validation tests for protocols/judges.py: judge specs and the manifest, good and bad input."""

import math

import pytest
from pydantic import BaseModel, ValidationError

from protocols.judges import JudgeManifest, RewardModelJudgeSpec, RuleJudgeSpec
from tests.protocols.protocol_checks import assert_frozen_round_trip_forbids_extras, only_error


def rule(**overrides) -> dict:
    return dict(name="ground-truth", kind="rule", function="rollout.tasks.wordlist:ground_truth") | overrides


def reward_model(**overrides) -> dict:
    return dict(name="rm", kind="reward_model", path="builtin:reward-model") | overrides



VALID = [
    (RuleJudgeSpec, rule),
    (RewardModelJudgeSpec, reward_model),
    (JudgeManifest, lambda: dict(judges=(rule(), reward_model()))),
]


@pytest.mark.parametrize(("model", "fields"), VALID, ids=[m.__name__ for m, _ in VALID])
def test_valid_input_builds_a_frozen_model_that_forbids_extras(model: type[BaseModel], fields):
    assert_frozen_round_trip_forbids_extras(model, fields())


def test_defaults():
    spec = RuleJudgeSpec(**rule())
    assert (spec.weight, spec.replicas, spec.num_cpus, spec.num_gpus, spec.temperature) == (1.0, 1, 0.0, 0.0, 1.0)
    assert RewardModelJudgeSpec(**reward_model()).batch_size == 64
    assert JudgeManifest(judges=(rule(),)).eval is None


@pytest.mark.parametrize(
    ("model", "fields", "loc", "kind"),
    [
        (RuleJudgeSpec, rule(name="Ground_Truth"), ("name",), "string_pattern_mismatch"),
        (RuleJudgeSpec, rule(name="-leading-dash"), ("name",), "string_pattern_mismatch"),
        (RuleJudgeSpec, rule(name="x" * 42), ("name",), "string_pattern_mismatch"),
        (RuleJudgeSpec, rule(weight=0.0), ("weight",), "greater_than"),
        (RuleJudgeSpec, rule(replicas=0), ("replicas",), "greater_than_equal"),
        (RuleJudgeSpec, rule(num_cpus=-1.0), ("num_cpus",), "greater_than_equal"),
        (RuleJudgeSpec, rule(num_gpus=-1.0), ("num_gpus",), "greater_than_equal"),
        (RuleJudgeSpec, rule(temperature=-0.5), ("temperature",), "greater_than_equal"),
        (RuleJudgeSpec, rule(kind="reward_model"), ("kind",), "literal_error"),
        (RuleJudgeSpec, rule(path="x"), ("path",), "extra_forbidden"),  # a field of another kind
        (RewardModelJudgeSpec, reward_model(batch_size=0), ("batch_size",), "greater_than_equal"),
        (RewardModelJudgeSpec, dict(name="rm", kind="reward_model"), ("path",), "missing"),
        (JudgeManifest, dict(judges=()), ("judges",), "too_short"),
        (JudgeManifest, dict(judges=(rule(kind="oracle"),)), ("judges", 0), "union_tag_invalid"),
        (JudgeManifest, dict(judges=({"name": "x", "function": "a:b"},)), ("judges", 0), "union_tag_not_found"),
        (JudgeManifest, dict(judges=(rule(), reward_model(batch_size=0))), ("judges", 1, "reward_model", "batch_size"), "greater_than_equal"),
        (JudgeManifest, dict(judges=(rule(functon="a:b"),)), ("judges", 0, "rule", "functon"), "extra_forbidden"),
        (JudgeManifest, dict(judges=(rule(),), eval=rule(weight=-1.0)), ("eval", "rule", "weight"), "greater_than"),
    ],
)
def test_field_errors_name_the_field(model, fields, loc, kind):
    with pytest.raises(ValidationError) as excinfo:
        model(**fields)
    error = excinfo.value.errors()[0]  # a bad nested item can add a follow-up error on its container
    assert (error["loc"], error["type"]) == (loc, kind)


def test_unknown_kind_lists_the_valid_kinds():
    with pytest.raises(ValidationError) as excinfo:
        JudgeManifest(judges=(rule(kind="oracle"),))
    message = excinfo.value.errors()[0]["msg"]
    for kind in ("rule", "reward_model", "pairwise", "self", "http", "population"):
        assert f"'{kind}'" in message


@pytest.mark.parametrize("function", ["rollout.tasks.wordlist", "module:", ":function", "a b:c", "1mod:f", "mod:f.g"])
def test_rule_function_must_be_an_import_path(function):
    with pytest.raises(ValidationError) as excinfo:
        RuleJudgeSpec(**rule(function=function))
    error = only_error(excinfo)
    assert error["loc"] == ("function",)
    assert f"{function!r} is not of the form 'package.module:function'" in error["msg"]


def test_manifest_picks_the_spec_class_by_kind():
    manifest = JudgeManifest.model_validate({
        "judges": [rule(weight=2.0), reward_model(replicas=2, num_gpus=0.5)],
        "eval": reward_model(name="eval-rm"),
    })
    assert [type(j) for j in manifest.judges] == [RuleJudgeSpec, RewardModelJudgeSpec]
    assert manifest.judges[0].weight == 2.0 and manifest.judges[1].replicas == 2
    assert isinstance(manifest.eval, RewardModelJudgeSpec) and manifest.eval.name == "eval-rm"
    assert JudgeManifest.model_validate(manifest.model_dump()) == manifest


def test_manifest_rejects_duplicate_names():
    with pytest.raises(ValidationError, match=r"duplicate judge names \['rm'\]"):
        JudgeManifest(judges=(reward_model(), rule(name="rm"), rule(name="other")))


def test_gap_judge_weight_must_be_finite():
    with pytest.raises(ValidationError, match="weight"):
        RuleJudgeSpec(**rule(weight=math.inf))
