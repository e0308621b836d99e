"""`ray job submit -- python -m driver --algo mnpo --steps 3` against a `ray start --head` cluster.

The head runs with `--block` in its own process group so the test can stop exactly this cluster
(`ray stop` would stop every Ray instance on the machine). Token authentication stays on, as users
get it from Ray 2.60; the job client is told to send the token with RAY_AUTH_MODE=token.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    dashboard = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(free_port()),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true"],
        env=env, stdout=(tmp_path / "head.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(address, timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(1)
    else:
        pytest.fail("the Ray dashboard did not come up within 120 s")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_ray_job_submit_runs_the_driver_and_logs_reach_ray_job_logs(builtin_models, head_node, tmp_path):
    address, env = head_node
    out = tmp_path / "run"
    command = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               "python", "-m", "driver", "--algo", "mnpo", "--steps", "3", "--output", str(out),
               "--set", "eval.num_prompts=8"]
    for _ in range(30):  # the dashboard answers before its job agent is registered
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
