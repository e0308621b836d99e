"""`ray job submit -- python -m driver --algo mnpo --steps 3` against a `ray start --head` cluster."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.ray_head import RAY

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ray_job_submit_runs_the_driver_and_logs_reach_ray_job_logs(builtin_models, head_node, tmp_path):
    address, env = head_node.dashboard, head_node.env
    out = tmp_path / "run"
    command = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--",
        "python",
        "-m",
        "driver",
        "--algo",
        "mnpo",
        "--steps",
        "3",
        "--output",
        str(out),
        "--set",
        "eval.num_prompts=8",
    ]
    for _ in range(60):  # the dashboard answers before its job agent is registered
        submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in submit.stdout + submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", submit.stdout + submit.stderr).group(1)
    logs = subprocess.run(
        [RAY, "job", "logs", "--address", address, job_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert logs.returncode == 0, logs.stderr
    for step in (1, 2, 3):
        assert f"step {step}/3 | reward" in logs.stdout
    assert "win rate vs starting policy" in logs.stdout
    assert (out / "final" / "config.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # 3 steps + the final evaluation
