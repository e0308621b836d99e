"""The jsonl task (rollout/tasks/jsonl.py): the user's prompts file, its split, its reference
answers as ground truth, and one error naming the file and line for each kind of bad line."""

from __future__ import annotations

import pytest

from protocols import RuleJudgeSpec, TaskConfig
from rollout.judges.rule import RuleJudge
from rollout.tasks import load_task
from rollout.tasks.jsonl import matches
from tests.driver.test_task_seam import write_jsonl


def test_jsonl_task_with_answers_judges_by_reference(tmp_path):
    rows = [{"prompt": f"What is {i} + {i}?", "answer": 2 * i} for i in range(1, 41)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    task = load_task(TaskConfig(name="jsonl", path=path, heldout_percent=25))
    assert len(task.train) + len(task.heldout) == 40 and task.heldout and task.train
    assert task.train[0].prompt_id.startswith("line-")
    judge = RuleJudge(RuleJudgeSpec(name="gt", kind="rule", function=task.ground_truth, args=task.ground_truth_args))
    assert judge.score(["What is 3 + 3?"] * 4, ["6", "It is 6.", "66", "5"]) == [1.0, 1.0, 0.0, 0.0]
    assert matches("Lima", "The capital is Lima.") and not matches("Lima", "Limassol") and not matches("3", "3.5")
    # An explicit split is honoured.
    rows = [{"prompt": "a", "split": "heldout"}, {"prompt": "b", "split": "train"}, {"prompt": "c", "split": "train"}]
    task = load_task(TaskConfig(name="jsonl", path=write_jsonl(tmp_path / "s.jsonl", rows)))
    assert [p.text for p in task.heldout] == ["a"] and [p.text for p in task.train] == ["b", "c"]
    assert task.ground_truth is None


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        (['{"prompt": "a"}', "{not json"], [":2:", "not valid JSON"]),
        (['{"prompt": "a"}', '{"prompt": ""}'], [":2:", "field 'prompt' must be non-empty text"]),
        (['{"prompt": "a", "colour": 1}'], [":1:", "unknown field(s) ['colour']"]),
        (['{"prompt": "a", "id": "x"}', '{"prompt": "b", "id": "x"}'], [":2:", "id 'x' repeats line 1"]),
        (['{"prompt": "a", "split": "test"}'], [":1:", "field 'split' must be 'train' or 'heldout'"]),
        (['["a"]'], [":1:", "expected a JSON object, got list"]),
        (
            ['{"prompt": "a", "answer": "1", "split": "train"}', '{"prompt": "b", "split": "heldout"}'],
            ["1 of 2 prompts have an 'answer'", "'line-2' has none"],
        ),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path, rows, fragments):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError) as err:
        load_task(TaskConfig(name="jsonl", path=path))
    for fragment in fragments:
        assert fragment in str(err.value)
