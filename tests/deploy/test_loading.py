"""deploy/loading.py: YAML run configs and manifests -> protocols models, with one-line errors
that name the file, the line, the judge and the field; `--set` overrides and their precedence."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deploy.loading import (
    ConfigError,
    build_run_config,
    describe_errors,
    dump_config,
    load_manifest,
    parse_override,
    read_yaml,
)
from learner.algorithms import algorithm_config
from learner.algorithms.mnpo import MNPOConfig
from protocols import JudgeManifest, LearnerConfig, RolloutConfig, RunConfig


def write(tmp_path, text: str, name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- precedence


def test_precedence_file_then_set_then_explicit_flags(tmp_path):
    config = write(tmp_path, "steps: 5\nseed: 3\nlearner:\n  lr: 1.0e-3\n  zero_stage: 3\nrollout:\n  top_p: 0.9\n")
    cfg = build_run_config(
        config,
        overrides={"steps": 9, "model.path": "/models/policy", "seed": None, "output": None},
        sets=["steps=7", "learner.lr=5e-4", "rollout.top_p=0.8", "rollout.samples_per_prompt=8"],
    )
    assert cfg.steps == 9  # file 5 < --set 7 < flag 9
    assert cfg.learner.lr == 5e-4  # file 1e-3 < --set 5e-4
    assert cfg.rollout.top_p == 0.8  # file 0.9 < --set 0.8
    assert cfg.seed == 3  # only in the file; a flag left at None does not override
    assert cfg.learner.zero_stage == 3  # sibling keys of an overridden section are kept
    assert cfg.rollout.samples_per_prompt == 8  # only in --set
    assert cfg.model.path == "/models/policy"  # dotted flag into a section the file lacks
    assert cfg.output is None and cfg.algo == RunConfig().algo  # untouched fields keep defaults


def test_later_set_wins_and_values_are_parsed_as_yaml():
    cfg = build_run_config(
        None,
        {},
        [
            "learner.lr=1e-3",
            "learner.lr=2e-5",
            "learner.betas=[0.8, 0.9]",
            "mnpo.opponent_weights=null",
            "address=ray://head:10001",
        ],
    )
    assert cfg.learner.lr == 2e-5
    assert cfg.learner.betas == (0.8, 0.9)
    assert algorithm_config(cfg).opponent_weights is None
    assert cfg.address == "ray://head:10001"  # '=' splits once; ':' in a value stays a string


def test_no_file_and_no_overrides_is_the_default_config(tmp_path):
    assert build_run_config(None, {}, []) == RunConfig()
    assert build_run_config(write(tmp_path, "# only a comment\n"), {}, []) == RunConfig()  # empty YAML = {}


def test_parse_override():
    assert parse_override("learner.lr=1.0e-5") == (["learner", "lr"], 1e-5)
    # PyYAML reads YAML 1.1, where '1e-5' (no dot) is a string; RunConfig coerces it to a float.
    assert parse_override("learner.lr=1e-5") == (["learner", "lr"], "1e-5")
    assert build_run_config(None, {}, ["learner.lr=1e-5"]).learner.lr == 1e-5
    assert parse_override("steps=3") == (["steps"], 3)
    assert parse_override("model.path=a=b") == (["model", "path"], "a=b")
    assert parse_override("output=") == (["output"], None)  # empty YAML is null


# --------------------------------------------------------------------------- --set errors


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("learner.lr", "--set 'learner.lr': expected KEY=VALUE"),
        ("=5", "--set '=5': expected KEY=VALUE"),
        ("learner.lr=[1, 2", "--set 'learner.lr=[1, 2': value '[1, 2' is not valid YAML"),
        ("steps='3", "is not valid YAML"),
    ],
)
def test_malformed_set(text, fragment):
    with pytest.raises(ConfigError) as excinfo:
        build_run_config(None, {}, [text])
    assert fragment in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_set_into_something_that_is_not_a_section():
    with pytest.raises(ConfigError, match=r"--set learner\.lr\.x: 'lr' is not a section"):
        build_run_config(None, {}, ["learner.lr=1e-3", "learner.lr.x=1"])
    with pytest.raises(ConfigError, match=r"--set model\.path: 'model' is not a section"):
        build_run_config(None, {}, ["model=builtin", "model.path=/x"])


def test_set_with_a_bad_value_names_the_field_and_the_value():
    with pytest.raises(ConfigError) as excinfo:
        build_run_config(None, {}, ["learner.lr=-1"])
    assert str(excinfo.value) == "run config: field 'learner.lr': Input should be greater than 0 (got -1)"
    with pytest.raises(ConfigError, match=r"field 'rollout.sample_per_prompt': Extra inputs are not permitted"):
        build_run_config(None, {}, ["rollout.sample_per_prompt=4"])  # a typo is an error, not ignored


# --------------------------------------------------------------------------- YAML files


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("steps: 3\nseed: 1\n learner: 2\n", 3),  # mapping values are not allowed here
        ("steps: 3\nlearner:\n  betas: [0.9, 0.95\nseed: 1\n", 4),  # unclosed flow sequence
        ("steps: 3\nlearner:\n\tlr: 1\n", 3),  # a tab cannot start a token
    ],
)
def test_yaml_syntax_error_names_file_and_line(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        build_run_config(path, {}, [])
    message = str(excinfo.value)
    assert message.startswith(f"{path}: line {line} is not valid YAML: "), message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "kind"), [("- steps\n- seed\n", "list"), ("42\n", "int"), ("mnpo\n", "str")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"expected a mapping at the top level, got {kind}$") as excinfo:
        build_run_config(path, {}, [])
    assert str(excinfo.value).startswith(path)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_manifest(path)


def test_missing_files_are_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"config file '{missing}' does not exist"):
        build_run_config(str(missing), {}, [])
    with pytest.raises(ConfigError, match=f"judge manifest '{missing}' does not exist"):
        load_manifest(missing)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path, "config file")  # a directory is not a file


def test_invalid_config_file_names_file_field_and_value(tmp_path):
    path = write(tmp_path, "learner:\n  zero_stage: 1\n")
    with pytest.raises(ConfigError) as excinfo:
        build_run_config(path, {}, [])
    assert str(excinfo.value) == f"{path}: field 'learner.zero_stage': Input should be 2 or 3 (got 1)"


# --------------------------------------------------------------------------- describe_errors


def manifest_error(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as excinfo:
        JudgeManifest.model_validate(data)
    return excinfo.value


def test_describe_errors_names_the_judge_by_index_and_name():
    data = {
        "judges": [
            {"name": "gt", "kind": "rule", "function": "rollout.tasks.wordlist:ground_truth"},
            {"name": "rm", "kind": "reward_model", "path": "/rm", "batch_size": 0},
        ]
    }
    message = describe_errors(manifest_error(data), data, "judges.yaml")
    # the union tag ('reward_model') is not part of the field name
    assert message == (
        "judges.yaml: judges[1] (name 'rm'): field 'batch_size': Input should be greater than or equal to 1 (got 0)"
    )


def test_describe_errors_missing_field_has_no_value():
    data = {"judges": [{"name": "gt", "kind": "rule"}]}
    first = describe_errors(manifest_error(data), data, "m.yaml").split("; ")[0]
    assert first == "m.yaml: judges[0] (name 'gt'): field 'function': Field required"


def test_describe_errors_bad_or_missing_kind_is_reported_as_the_kind_field():
    data = {"judges": [{"name": "gt", "kind": "oracle"}]}
    first = describe_errors(manifest_error(data), data, "m.yaml").split("; ")[0]
    assert first.startswith("m.yaml: judges[0] (name 'gt'): field 'kind': ")
    assert "'rule'" in first and "'reward_model'" in first and "oracle" in first  # valid options and the bad value
    data = {"judges": [{"name": "gt"}]}
    assert "judges[0] (name 'gt'): field 'kind': " in describe_errors(manifest_error(data), data, "m.yaml")


def test_describe_errors_without_a_name_gives_only_the_index():
    data = {
        "judges": [
            {"name": "gt", "kind": "rule", "function": "m:f"},
            {"kind": "rule", "function": "not an import path"},
        ]
    }
    message = describe_errors(manifest_error(data), data, "m.yaml")
    assert message.startswith("m.yaml: judges[1]: field 'name': Field required; ")
    assert "judges[1]: field 'function': Value error, 'not an import path' is not of the form" in message


def test_describe_errors_keeps_at_most_three_errors():
    data = {"judges": [{"name": f"j{i}", "kind": "rule"} for i in range(5)]}
    message = describe_errors(manifest_error(data), data, "m.yaml")
    assert [f"judges[{i}] (name 'j{i}')" in message for i in range(5)] == [True, True, True, False, False]
    assert message.count("; ") == 2


def test_load_manifest_error_names_file_judge_and_field(tmp_path):
    path = write(tmp_path, "judges:\n  - {name: rm, kind: reward_model, path: /rm, weight: 0}\n", "judges.yaml")
    with pytest.raises(ConfigError) as excinfo:
        load_manifest(path)
    assert str(excinfo.value).startswith(f"{path}: judges[0] (name 'rm'): field 'weight': Input should be greater than 0 (got 0)")


# --------------------------------------------------------------------------- dump_config


def test_dump_config_round_trips(tmp_path):
    cfg = RunConfig(
        algo="mnpo",
        steps=17,
        seed=-4,
        output=str(tmp_path / "run"),
        address="ray://head:10001",
        rollout=RolloutConfig(num_workers=2, temperature=0.7, top_p=0.95, kv_cache_gib=0.5),
        learner=LearnerConfig(zero_stage=3, lr=1.5e-5, betas=(0.8, 0.99), micro_batch_size=8),
        mnpo=MNPOConfig(num_opponents=3, opponent_weights=(0.5, 0.25, 0.25), ratio=1 / 3),
    )
    path = tmp_path / "config.yaml"
    dump_config(cfg, path)
    assert build_run_config(str(path), {}, []) == cfg
    assert build_run_config(str(path), {}, ["steps=18"]) == cfg.model_copy(update={"steps": 18})
    defaults = tmp_path / "defaults.yaml"
    dump_config(RunConfig(), defaults)
    assert build_run_config(str(defaults), {}, []) == RunConfig()


def test_manifest_errors_drop_the_kind_tag_and_the_too_short_echo(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("judges:\n  - {name: gt, kind: rule}\neval: {name: e, kind: rule}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_manifest(path)
    message = str(excinfo.value)
    assert "judges[0] (name 'gt'): field 'function': Field required" in message
    assert "field 'eval.function': Field required" in message  # not 'eval.rule.function'
    assert "at least 1 item" not in message  # the failed item is the cause; its echo is noise
