"""The evaluation's verdict line and metrics record (driver/run.py `log_eval`, `eval_record`), by hand."""

from __future__ import annotations

import logging

import pytest

from driver.run import eval_record, log_eval
from protocols import EvalResult, WinRate


def result(win: float, low: float, high: float, pool: WinRate | None = None, kl: float | None = 0.4321) -> EvalResult:
    return EvalResult(
        step=49,
        judge="ground-truth",
        vs_start=WinRate(win_rate=win, ci_low=low, ci_high=high, num_prompts=47, num_comparisons=752),
        mean_reward=0.7123,
        start_mean_reward=0.6049,
        mean_response_tokens=4.25,
        start_mean_response_tokens=6.0,
        kl_to_reference=kl,
        pool_worst=pool,
        pool_versions=(30, 40) if pool else (),
    )


@pytest.mark.parametrize(
    ("win", "low", "high", "verdict"),
    [
        (0.72, 0.652, 0.789, "improved"),
        (0.56, 0.5, 0.62, "did not measurably change"),  # a CI touching 0.5 is not a change
        (0.5, 0.43, 0.57, "did not measurably change"),
        (0.44, 0.38, 0.5, "did not measurably change"),
        (0.3, 0.22, 0.38, "got worse"),
    ],
)
def test_the_verdict_follows_the_confidence_interval(caplog, win, low, high, verdict):
    with caplog.at_level(logging.INFO, logger="driver"):
        log_eval(result(win, low, high))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "driver"]
    assert line == (
        f"eval after step 50 (judge ground-truth, 47 held-out prompts): win rate vs starting policy {win:.3f} "
        f"[95% CI {low:.3f}, {high:.3f}] -> the policy {verdict}; mean reward 0.605 -> 0.712; "
        f"mean response tokens 6.0 -> 4.2; KL to reference 0.432"
    )


def test_the_pool_and_a_missing_kl_in_the_line_and_the_record(caplog):
    pool = WinRate(win_rate=0.461, ci_low=0.39, ci_high=0.532, num_prompts=47, num_comparisons=752)
    with caplog.at_level(logging.INFO, logger="driver"):
        log_eval(result(0.72, 0.652, 0.789, pool=pool, kl=None))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "driver"]
    assert line.endswith("; KL to reference 0.000; worst win rate vs the opponent pool 0.461 (versions [30, 40])")
    assert eval_record(result(0.72, 0.652, 0.789, pool=pool)) == {
        "eval/win_rate": 0.72,
        "eval/win_rate_ci_low": 0.652,
        "eval/win_rate_ci_high": 0.789,
        "eval/mean_reward": 0.7123,
        "eval/start_mean_reward": 0.6049,
        "eval/response_tokens": 4.25,
        "eval/kl_to_reference": 0.4321,
        "eval/pool_worst_win_rate": 0.461,
        "eval/pool_worst_ci_low": 0.39,
        "eval/pool_worst_ci_high": 0.532,
    }
    assert "eval/pool_worst_win_rate" not in eval_record(result(0.72, 0.652, 0.789))
