"""Running the driver as a user would, for the end-to-end tests: `python -m driver` in a subprocess
that starts its own local Ray cluster, a few steps on the built-in tiny model, and its records read
back. (Real Ray, vLLM and DeepSpeed.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_driver(
    out: Path, *sets: str, steps: int = 3, algo: str = "mnpo", flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "driver", "--algo", algo, "--steps", str(steps), "--output", str(out), *flags]
    # plots off unless asked for (`tracking.plots=true` in sets: the later --set wins): drawing them
    # costs every run about 2 s; one run draws them (test_algorithms.py) and tests/driver/test_report.py
    # checks them in process
    for item in ("rollout.prompts_per_step=8", "eval.num_prompts=8", "eval.samples_per_prompt=2", "tracking.plots=false", *sets):
        args += ["--set", item]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_metrics(out: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[:-1], records[-1]


# `python -m driver --algo mnpo` end to end, and what it leaves behind: the uninterrupted run of
# tests/e2e/test_resume.py (check_an_mnpo_run). The multi-rank learner (two ZeRO-3 ranks) sampling
# one batch ahead of learning: the uninterrupted run of tests/e2e/test_faults.py.
