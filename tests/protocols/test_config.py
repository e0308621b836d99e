"""Validation tests for protocols/config.py: every section with good and bad input."""

import math

import pytest
from pydantic import BaseModel, ValidationError

from learner.algorithms import AlgorithmConfigError, algorithm_config
from learner.algorithms.mnpo import MNPOConfig
from protocols.config import BUILTIN_MODEL, EvalConfig, LearnerConfig, ModelConfig, RolloutConfig, RunConfig
from tests.protocols.protocol_checks import assert_frozen_round_trip_forbids_extras, only_error

SECTIONS = [ModelConfig, RolloutConfig, LearnerConfig, MNPOConfig, EvalConfig]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_defaults_are_valid_frozen_and_forbid_extras(section: type[BaseModel]):
    assert_frozen_round_trip_forbids_extras(section, {})


def test_run_config_is_frozen_and_takes_only_mappings_beyond_its_fields():
    config = RunConfig()
    assert RunConfig.model_validate(config.model_dump()) == config
    with pytest.raises(ValidationError) as excinfo:
        config.steps = 3
    assert only_error(excinfo)["type"] == "frozen_instance"
    with pytest.raises(ValidationError, match=r"unknown field 'surprise' \(got 1\)"):
        RunConfig(surprise=1)
    # a mapping is an algorithm section, checked by that algorithm (learner.algorithms.algorithm_config)
    assert RunConfig(surprise={"a": 1}).sections == {"surprise": {"a": 1}}


@pytest.mark.parametrize("section", [*SECTIONS, RunConfig], ids=lambda s: s.__name__)
def test_every_setting_has_a_description(section: type[BaseModel]):
    # leaf settings only: nested sections are documented by their own fields
    undocumented = [
        name
        for name, field in section.model_fields.items()
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)) and not field.description
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    ("section", "fields", "loc", "kind"),
    [
        (ModelConfig, dict(dtype="float16"), ("dtype",), "literal_error"),
        (RolloutConfig, dict(num_workers=0), ("num_workers",), "greater_than_equal"),
        (RolloutConfig, dict(prompts_per_step=0), ("prompts_per_step",), "greater_than_equal"),
        (RolloutConfig, dict(samples_per_prompt=1), ("samples_per_prompt",), "greater_than_equal"),
        (RolloutConfig, dict(temperature=0.0), ("temperature",), "greater_than_equal"),
        (RolloutConfig, dict(temperature=11.0), ("temperature",), "less_than_equal"),
        (RolloutConfig, dict(top_p=0.0), ("top_p",), "greater_than"),
        (RolloutConfig, dict(top_p=1.5), ("top_p",), "less_than_equal"),
        (RolloutConfig, dict(max_response_tokens=0), ("max_response_tokens",), "greater_than_equal"),
        (RolloutConfig, dict(max_model_len=8), ("max_model_len",), "greater_than_equal"),
        (RolloutConfig, dict(kv_cache_gib=0.0), ("kv_cache_gib",), "greater_than"),
        (RolloutConfig, dict(gpu_memory_utilization=1.2), ("gpu_memory_utilization",), "less_than_equal"),
        (RolloutConfig, dict(num_cpus=-1.0), ("num_cpus",), "greater_than_equal"),
        (RolloutConfig, dict(num_gpus=-0.5), ("num_gpus",), "greater_than_equal"),
        (RolloutConfig, dict(sync_tolerance=0.0), ("sync_tolerance",), "greater_than"),
        (RolloutConfig, dict(max_staleness=-1), ("max_staleness",), "greater_than_equal"),
        (LearnerConfig, dict(num_workers=0), ("num_workers",), "greater_than_equal"),
        (LearnerConfig, dict(zero_stage=1), ("zero_stage",), "literal_error"),
        (LearnerConfig, dict(lr=0.0), ("lr",), "greater_than"),
        (LearnerConfig, dict(lr=math.nan), ("lr",), "finite_number"),
        (LearnerConfig, dict(lr=math.inf), ("lr",), "finite_number"),
        (RolloutConfig, dict(temperature=math.inf), ("temperature",), "finite_number"),
        (LearnerConfig, dict(weight_decay=-0.1), ("weight_decay",), "greater_than_equal"),
        (LearnerConfig, dict(betas=(0.9, 0.95, 0.99)), ("betas",), "too_long"),
        (LearnerConfig, dict(warmup_steps=-1), ("warmup_steps",), "greater_than_equal"),
        (LearnerConfig, dict(grad_clip=0.0), ("grad_clip",), "greater_than"),
        (LearnerConfig, dict(micro_batch_size=0), ("micro_batch_size",), "greater_than_equal"),
        (LearnerConfig, dict(master_port=70000), ("master_port",), "less_than_equal"),
        (MNPOConfig, dict(eta=0.0), ("eta",), "greater_than"),
        (MNPOConfig, dict(ratio=1.5), ("ratio",), "less_than_equal"),
        (MNPOConfig, dict(ratio=-0.1), ("ratio",), "greater_than_equal"),
        (MNPOConfig, dict(num_opponents=0), ("num_opponents",), "greater_than_equal"),
        (MNPOConfig, dict(snapshot_every=0), ("snapshot_every",), "greater_than_equal"),
        (MNPOConfig, dict(logprob_reduction="max"), ("logprob_reduction",), "literal_error"),
        (MNPOConfig, dict(opponent_weights=("a", 1.0)), ("opponent_weights", 0), "float_parsing"),
        (EvalConfig, dict(num_prompts=0), ("num_prompts",), "greater_than_equal"),
        (EvalConfig, dict(samples_per_prompt=0), ("samples_per_prompt",), "greater_than_equal"),
        (EvalConfig, dict(temperature=-1.0), ("temperature",), "greater_than_equal"),
        (RunConfig, dict(steps=0), ("steps",), "greater_than_equal"),
        (RunConfig, dict(log_every=0), ("log_every",), "greater_than_equal"),
        (RunConfig, dict(seed="zero"), ("seed",), "int_parsing"),
        (RunConfig, dict(rollout=dict(samples_per_prompt=1)), ("rollout", "samples_per_prompt"), "greater_than_equal"),
        (RunConfig, dict(learner=dict(zero_stage=4)), ("learner", "zero_stage"), "literal_error"),
        (RunConfig, dict(model=dict(dtype="int8")), ("model", "dtype"), "literal_error"),
        (RunConfig, dict(eval=dict(num_prompts=0)), ("eval", "num_prompts"), "greater_than_equal"),
        (RunConfig, dict(rollout=dict(tempreature=0.7)), ("rollout", "tempreature"), "extra_forbidden"),
    ],
)
def test_field_errors_name_the_field(section, fields, loc, kind):
    with pytest.raises(ValidationError) as excinfo:
        section(**fields)
    error = only_error(excinfo)
    assert (error["loc"], error["type"]) == (loc, kind)


def test_mnpo_weight_errors_say_what_is_wrong():
    with pytest.raises(ValidationError, match=r"opponent_weights has 3 entries for num_opponents=2"):
        MNPOConfig(num_opponents=2, opponent_weights=(1.0, 1.0, 1.0))
    with pytest.raises(ValidationError, match=r"opponent_weights must be finite and >= 0"):
        MNPOConfig(num_opponents=2, opponent_weights=(1.0, -1.0))


@pytest.mark.parametrize(
    ("num_opponents", "weights", "expected"),
    [
        (2, None, (0.5, 0.5)),  # unset: uniform
        (2, (0.0, 0.0), (0.5, 0.5)),  # all zero: uniform (as in the reference code)
        (2, (0.25, 0.75), (0.25, 0.75)),  # already normalised
        (2, (1.0, 3.0), (0.25, 0.75)),  # 1 / 4, 3 / 4
        (3, (2.0, 0.0, 2.0), (0.5, 0.0, 0.5)),
        (1, None, (1.0,)),
    ],
)
def test_mnpo_normalised_weights(num_opponents, weights, expected):
    config = MNPOConfig(num_opponents=num_opponents, opponent_weights=weights)
    assert config.normalised_weights() == pytest.approx(expected)
    assert sum(config.normalised_weights()) == pytest.approx(1.0)


def test_run_config_defaults_and_yaml_shaped_input():
    config = RunConfig()
    assert config.algo == "mnpo" and config.model.path == BUILTIN_MODEL
    # a YAML file loads as nested dicts with lists; the result is the same frozen tree
    loaded = RunConfig.model_validate(
        {
            "algo": "mnpo",
            "steps": 3,
            "rollout": {"samples_per_prompt": 5, "temperature": 0.9},
            "learner": {"betas": [0.9, 0.99], "zero_stage": 3},
            "mnpo": {"eta": 0.005, "ratio": 0.85, "num_opponents": 2, "opponent_weights": [0.25, 0.75]},
        }
    )
    assert loaded.rollout.samples_per_prompt == 5 and loaded.rollout.prompts_per_step == RolloutConfig().prompts_per_step
    assert loaded.learner.betas == (0.9, 0.99) and algorithm_config(loaded).opponent_weights == (0.25, 0.75)
    assert RunConfig.model_validate(loaded.model_dump()) == loaded
    # a bad value deep in the algorithm's section names the whole path
    with pytest.raises(AlgorithmConfigError, match=r"field 'mnpo': .*opponent_weights has 1 entries for num_opponents=2"):
        algorithm_config(RunConfig.model_validate({"mnpo": {"num_opponents": 2, "opponent_weights": [1.0]}}))


def test_sections_are_frozen_inside_run_config():
    config = RunConfig()
    with pytest.raises(ValidationError):
        config.rollout.temperature = 0.5
    updated = config.model_copy(update={"rollout": RolloutConfig(temperature=0.5)})
    assert updated.rollout.temperature == 0.5 and config.rollout.temperature == RolloutConfig().temperature


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_gap_mnpo_rejects_non_finite_weights(bad):
    with pytest.raises(ValidationError, match="opponent_weights"):
        MNPOConfig(num_opponents=2, opponent_weights=(bad, 1.0))


def test_gap_learner_betas_in_range():
    with pytest.raises(ValidationError, match="betas"):
        LearnerConfig(betas=(1.5, -2.0))
