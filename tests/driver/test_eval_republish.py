"""The latest evaluation's gauges are published again with every step (Ray drops unset gauges)."""

from __future__ import annotations

from driver import run as run_module


class Writer:
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)


def test_latest_eval_is_republished_with_each_step_but_written_once(monkeypatch):
    published = []
    monkeypatch.setattr(run_module.telemetry, "publish", lambda record, run: published.append(dict(record)))
    loop = run_module.Loop.__new__(run_module.Loop)
    loop.last_eval, loop.run_name = {}, "r"
    writer = Writer()
    loop.emit(writer, {"step": 0, "learner/loss": 1.0})
    loop.emit(writer, {"step": 0, "time": 1.0, "eval/win_rate": 0.6, "eval/win_rate_ci_low": 0.55})
    loop.emit(writer, {"step": 1, "learner/loss": 0.5})
    loop.emit(writer, {"step": 2, "learner/loss": 0.4, "eval/win_rate": 0.7})
    loop.emit(writer, {"step": 3, "learner/loss": 0.3})
    assert "eval/win_rate" not in published[0]
    assert published[2] == {"step": 1, "learner/loss": 0.5, "eval/win_rate": 0.6, "eval/win_rate_ci_low": 0.55}
    assert published[4]["eval/win_rate"] == 0.7 and "eval/win_rate_ci_low" not in published[4]
    assert writer.records[2] == {"step": 1, "learner/loss": 0.5}  # metrics.jsonl keeps each record as it was
