"""Validation tests for protocols/judges.py: judge specs and the manifest, good and bad input."""

import math

import pytest
from pydantic import BaseModel, ValidationError

from protocols.judges import (
    HttpJudgeSpec,
    JudgeManifest,
    PairwiseJudgeSpec,
    RewardModelJudgeSpec,
    RuleJudgeSpec,
    SelfJudgeSpec,
)
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
        (
            JudgeManifest,
            dict(judges=(rule(), reward_model(batch_size=0))),
            ("judges", 1, "reward_model", "batch_size"),
            "greater_than_equal",
        ),
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
    manifest = JudgeManifest.model_validate(
        {
            "judges": [rule(weight=2.0), reward_model(replicas=2, num_gpus=0.5)],
            "eval": reward_model(name="eval-rm"),
        }
    )
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


# --------------------------------------------------------------------------- pairwise-style specs


def http(**overrides) -> dict:
    return dict(name="api", kind="http", base_url="http://127.0.0.1:8000/v1", model="judge") | overrides


PAIRWISE_KINDS = [
    (PairwiseJudgeSpec, lambda **o: dict(name="pw", kind="pairwise", path="builtin:policy") | o),
    (SelfJudgeSpec, lambda **o: dict(name="me", kind="self") | o),
    (HttpJudgeSpec, http),
]


@pytest.mark.parametrize(("model", "fields"), PAIRWISE_KINDS, ids=[m.__name__ for m, _ in PAIRWISE_KINDS])
def test_pairwise_templates_need_every_placeholder_and_two_distinct_choices(model, fields):
    spec = model(**fields(template="Q {prompt} / {first} / {second}?", choices=("X", "Y"), comparisons="adjacent"))
    assert (spec.choices, spec.comparisons) == (("X", "Y"), "adjacent")
    for template, missing in [
        ("Q {prompt} / {first}", "['{second}']"),
        ("{first} {second}", "['{prompt}']"),
        ("Q {prompt} / {a} / {b}", "['{first}', '{second}']"),
    ]:
        with pytest.raises(ValidationError) as excinfo:
            model(**fields(template=template))
        error = only_error(excinfo)
        assert error["loc"] == ("template",) and f"template lacks the placeholders {missing}" in error["msg"]
    for choices in [("A", "A"), ("A", ""), ("", "B")]:
        with pytest.raises(ValidationError) as excinfo:
            model(**fields(choices=choices))
        error = only_error(excinfo)
        assert error["loc"] == ("choices",) and "choices must be two different non-empty strings" in error["msg"]
    with pytest.raises(ValidationError) as excinfo:
        model(**fields(comparisons="ring"))
    assert only_error(excinfo)["loc"] == ("comparisons",)


@pytest.mark.parametrize(
    ("fields", "loc", "kind"),
    [
        (http(base_url="127.0.0.1:8000/v1"), ("base_url",), "string_pattern_mismatch"),  # no scheme
        (http(base_url="ftp://host/v1"), ("base_url",), "string_pattern_mismatch"),
        (http(base_url="file:///etc/passwd"), ("base_url",), "string_pattern_mismatch"),
        (http(model=""), ("model",), "string_too_short"),
        (http(top_logprobs=-1), ("top_logprobs",), "greater_than_equal"),
        (http(top_logprobs=21), ("top_logprobs",), "less_than_equal"),  # vLLM's and OpenAI's limit is 20
        (http(api_key_env="sk-live-abc123"), ("api_key_env",), "string_pattern_mismatch"),  # a key pasted by mistake
        (http(api_key_env="MY KEY"), ("api_key_env",), "string_pattern_mismatch"),
        (http(max_concurrency=0), ("max_concurrency",), "greater_than_equal"),
        (http(timeout_s=0.0), ("timeout_s",), "greater_than"),
        (http(retries=-1), ("retries",), "greater_than_equal"),
    ],
)
def test_http_spec_fields(fields, loc, kind):
    with pytest.raises(ValidationError) as excinfo:
        HttpJudgeSpec(**fields)
    error = only_error(excinfo)
    assert (error["loc"], error["type"]) == (loc, kind)


def test_http_spec_accepts_what_hosted_apis_need():
    spec = HttpJudgeSpec(**http(base_url="https://api.example.com/v1", api_key_env="JUDGE_API_KEY", top_logprobs=0))
    assert (spec.base_url, spec.api_key_env, spec.top_logprobs) == ("https://api.example.com/v1", "JUDGE_API_KEY", 0)
    assert HttpJudgeSpec(**http(top_logprobs=20)).top_logprobs == 20 and HttpJudgeSpec(**http()).top_logprobs == 20
