"""The task seam: the run's prompts, ground truth and eval judge come from the named task; bad task
input fails with one line before any actor starts."""

from __future__ import annotations

import json

import pytest

from driver.plan import resolve_plan, task_manifest
from protocols import JudgeManifest, RuleJudgeSpec, RunConfig, TaskConfig
from rollout.judges.rule import RuleJudge
from rollout.tasks import TASKS, load_task
from tests.driver.test_cli_errors import assert_one_line_error, run_driver


def write_jsonl(path, rows: list) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_every_registered_task_loads_with_its_ground_truth_and_groups_importable():
    for name in TASKS:
        if name == "jsonl":
            continue
        task = load_task(TaskConfig(name=name))
        assert task.name == name and task.train and task.heldout
        assert not {p.prompt_id for p in task.train} & {p.prompt_id for p in task.heldout}
        judge = RuleJudge(RuleJudgeSpec(name="gt", kind="rule", function=task.ground_truth))
        assert judge.score([task.heldout[0].text], [""]) == [0.0] or name == "wordlist"  # empty answers meet nothing
        for function in task.groups.values():
            RuleJudge(RuleJudgeSpec(name="g", kind="rule", function=function))


def test_the_plan_takes_prompts_and_judges_from_the_task(tmp_path):
    plan = resolve_plan(RunConfig(task=TaskConfig(name="arithmetic"), output=str(tmp_path / "run")), None)
    assert plan.task.name == "arithmetic"
    assert [j.function for j in plan.manifest.judges] == ["rollout.tasks.arithmetic:ground_truth"]
    assert plan.eval_judge.function == "rollout.tasks.arithmetic:ground_truth" and plan.eval_judge.temperature == 0.0
    # A manifest without `eval` is evaluated on the task's ground truth, not the word-list one.
    manifest = JudgeManifest(judges=(RuleJudgeSpec(name="mine", kind="rule", function="rollout.tasks.instruct:form"),))
    plan = resolve_plan(RunConfig(task=TaskConfig(name="instruct"), output=str(tmp_path / "run2")), manifest)
    assert plan.eval_judge.function == "rollout.tasks.instruct:ground_truth"


def test_task_without_ground_truth_needs_judges_and_an_eval_judge(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(20)])
    task = load_task(TaskConfig(name="jsonl", path=path, heldout_percent=30))
    with pytest.raises(ValueError, match="has no ground truth to judge with; pass --judges"):
        task_manifest(task)
    manifest = JudgeManifest(judges=(RuleJudgeSpec(name="mine", kind="rule", function="rollout.tasks.instruct:form"),))
    with pytest.raises(ValueError, match="field 'eval': task 'jsonl' has no ground truth"):
        resolve_plan(RunConfig(task=TaskConfig(name="jsonl", path=path), output=str(tmp_path / "r")), manifest)


def test_cli_task_errors_are_one_line(tmp_path):
    assert_one_line_error(
        run_driver("--task", "poetry"), "task.name: unknown task 'poetry'", "valid: wordlist, instruct, arithmetic, jsonl"
    )
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "fine"}', '{"prompt": 3}'])
    assert_one_line_error(run_driver("--prompts", bad), f"{bad}:2: field 'prompt' must be non-empty text")
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": f"q{i}"} for i in range(20)])
    assert_one_line_error(run_driver("--prompts", plain), "task 'jsonl' has no ground truth", "--judges")
    assert_one_line_error(run_driver("--prompts", plain, "--task", "instruct"), "--prompts is the file of the 'jsonl' task")
    assert_one_line_error(run_driver("--prompts", str(tmp_path / "none.jsonl")), "does not exist")


def test_list_tasks_names_every_task():
    result = run_driver("--list-tasks")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.strip().splitlines()] == list(TASKS)


def test_prompts_that_cannot_fit_the_context_fail_before_anything_starts(tmp_path, builtin_models):
    from driver.plan import check_context

    long = "list 3 fruits: " + "apple " * 60
    path = write_jsonl(
        tmp_path / "long.jsonl", [{"prompt": "list 2 fruits:", "split": "train"}, {"prompt": long, "split": "heldout"}]
    )
    task = load_task(TaskConfig(name="jsonl", path=path))
    cfg = RunConfig(task=TaskConfig(name="jsonl", path=path))
    longest = check_context(
        cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"max_model_len": 512})}),
        task,
        str(builtin_models.policy),
    )
    assert 60 < longest < 512 - 24
    with pytest.raises(
        ValueError, match=rf"longest prompt is {longest} tokens .* set rollout.max_model_len to at least {longest + 24}"
    ):
        check_context(
            cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"max_model_len": longest})}),
            task,
            str(builtin_models.policy),
        )
    jsonl = write_jsonl(
        tmp_path / "cli.jsonl",
        [{"prompt": long, "answer": "x", "split": "heldout"}, {"prompt": "a", "answer": "y", "split": "train"}],
    )
    assert_one_line_error(
        run_driver("--prompts", jsonl, "--set", "rollout.max_model_len=40"),
        "rollout.max_model_len=40 is too small",
        "set rollout.max_model_len to at least",
    )


def test_the_longest_prompt_is_measured_once_per_tokenizer_and_prompts(tmp_path, builtin_models, monkeypatch):
    """A launch on the same model and prompts reads the remembered length instead of importing
    transformers again; new prompts, another chat mode or a changed tokenizer file measure anew."""
    import shutil

    import driver.plan as plan

    monkeypatch.setenv("ONLINE_RLHF_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "policy"
    shutil.copytree(builtin_models.policy, model)
    prompts = [{"prompt": "list 2 fruits:", "split": "train"}, {"prompt": "name 3 birds: " + "crow " * 9, "split": "heldout"}]
    task = load_task(TaskConfig(name="jsonl", path=write_jsonl(tmp_path / "p.jsonl", prompts)))
    cfg = RunConfig(task=TaskConfig(name="jsonl", path=str(tmp_path / "p.jsonl")))
    measured = []
    real = plan.longest_prompt
    monkeypatch.setattr(plan, "longest_prompt", lambda *a: measured.append(a) or real(*a))

    first = plan.check_context(cfg, task, str(model))
    assert plan.check_context(cfg, task, str(model)) == first and len(measured) == 1  # remembered
    assert len(list((tmp_path / "cache" / "prompt-lengths").glob("*.json"))) == 1

    longer = load_task(TaskConfig(name="jsonl", path=write_jsonl(tmp_path / "q.jsonl", [*prompts, {"prompt": "crow " * 30}])))
    assert plan.check_context(cfg, longer, str(model)) > first and len(measured) == 2
    off = cfg.model_copy(update={"model": cfg.model.model_copy(update={"chat_template": "off"})})
    plan.check_context(off, task, str(model))
    assert len(measured) == 3
    config = model / "tokenizer_config.json"
    config.write_text(config.read_text() + "\n")  # a tokenizer file changed (size and time)
    plan.check_context(cfg, task, str(model))
    assert len(measured) == 4
    # the weights are not part of the key: new weights with the same tokenizer measure nothing
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    plan.check_context(cfg, task, str(model))
    assert len(measured) == 4

    # a remembered length still fails the check, with the same line
    small = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"max_model_len": first})})
    with pytest.raises(ValueError, match=rf"longest prompt is {first} tokens .* at least {first + 24}"):
        plan.check_context(small, task, str(model))
    assert len(measured) == 4

    # an unreadable entry is measured again and rewritten
    for entry in (tmp_path / "cache" / "prompt-lengths").glob("*.json"):
        entry.write_text("{not json")
    assert plan.check_context(cfg, task, str(model)) == first and len(measured) == 5
    assert plan.check_context(cfg, task, str(model)) == first and len(measured) == 5


def test_infinite_or_nan_config_values_are_refused_up_front():
    assert_one_line_error(run_driver("--set", "learner.lr=.inf"), "field 'learner.lr'", "finite number")
    assert_one_line_error(run_driver("--set", "rollout.temperature=.nan"), "field 'rollout.temperature'", "finite number")


def test_sequence_algorithms_need_a_prompt_group_per_learner_rank():
    assert_one_line_error(
        run_driver("--algo", "grpo", "--set", "learner.num_workers=3", "--set", "rollout.prompts_per_step=2"),
        "rollout.prompts_per_step=2 is smaller than learner.num_workers=3",
        "grpo gives each learner rank",
    )


def test_another_algorithms_section_is_refused_up_front():
    assert_one_line_error(
        run_driver("--algo", "dpo", "--set", "mnpo.eta=0.9"),
        "sets section(s) 'mnpo', which algorithm 'dpo' does not read",
        "dpo reads 'dpo'",
    )
    assert_one_line_error(
        run_driver("--algo", "grpo", "--set", "grpo.kl_coef=-1"), "run config field 'grpo.kl_coef'", "greater than or equal to 0"
    )
