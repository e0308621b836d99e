"""The user's own prompts: a JSONL file, one JSON object per line.

    {"prompt": "What is the capital of Peru?", "answer": "Lima"}
    {"prompt": "Write a haiku about rain.", "id": "haiku-1", "split": "heldout"}

Fields: `prompt` (required, non-empty text: the user message; a chat model gets it through its
chat template), `id` (optional, unique; default: `line-<n>`), `answer` (optional reference answer,
text or number), `split` (optional, "train" or "heldout"; default: a seeded hash of the id puts
`task.heldout_percent` % of the prompts in held-out). Blank lines are skipped. Anything else is an
error naming the file and line, raised before any actor starts.

Ground truth: when every prompt has an `answer`, the task's rule judge is `reference_answer`
(1.0 when the answer appears in the response, see there; 0.0 otherwise). When none has one, the
task has no ground truth and the manifest must name the judges and a pointwise `eval` judge. A file
where only some prompts have an answer is refused (a judge that cannot score some prompts would
silently train on them as ties).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from protocols import Prompt, TaskConfig
from rollout.tasks.base import Task, in_heldout

FIELDS = ("prompt", "id", "answer", "split")


def load(cfg: TaskConfig) -> Task:
    if not cfg.path:
        raise ValueError("task.path: the jsonl task needs the prompts file (--prompts FILE.jsonl)")
    path = str(Path(cfg.path).expanduser().resolve())
    rows = read_rows(path)
    train, heldout = [], []
    for row in rows:
        split = row.get("split") or ("heldout" if in_heldout(f"jsonl:{cfg.seed}:{row['id']}", cfg.heldout_percent) else "train")
        (heldout if split == "heldout" else train).append(Prompt(prompt_id=row["id"], text=row["prompt"]))
    if not train or not heldout:
        which = "train" if not train else "held-out"
        raise ValueError(
            f"{cfg.path}: no {which} prompts among {len(rows)} (set `split` on some lines, or change "
            f"task.heldout_percent={cfg.heldout_percent})"
        )
    with_answer = sum("answer" in row for row in rows)
    if 0 < with_answer < len(rows):
        first = next(i for i, row in enumerate(rows) if "answer" not in row)
        raise ValueError(
            f"{cfg.path}: {with_answer} of {len(rows)} prompts have an 'answer' but prompt {rows[first]['id']!r} "
            f"has none; give every prompt an answer, or none (and name the judges with --judges)"
        )
    return Task(
        name="jsonl",
        train=tuple(train),
        heldout=tuple(heldout),
        ground_truth="rollout.tasks.jsonl:reference_answer" if with_answer else None,
        ground_truth_args={"path": path} if with_answer else {},
        description=f"{len(rows)} prompts from {cfg.path}" + (" with reference answers" if with_answer else ""),
    )


def read_rows(path: str) -> list[dict]:
    """The file's objects, checked; ValueError 'FILE:LINE: ...' at the first bad line."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"task.path: prompts file {path!r} does not exist")
    rows: list[dict] = []
    ids: dict[str, int] = {}
    with file.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            unknown = sorted(set(row) - set(FIELDS))
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {list(FIELDS)}")
            if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise ValueError(f"{where}: field 'prompt' must be non-empty text")
            row.setdefault("id", f"line-{number}")
            if not isinstance(row["id"], str) or not row["id"]:
                raise ValueError(f"{where}: field 'id' must be non-empty text")
            if row["id"] in ids:
                raise ValueError(f"{where}: id {row['id']!r} repeats line {ids[row['id']]}")
            ids[row["id"]] = number
            if "answer" in row and (
                isinstance(row["answer"], bool)
                or not isinstance(row["answer"], str | int | float)
                or not str(row["answer"]).strip()
            ):
                raise ValueError(f"{where}: field 'answer' must be non-empty text or a number")
            if row.get("split") not in (None, "train", "heldout"):
                raise ValueError(f"{where}: field 'split' must be 'train' or 'heldout', got {row['split']!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"task.path: prompts file {path!r} holds no prompts")
    return rows


# --------------------------------------------------------------------------- ground truth


def normalise(text: str) -> str:
    """Lower case, punctuation dropped (except inside numbers, e.g. 3.5), whitespace collapsed."""
    text = re.sub(r"(?<!\d)[.,](?!\d)|[^\w\s.,-]", " ", text.lower())
    return " ".join(text.split())


def matches(answer: str, response: str) -> bool:
    """The normalised answer occurs in the normalised response as whole words."""
    needle = normalise(answer)
    return bool(needle) and re.search(rf"(?<![\w.]){re.escape(needle)}(?![\w]|\.\d)", normalise(response)) is not None


@functools.lru_cache(maxsize=8)
def _answers(path: str, mtime_ns: int) -> dict[str, str]:
    answers: dict[str, str] = {}
    for row in read_rows(path):
        previous = answers.setdefault(row["prompt"], str(row["answer"]))
        if previous != str(row["answer"]):
            raise ValueError(f"{path}: prompt {row['prompt']!r} appears with two answers: {previous!r}, {row['answer']!r}")
    return answers


def reference_answer(prompt: str, response: str, path: str) -> float:
    """1.0 if the reference answer of `prompt` (looked up in `path`) appears in `response` as whole
    words after normalisation (`normalise`), else 0.0. A prompt not in the file raises KeyError."""
    answers = _answers(path, os.stat(path).st_mtime_ns)
    if prompt not in answers:
        raise KeyError(f"prompt {prompt[:60]!r} is not in {path}")
    return 1.0 if matches(answers[prompt], response) else 0.0
