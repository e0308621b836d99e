"""Kill the driver with SIGKILL mid-run, resume it, and compare with an uninterrupted run.

With the same seed and strictly on-policy sampling, a resumed run must repeat exactly what the
uninterrupted run did after the checkpoint: the same prompts, the same samples, the same updates,
so the same final weights and the same opponent pool.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
STEPS = 30
SETTINGS = ["checkpoint.every=4", "checkpoint.keep_last=2", "mnpo.snapshot_every=4", "eval.every=0",
            "eval.num_prompts=8", "rollout.prompts_per_step=16", "tracking.plots=false"]


def command(out: Path) -> list[str]:
    args = [sys.executable, "-m", "driver", "--algo", "mnpo", "--steps", str(STEPS), "--output", str(out)]
    for item in SETTINGS:
        args += ["--set", item]
    return args


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return env


def training_records(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if not any(k.startswith("eval/") for k in r)]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(builtin_models, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(command(whole), cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # The same run, killed (driver, its local Ray cluster and actors: the whole process group)
    # once its second checkpoint exists.
    proc = subprocess.Popen(command(killed), cwd=REPO, env=environment(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "killed.log").open("w"))
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "step-000008" / "driver.json").exists():
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 600 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()  # it really died before the end
    before = training_records(killed)
    assert before and before[-1]["step"] < STEPS - 1

    resumed = subprocess.run([sys.executable, "-m", "driver", "--resume", str(killed)], cwd=REPO,
                             env=environment(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr

    # Every step is recorded exactly once, and each equals the uninterrupted run's step: same
    # prompts and samples (rewards, lengths), same updates (loss, KL, policy version).
    a, b = training_records(whole), training_records(killed)
    assert [r["step"] for r in b] == list(range(STEPS))
    for ra, rb in zip(a, b, strict=True):
        for key in ("rollout/reward_mean", "rollout/response_tokens", "learner/loss", "learner/kl_to_reference",
                    "learner/policy_version", "learner/pairs"):
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])

    # The same prompts at every step, and the same sampled responses.
    samples_a = [json.loads(line) for line in (whole / "samples.jsonl").read_text().splitlines()]
    samples_b = [json.loads(line) for line in (killed / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples_b] == list(range(STEPS))
    assert samples_a == samples_b

    # Same final policy and the same opponent pool in the newest checkpoint.
    wa, wb = load_file(whole / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    last = sorted(p.name for p in (whole / "checkpoints").iterdir())
    assert last == sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-000024", "step-000028"]
    pa = torch.load(whole / "checkpoints" / last[-1] / "opponents.pt")
    pb = torch.load(killed / "checkpoints" / last[-1] / "opponents.pt")
    assert pa["versions"] == pb["versions"] == [24, 20]  # version 28 is pushed at step 28, after the checkpoint
    for ma, mb in zip(pa["models"], pb["models"], strict=True):
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
    sa = json.loads((whole / "summary.json").read_text())["final_eval"]
    sb = json.loads((killed / "summary.json").read_text())["final_eval"]
    assert sa == sb
