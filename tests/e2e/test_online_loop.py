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


@pytest.mark.slow
def test_three_steps_of_mnpo_end_to_end(builtin_models, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "driver", "--algo", "mnpo", "--steps", "3", "--output", str(out),
         "--set", "rollout.prompts_per_step=8", "--set", "eval.num_prompts=8", "--set", "eval.samples_per_prompt=2",
         "--set", "mnpo.snapshot_every=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stderr
    for step in (1, 2, 3):
        assert f"step {step}/3 | reward" in log
    assert "win rate vs starting policy" in log

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps, final = records[:-1], records[-1]
    assert [r["step"] for r in steps] == [0, 1, 2]
    assert [r["learner/policy_version"] for r in steps] == [1.0, 2.0, 3.0]
    assert all(r["rollout/policy_version"] == r["step"] for r in steps)  # strictly on-policy
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)  # vLLM serves what DeepSpeed trained
    assert all(r["rollout/samples"] == 8 * 4 for r in steps)
    assert all(0.0 <= r["rollout/reward_mean"] <= 1.0 for r in steps)
    assert all(r["learner/pairs"] > 0 for r in steps)
    assert steps[-1]["learner/kl_to_reference"] != 0.0  # the policy moved away from the reference
    assert 0.0 <= final["eval/win_rate_ci_low"] <= final["eval/win_rate"] <= final["eval/win_rate_ci_high"] <= 1.0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_eval"]["vs_start"]["num_prompts"] == 8
    config = (out / "config.yaml").read_text()
    assert "snapshot_every: 2" in config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.vocab_size == len(tokenizer)
