"""End to end through real Ray, real vLLM and real DeepSpeed: `python -m driver --algo mnpo`.

Runs the driver as a user would (a subprocess that starts its own local Ray cluster) for a few
steps on the built-in tiny model and checks what it leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_driver(
    out: Path, *sets: str, steps: int = 3, algo: str = "mnpo", flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "driver", "--algo", algo, "--steps", str(steps), "--output", str(out), *flags]
    for item in ("rollout.prompts_per_step=8", "eval.num_prompts=8", "eval.samples_per_prompt=2", *sets):
        args += ["--set", item]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_metrics(out: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[:-1], records[-1]


@pytest.mark.slow
def test_three_steps_of_mnpo_end_to_end(builtin_models, tmp_path):
    out = tmp_path / "run"
    log = run_driver(out, "mnpo.snapshot_every=2").stderr
    for step in (1, 2, 3):
        assert f"step {step}/3 | reward" in log
    assert "win rate vs starting policy" in log

    steps, final = read_metrics(out)
    assert [r["step"] for r in steps] == [0, 1, 2]
    assert [r["learner/policy_version"] for r in steps] == [1.0, 2.0, 3.0]
    assert all(r["rollout/policy_version"] == r["step"] for r in steps)  # strictly on-policy
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)  # vLLM serves what DeepSpeed trained
    assert all(r["rollout/samples"] == 8 * 4 for r in steps)
    assert all(0.0 <= r["rollout/reward_mean"] <= 1.0 for r in steps)
    assert all(r["learner/pairs"] > 0 for r in steps)
    assert steps[-1]["learner/kl_to_reference"] != 0.0  # the policy moved away from the reference
    # step 0 trains the starting policy against itself (reference = both opponents): logits 0, loss (1/(2 eta))^2
    assert steps[0]["learner/loss"] == pytest.approx(1.0, rel=1e-6)
    assert steps[0]["learner/kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
    # where each step's time went: the driver's waits on each stage, inside the step, the learner's
    # own seconds inside its wait
    waits = ["time/rollout_wait", "time/judge_wait", "time/learner_wait", "time/sync_wait"]
    for r in steps:
        assert all(r[w] >= 0.0 for w in waits) and sum(r[w] for w in waits) <= r["time/step_seconds"]
        assert r["learner/seconds"] <= r["time/learner_wait"] and r["learner/time/backward"] > 0.0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_eval"]["vs_start"] == {
        "win_rate": final["eval/win_rate"],
        "ci_low": final["eval/win_rate_ci_low"],
        "ci_high": final["eval/win_rate_ci_high"],
        "num_prompts": 8,
        "num_comparisons": 8 * 2,
    }
    config = (out / "config.yaml").read_text()
    assert "snapshot_every: 2" in config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.vocab_size == len(tokenizer)


# The multi-rank learner (two ZeRO-3 ranks) sampling one batch ahead of learning: the uninterrupted
# run of tests/e2e/test_faults.py.
