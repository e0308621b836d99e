"""Judges swapped live: the manifest is edited while `python -m driver` runs.

A user runs with `--judges my.yaml`, then saves a new panel (the three annotator groups instead of
the ground truth), then saves a broken manifest, then a self judge. The run must switch to the new
judges at a step boundary, judge every step exactly once (no step lost, none judged by both
panels), reject the broken file with its reason, give a self judge started mid-run the current
policy weights (and every later update), and keep training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 60
GROUPS = (REPO / "deploy/judges/groups.yaml").read_text()
BROKEN = "judges:\n  - {name: oracle, kind: oracle, path: nowhere}\n"
SELF = "judges:\n  - {name: self, kind: self}\n"  # the policy judging itself: must get the current weights


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def launch_with_manifest(tmp_path: Path, manifest_text: str, steps: int, log) -> tuple[subprocess.Popen, Path, Path]:
    """`python -m driver --algo mnpo` on the embedded default with a small batch, judged by the
    manifest file tmp_path/my-judges.yaml (written from `manifest_text`), output in tmp_path/run,
    stdout and stderr to `log`. Returns (process, manifest path, output directory)."""
    manifest = tmp_path / "my-judges.yaml"
    manifest.write_text(manifest_text)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "driver", "--algo", "mnpo", "--steps", str(steps), "--output", str(out),
            "--judges", str(manifest)]  # fmt: skip
    for item in ("rollout.prompts_per_step=4", "eval.every=0", "eval.num_prompts=8", "eval.samples_per_prompt=2",
                 "checkpoint.every=0", "tracking.plots=false"):  # fmt: skip
        args += ["--set", item]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, manifest, out


@pytest.mark.slow
def test_manifest_edited_mid_run(builtin_models, tmp_path):
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        proc, manifest, out = launch_with_manifest(tmp_path, (REPO / "deploy/judges/default.yaml").read_text(), STEPS, log)
        try:
            wait_for(lambda: len(read_jsonl(out / "metrics.jsonl")) >= 3, proc, "step 3")
            manifest.write_text(GROUPS)
            wait_for(lambda: any(e["event"] == "swapped" for e in read_jsonl(out / "judges.jsonl")), proc, "the swap")
            manifest.write_text(BROKEN)
            wait_for(lambda: any(e["event"] == "rejected" for e in read_jsonl(out / "judges.jsonl")), proc, "the rejection")
            manifest.write_text(SELF)
            wait_for(lambda: len(read_jsonl(out / "judges.jsonl")) == 3, proc, "the swap to the self judge")
            assert proc.wait(timeout=600) == 0, log_path.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()

    swapped, rejected, to_self = read_jsonl(out / "judges.jsonl")
    assert swapped["event"] == "swapped" and rejected["event"] == "rejected" and to_self["event"] == "swapped"
    first_new, first_self = swapped["step"], to_self["step"]
    assert 3 <= first_new < rejected["step"] <= first_self < STEPS
    assert to_self["judges"] == ["self"] and to_self["retired"] == ["exact-count", "topical", "varied"]
    assert swapped["judges"] == ["topical", "exact-count", "varied"]
    assert swapped["started"] == ["exact-count", "topical", "varied"] and swapped["retired"] == ["ground-truth"]
    assert "oracle" in rejected["reason"] and rejected["judges"] == swapped["judges"]
    assert "judges swapped from step" in text and "was rejected; keeping the current judges" in text

    samples = read_jsonl(out / "samples.jsonl")
    assert [s["step"] for s in samples] == list(range(STEPS))  # every step once: nothing lost or repeated
    for s in samples:
        expected = (
            {"ground-truth"}
            if s["step"] < first_new
            else {"topical", "exact-count", "varied"}
            if s["step"] < first_self
            else set()
        )  # the self judge gives preferences, no rewards
        assert all(set(e["rewards"]) == expected for e in s["examples"]), s

    records = [r for r in read_jsonl(out / "metrics.jsonl") if "learner/policy_version" in r]
    assert [r["step"] for r in records] == list(range(STEPS))
    assert all(r["judges/swaps"] == (r["step"] >= first_new) + (r["step"] >= first_self) for r in records)
    # the self judge's weight syncs are probe-checked like the rollout workers'
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in records)
    assert all(r["learner/pairs"] > 0 for r in records if r["step"] > first_self)  # its verdicts train
    assert records[-1]["judges/rejected_manifests"] == 1.0
    assert records[-1]["learner/policy_version"] == STEPS  # training went on through both edits
