"""Tasks: where a run's prompts and ground truth come from (see rollout/tasks/base.py for `Task`).

    wordlist     wordlist.py     the embedded default: "list 3 fruits:" for the tiny built-in model
    instruct     instruct.py     instructions with verifiable constraints (IFEval-style), for chat models
    arithmetic   arithmetic.py   short arithmetic and unit questions with one exact answer
    jsonl        jsonl.py        the user's own prompts: one JSON object per line

Adding a task: one module with `load(cfg: TaskConfig) -> Task` and one line in `TASKS`
(docs/tasks.md). Modules are imported only when their task is loaded.
"""

from __future__ import annotations

import importlib

from protocols import TaskConfig
from rollout.tasks.base import Task

TASKS: dict[str, str] = {
    "wordlist": "rollout.tasks.wordlist",
    "instruct": "rollout.tasks.instruct",
    "arithmetic": "rollout.tasks.arithmetic",
    "jsonl": "rollout.tasks.jsonl",
}


def load_task(cfg: TaskConfig) -> Task:
    """The task the run config names; ValueError listing the valid names for an unknown one."""
    module = TASKS.get(cfg.name)
    if module is None:
        raise ValueError(f"task.name: unknown task {cfg.name!r}; valid: {', '.join(TASKS)}")
    return importlib.import_module(module).load(cfg)


__all__ = ["TASKS", "Task", "load_task"]
