"""Kill the driver with SIGKILL mid-run (or stop it with SIGTERM), resume it, and compare with an
uninterrupted run.

With the same seed and strictly on-policy sampling, a resumed run must repeat exactly what the
uninterrupted run did after the checkpoint: the same prompts, the same samples, the same updates,
so the same final weights and the same opponent pool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from upath import UPath

from driver import checkpoints

REPO = Path(__file__).resolve().parents[2]
STEPS = 30
SETTINGS = [
    "checkpoint.every=4",
    "checkpoint.keep_last=2",
    "mnpo.snapshot_every=4",
    "eval.every=0",
    "eval.num_prompts=8",
    "rollout.prompts_per_step=16",
    "tracking.plots=false",
]


def command(out: Path) -> list[str]:
    args = [sys.executable, "-m", "driver", "--algo", "mnpo", "--steps", str(STEPS), "--output", str(out)]
    for item in SETTINGS:
        args += ["--set", item]
    return args


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return env


def finished(args: list[str]) -> subprocess.CompletedProcess:
    """`args` (a driver command) run to its end from the checkout, its output captured."""
    return subprocess.run(args, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)


def _started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def training_records(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if not any(k.startswith("eval/") for k in r)]


def check_an_mnpo_run(out: Path, log: str) -> None:
    """What `python -m driver --algo mnpo` leaves behind (the uninterrupted run below): progress
    lines, one record per step, strictly on-policy sampling, vLLM serving what DeepSpeed trained,
    the hand-known first loss, where each step's time went, the summary and a loadable policy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for step in (1, 2, STEPS):
        assert f"step {step}/{STEPS} | reward" in log
    assert "win rate vs starting policy" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps, final = records[:-1], records[-1]
    assert [r["step"] for r in steps] == list(range(STEPS)) and final["step"] == STEPS - 1
    assert [r["learner/policy_version"] for r in steps] == [float(v) for v in range(1, STEPS + 1)]
    assert all(r["rollout/policy_version"] == r["step"] for r in steps)  # strictly on-policy
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)  # vLLM serves what DeepSpeed trained
    assert all(r["rollout/samples"] == 16 * 4 for r in steps)
    assert all(0.0 <= r["rollout/reward_mean"] <= 1.0 and r["learner/pairs"] > 0 for r in steps)
    assert steps[-1]["learner/kl_to_reference"] != 0.0  # the policy moved away from the reference
    # step 0 trains the starting policy against itself (reference = both opponents): logits 0, loss (1/(2 eta))^2
    assert steps[0]["learner/loss"] == pytest.approx(1.0, rel=1e-6)
    assert steps[0]["learner/kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
    # the driver's waits on each stage lie inside the step; the learner's own seconds inside its wait
    waits = ["time/rollout_wait", "time/judge_wait", "time/learner_wait", "time/sync_wait"]
    for r in steps:
        assert all(r[w] >= 0.0 for w in waits) and sum(r[w] for w in waits) <= r["time/step_seconds"]
        assert r["learner/seconds"] <= r["time/learner_wait"] and r["learner/time/backward"] > 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["final_eval"]["vs_start"] == {
        "win_rate": final["eval/win_rate"],
        "ci_low": final["eval/win_rate_ci_low"],
        "ci_high": final["eval/win_rate_ci_high"],
        "num_prompts": 8,
        "num_comparisons": 8 * 4,
    }
    assert "snapshot_every: 4" in (out / "config.yaml").read_text()
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(out / "final"))


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(builtin_models, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = finished(command(whole))
    assert done.returncode == 0, done.stderr[-3000:]
    check_an_mnpo_run(whole, done.stderr)

    # The same run, its driver alone SIGKILLed once its second checkpoint exists: its watchdog
    # (driver/watchdog.py) kills the local Ray cluster and actors the driver started.
    proc = subprocess.Popen(
        command(killed),
        cwd=REPO,
        env=environment(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "killed.log").open("w"),
    )
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "step-000008" / "driver.json").exists():
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 600 s"
        time.sleep(0.05)
    started = {p.pid: p.create_time() for p in psutil.Process(proc.pid).children(recursive=True)}
    assert len(started) >= 5, started  # the watchdog, GCS, raylet, agents, the actors' workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while alive := [pid for pid, t in started.items() if psutil.pid_exists(pid) and _started_at(pid) == t]:
        if time.monotonic() > deadline:
            names = [psutil.Process(pid).name() for pid in alive if psutil.pid_exists(pid)]
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"processes the killed driver started outlived it by 20 s: {names}")
        time.sleep(0.2)
    assert "driver watchdog: driver" in (tmp_path / "killed.log").read_text()
    assert not (killed / "final").exists()  # it really died before the end
    before = training_records(killed)
    assert before and before[-1]["step"] < STEPS - 1

    resumed = finished([sys.executable, "-m", "driver", "--resume", str(killed)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr

    # Every step is recorded exactly once, and each equals the uninterrupted run's step: same
    # prompts and samples (rewards, lengths), same updates (loss, KL, policy version).
    a, b = training_records(whole), training_records(killed)
    assert [r["step"] for r in b] == list(range(STEPS))
    for ra, rb in zip(a, b, strict=True):
        for key in (
            "rollout/reward_mean",
            "rollout/response_tokens",
            "learner/loss",
            "learner/kl_to_reference",
            "learner/policy_version",
            "learner/pairs",
        ):
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


SHORT = [
    "checkpoint.every=4",
    "eval.every=0",
    "eval.num_prompts=8",
    "eval.samples_per_prompt=2",
    "rollout.prompts_per_step=8",
    "tracking.plots=false",
    "tracking.tensorboard=false",
    "rollout.max_staleness=1",  # the stop's checkpoint holds a step already sampled and judged
]


def short_command(out: Path, *flags: str) -> list[str]:
    args = [sys.executable, "-m", "driver", "--steps", "4", "--output", str(out), *flags]
    for item in SHORT:
        args += ["--set", item]
    return args


def files(out: Path) -> dict[str, tuple[int, int]]:
    """Every file's mtime and size, but the lock's (each launch writes its pid there)."""
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in out.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def short_whole(builtin_models, tmp_path_factory) -> Path:
    """The short run, uninterrupted: what a stopped and continued one must repeat."""
    whole = tmp_path_factory.mktemp("short") / "whole"
    done = finished(short_command(whole))
    assert done.returncode == 0, done.stderr[-3000:]
    return whole


def stop_after_a_step(command: list[str], out: Path, log: Path) -> int:
    """Start `command`, SIGTERM its driver once a step is recorded; the steps done at the boundary."""
    proc = subprocess.Popen(
        command, cwd=REPO, env=environment(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=log.open("w")
    )
    try:
        deadline = time.monotonic() + 600
        while not (out / "samples.jsonl").is_file() or not (out / "samples.jsonl").read_text().strip():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no step within 600 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)  # step 0 is written: the signal lands in step 1 (or between steps)
        assert proc.wait(timeout=300) == 75, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    at = len((out / "samples.jsonl").read_text().splitlines())
    assert 1 <= at < 4
    return at


def same_as(whole: Path, other: Path) -> None:
    """`other` recorded, sampled, trained and evaluated what the uninterrupted `whole` did."""
    assert (other / "samples.jsonl").read_text() == (whole / "samples.jsonl").read_text()
    for ra, rb in zip(training_records(whole), training_records(other), strict=True):
        for key in ("step", "rollout/reward_mean", "learner/loss", "learner/kl_to_reference", "learner/policy_version"):
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])
    wa, wb = load_file(whole / "final" / "model.safetensors"), load_file(other / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa = json.loads((whole / "summary.json").read_text())["final_eval"]
    assert sa == json.loads((other / "summary.json").read_text())["final_eval"]


@pytest.mark.slow
def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint_and_the_same_command_continues(short_whole, tmp_path):
    """SIGTERM to the driver (not its process group) mid-step: the step finishes, a checkpoint is
    written at the boundary (off the every-4 schedule) holding the step sampled one ahead
    (max_staleness 1), exit 75 with one line and no traceback;
    the same command with --resume-mode auto continues it to what the uninterrupted run did, and a
    third launch finds it finished and changes nothing."""
    whole, stopped = short_whole, tmp_path / "stopped"
    log = tmp_path / "stopped.log"
    at = stop_after_a_step(short_command(stopped, "--resume-mode", "auto"), stopped, log)
    text = log.read_text()
    assert f"driver: stopped by SIGTERM after step {at} of 4; checkpoint " in text.strip().splitlines()[-1]
    assert [p.name for p in checkpoints.complete_checkpoints(stopped)] == [f"step-{at:06d}"]
    (stop_checkpoint,) = checkpoints.complete_checkpoints(stopped)
    assert checkpoints.load_state(stop_checkpoint).in_flight == (at,)  # step `at`, sampled one ahead
    assert not (stopped / "final").exists() and not (stopped / "summary.json").exists()

    resumed = finished(short_command(stopped, "--resume-mode", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from {stopped / 'checkpoints' / f'step-{at:06d}'} (step {at} of 4)" in resumed.stderr

    same_as(whole, stopped)
    assert [p.name for p in checkpoints.complete_checkpoints(stopped)] == [f"step-{at:06d}", "step-000004"]

    before = files(stopped)
    again = finished(short_command(stopped, "--resume-mode", "auto"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished its 4 steps (summary.json): nothing to do" in again.stderr
    assert files(stopped) == before


@pytest.mark.slow
def test_a_run_kept_in_storage_continues_on_another_machine_from_its_uri(short_whole, tmp_path, s3_bucket):
    """With `storage` an s3:// URI (a real S3 server: moto), the learner uploads its checkpoints
    there and the driver copies the run directory there; the run directory lost with its machine,
    `--resume URI --output NEW` fetches the records and continues from the checkpoint in storage to
    what the uninterrupted run did. (A shared filesystem, file://, takes the rename path of every
    other run's checkpoints: tests/driver/test_checkpoints.py.)"""
    uri = s3_bucket + "/runs/x"
    store, first = UPath(uri), tmp_path / "first"
    at = stop_after_a_step(short_command(first, "--set", f"storage={uri}"), first, tmp_path / "first.log")
    assert not (first / "checkpoints").exists()  # checkpoints are in the storage only
    assert [p.name for p in checkpoints.complete_checkpoints(uri)] == [f"step-{at:06d}"]
    assert (store / "metrics.jsonl").read_text() == (first / "metrics.jsonl").read_text()  # copied with the checkpoint
    shutil.rmtree(first)  # the driver's machine is gone

    elsewhere = tmp_path / "elsewhere"
    resumed = finished([sys.executable, "-m", "driver", "--resume", uri, "--output", str(elsewhere)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from {uri}/checkpoints/step-{at:06d} (step {at} of 4)" in resumed.stderr
    same_as(short_whole, elsewhere)
    assert [p.name for p in checkpoints.complete_checkpoints(uri)] == [f"step-{at:06d}", "step-000004"]
    assert (store / "summary.json").read_text() == (elsewhere / "summary.json").read_text()  # the end copied too
    assert (store / "final" / "model.safetensors").read_bytes() == (elsewhere / "final" / "model.safetensors").read_bytes()
    assert not (elsewhere / "checkpoints").exists()
