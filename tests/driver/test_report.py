"""driver/report.py: plots and summary.md from a synthetic metrics.jsonl, and its CLI."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib import image

from driver.report import OVERVIEW_COLUMNS, PANEL_SIZE_PX, make_plots, write_summary

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PANELS = ["reward.png", "eval_win_rate.png", "kl.png", "loss.png", "throughput.png"]


def training(step: int) -> dict:
    return {
        "step": step,
        "time": 2.0 + 0.3 * step,
        "rollout/reward_mean": 0.2 + 0.02 * step,
        "rollout/reward_std": 0.15,
        "rollout/tokens_per_s": 2000.0 + step,
        "learner/loss": 0.9 - 0.01 * step,
        "learner/kl_to_reference": 0.05 * step,
        "learner/grad_norm": 3.0,
        "learner/lr": 2e-4,
        "time/step_seconds": 0.27,
        "judge/ground-truth/mean": 0.2 + 0.02 * step,
    }


def evaluation(step: int, win_rate: float) -> dict:
    return {
        "step": step,
        "time": 2.0 + 0.3 * step + 0.5,
        "eval/win_rate": win_rate,
        "eval/win_rate_ci_low": win_rate - 0.08,
        "eval/win_rate_ci_high": win_rate + 0.08,
        "eval/mean_reward": 0.2 + win_rate / 2,
        "eval/start_mean_reward": 0.2,
        "eval/response_tokens": 3.8,
        "eval/kl_to_reference": 0.04 * step,
        "eval/pool_worst_win_rate": win_rate - 0.1,
    }


def write_metrics(output_dir: Path, records: list[dict]) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return output_dir


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """30 training steps, periodic evaluations at 10 and 20 (the one at 10 shares its step with a
    training record) and the final one at step 30."""
    records = [training(s) for s in range(30)]
    records.insert(11, evaluation(10, 0.55))
    records.insert(22, evaluation(20, 0.62))
    return write_metrics(tmp_path / "run", [*records, evaluation(30, 0.71)])


def assert_png(path: Path, size_px: tuple[int, int]) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"
    height, width = image.imread(path).shape[:2]
    assert (width, height) == size_px, path


def overview_size(panels: int) -> tuple[int, int]:
    return PANEL_SIZE_PX[0] * OVERVIEW_COLUMNS, PANEL_SIZE_PX[1] * math.ceil(panels / OVERVIEW_COLUMNS)


def test_every_plot_is_a_png_of_the_expected_size(run_dir):
    written = make_plots(run_dir)
    assert [p.name for p in written] == [*PANELS, "overview.png"]
    for path in written:
        assert path.parent == run_dir / "plots"
        assert_png(path, overview_size(len(PANELS)) if path.name == "overview.png" else PANEL_SIZE_PX)


def test_without_eval_records_the_other_plots_are_drawn(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="driver.report")
    out = write_metrics(tmp_path, [training(s) for s in range(30)])
    written = make_plots(out)
    assert [p.name for p in written] == ["reward.png", "kl.png", "loss.png", "throughput.png", "overview.png"]
    assert "skipping eval_win_rate.png" in caplog.text
    assert_png(out / "plots" / "overview.png", overview_size(4))


def test_missing_keys_and_odd_values_do_not_crash(tmp_path, caplog):
    records = [
        {"step": 0, "time": 1.0, "learner/loss": 1.0},
        {"step": 1, "learner/loss": float("nan")},
        {"step": 2, "learner/loss": 0.5, "rollout/reward_mean": 0.3},
        {"step": 3, "eval/win_rate": 0.5},
    ]
    caplog.set_level(logging.INFO, logger="driver.report")
    out = write_metrics(tmp_path, records)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "learn')  # a crash cut the last line
    names = [p.name for p in make_plots(out)]
    assert names == ["reward.png", "eval_win_rate.png", "loss.png", "overview.png"]
    assert "skipping kl.png" in caplog.text and "skipping throughput.png" in caplog.text
    write_summary(out)  # nothing to assert beyond not crashing on the gaps


def test_empty_metrics_writes_no_plots(tmp_path):
    out = write_metrics(tmp_path, [])
    assert make_plots(out) == []
    assert "training steps: none recorded" in write_summary(out).read_text()


def test_summary(run_dir):
    make_plots(run_dir)
    text = write_summary(run_dir).read_text()
    assert text == (run_dir / "summary.md").read_text()
    assert "- training steps: 30 (steps 0–29)" in text
    assert "- wall time: 11.5s (at step 30)" in text  # the final eval record's "time": 2 + 0.3 * 30 + 0.5
    assert "- reward (rollout/reward_mean): last 0.780 at step 29, best 0.780 at step 29" in text
    assert (
        "- final evaluation (step 30): win rate vs the starting policy 0.710 [95% CI 0.630, 0.790] "
        "-> the policy improved; mean reward 0.200 -> 0.555; response tokens 3.8; "
        "pool worst-case win rate 0.610"
    ) in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == (
        "| step | win rate | 95% CI low | 95% CI high | mean reward | start mean reward | "
        "response tokens | KL to reference | pool worst win rate |"
    )
    assert [row.split(" | ")[0] for row in table[1:]] == ["| 10", "| 20", "| 30"]
    assert "![overview](plots/overview.png)" in text


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driver.report", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_regenerates_plots_and_summary(run_dir):
    result = report_cli(str(run_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # logging only
    for name in [*PANELS, "overview.png"]:
        assert f"wrote {run_dir / 'plots' / name}" in result.stderr
        assert (run_dir / "plots" / name).exists()
    assert f"wrote {run_dir / 'summary.md'}" in result.stderr


@pytest.mark.parametrize("make", ["no directory", "no metrics file"])
def test_cli_errors_in_one_line(tmp_path, make):
    target = tmp_path / "missing" if make == "no directory" else tmp_path
    result = report_cli(str(target))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("report: error: ") and str(target) in lines[0], result.stderr
