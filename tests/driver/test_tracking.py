"""driver/tracking.py: metrics.jsonl round trip, TensorBoard scalars, crash/resume handling, W&B switch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from driver.tracking import (
    METRICS_FILE,
    TENSORBOARD_DIR,
    MetricsWriter,
    WandbSettings,
    read_metrics,
    truncate_after,
)

REPO = Path(__file__).resolve().parents[2]


def train_record(step: int, loss: float = 1.0) -> dict:
    return {
        "step": step,
        "time": 0.5 * step,
        "learner/loss": loss,
        "rollout/reward_mean": 0.1 * step,
        "judge/ground-truth/mean": 0.2,
        "note": "text is kept in JSON but not in TensorBoard",
    }


def eval_record(step: int, win_rate: float = 0.6) -> dict:
    return {"step": step, "time": 0.5 * step + 0.1, "eval/win_rate": win_rate, "eval/mean_reward": 0.7}


def scalars(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar under OUTPUT/tensorboard as tag -> [(step, value)], as TensorBoard shows it."""
    acc = EventAccumulator(str(output_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_round_trip_and_tensorboard_scalars(tmp_path):
    records = [train_record(0, 0.9), train_record(1, 0.8), eval_record(1), train_record(2, 0.7)]
    with MetricsWriter(tmp_path) as metrics:
        for record in records:
            metrics.write(record)
        # flushed on every write: readable before close, as after a kill
        assert [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()] == records
        assert scalars(tmp_path)["learner/loss"] == [(0, pytest.approx(0.9)), (1, pytest.approx(0.8)), (2, pytest.approx(0.7))]
    train, evals = read_metrics(tmp_path / METRICS_FILE)
    assert train == [records[0], records[1], records[3]]
    assert evals == [records[2]]
    tb = scalars(tmp_path)
    assert set(tb) == {
        "time",
        "learner/loss",
        "rollout/reward_mean",
        "judge/ground-truth/mean",
        "eval/win_rate",
        "eval/mean_reward",
    }  # numbers only; "step" is the x-axis
    assert tb["eval/win_rate"] == [(1, pytest.approx(0.6))]
    assert tb["rollout/reward_mean"] == [(s, pytest.approx(0.1 * s)) for s in range(3)]


def test_tensorboard_can_be_off(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as metrics:
        metrics.write(train_record(0))
    assert not (tmp_path / TENSORBOARD_DIR).exists()
    assert read_metrics(tmp_path / METRICS_FILE)[0] == [train_record(0)]


def test_a_record_needs_an_integer_step(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as metrics, pytest.raises(ValueError, match="integer 'step'"):
        metrics.write({"learner/loss": 1.0})


def test_newest_record_of_a_step_and_kind_wins(tmp_path):
    path = tmp_path / METRICS_FILE
    lines = [
        train_record(0, 5.0),
        train_record(1, 5.0),
        eval_record(1, 0.4),
        train_record(2, 5.0),
        # crash, resume from step 1: steps 1 and 2 and the eval at 1 are written again
        train_record(1, 1.0),
        eval_record(1, 0.9),
        train_record(2, 2.0),
        train_record(3, 3.0),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    train, evals = read_metrics(path)
    assert [(r["step"], r["learner/loss"]) for r in train] == [(0, 5.0), (1, 1.0), (2, 2.0), (3, 3.0)]
    assert [(r["step"], r["eval/win_rate"]) for r in evals] == [(1, 0.9)]


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / METRICS_FILE
    path.write_text(json.dumps(train_record(0)) + "\n" + json.dumps(train_record(1))[:25])
    train, evals = read_metrics(path)
    assert train == [train_record(0)] and evals == []
    assert "metrics.jsonl:2: skipping unreadable last line" in caplog.text


def test_killed_writer_keeps_what_it_wrote(tmp_path):
    """A SIGKILL right after `write` returns (no close, no atexit): both sinks already hold the records."""
    script = textwrap.dedent(f"""
        import os, signal
        from driver.tracking import MetricsWriter
        metrics = MetricsWriter({str(tmp_path)!r})
        for step in range(3):
            metrics.write({{"step": step, "learner/loss": float(step)}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    assert [r["step"] for r in read_metrics(tmp_path / METRICS_FILE)[0]] == [0, 1, 2]
    assert scalars(tmp_path)["learner/loss"] == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_truncate_after_keeps_earlier_steps_verbatim(tmp_path):
    path = tmp_path / METRICS_FILE
    kept = [json.dumps(train_record(0)), json.dumps(eval_record(0)), '{"step": 1,   "learner/loss": 0.5}']
    dropped = [json.dumps(train_record(2)), json.dumps(eval_record(3)), json.dumps(train_record(1))[:10]]
    path.write_text("\n".join(kept[:2] + dropped[:1] + kept[2:] + dropped[1:]))
    assert truncate_after(path, 2) == 3
    assert path.read_text() == "\n".join(kept) + "\n"  # lines copied as they were, order kept
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_FILE]  # no temporary file left behind
    assert truncate_after(tmp_path / "missing.jsonl", 2) == 0
    assert not (tmp_path / "missing.jsonl").exists()


def test_truncate_after_replaces_the_file_atomically(tmp_path, monkeypatch):
    """The new content is written beside the file and swapped in by os.replace; if the swap fails
    the old file is untouched and the temporary file is removed."""
    path = tmp_path / METRICS_FILE
    original = "".join(json.dumps(train_record(s)) + "\n" for s in range(4))
    path.write_text(original)
    calls = []

    def failing_replace(src, dst):
        calls.append((Path(src).parent, Path(dst)))
        raise OSError("disk full")

    monkeypatch.setattr("driver.tracking.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        truncate_after(path, 2)
    assert calls == [(tmp_path, path)]  # same directory, so the rename is atomic
    assert path.read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_FILE]


def test_resume_step_truncates_and_purges_tensorboard(tmp_path):
    with MetricsWriter(tmp_path) as metrics:
        for step in range(6):
            metrics.write({"step": step, "learner/loss": 10.0 + step})
    with (tmp_path / METRICS_FILE).open("a") as f:
        f.write('{"step": 6, "learner/lo')  # the crash cut the last line
    with MetricsWriter(tmp_path, resume_step=3) as metrics:
        for step in range(3, 5):
            metrics.write({"step": step, "learner/loss": float(step)})
    train, _ = read_metrics(tmp_path / METRICS_FILE)
    assert [(r["step"], r["learner/loss"]) for r in train] == [(0, 10.0), (1, 11.0), (2, 12.0), (3, 3.0), (4, 4.0)]
    assert len((tmp_path / METRICS_FILE).read_text().splitlines()) == 5  # nothing stale left in the file
    assert scalars(tmp_path)["learner/loss"] == [(0, 10.0), (1, 11.0), (2, 12.0), (3, 3.0), (4, 4.0)]


def test_reopening_after_a_crash_drops_the_partial_line(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text(json.dumps(train_record(0)) + "\n" + '{"step": 1, "lea')
    with MetricsWriter(tmp_path, tensorboard=False) as metrics:
        metrics.write(train_record(1))
    assert path.read_text().splitlines() == [json.dumps(train_record(0)), json.dumps(train_record(1))]


def test_wandb_enabled_but_not_installed_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ValueError, match="wandb project 'rlhf'.*pip install wandb"):
        MetricsWriter(tmp_path, wandb=WandbSettings(project="rlhf"))
    assert not (tmp_path / METRICS_FILE).exists()  # failed before opening anything


def test_wandb_gets_the_numeric_scalars(tmp_path, monkeypatch):
    calls = []
    run = types.SimpleNamespace(
        log=lambda data, step: calls.append(("log", data, step)), finish=lambda: calls.append(("finish",))
    )

    def init(**kwargs):
        calls.append(("init", kwargs))
        return run

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    with MetricsWriter(tmp_path, tensorboard=False, wandb=WandbSettings(project="rlhf", run_name="a")) as metrics:
        metrics.write({"step": 4, "learner/loss": 0.5, "ok": True, "note": "x"})
    assert calls == [
        ("init", {"project": "rlhf", "name": "a", "dir": str(tmp_path)}),
        ("log", {"learner/loss": 0.5}, 4),
        ("finish",),
    ]
