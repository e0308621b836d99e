"""Judges that fail, in a real run (`python -m driver`): a judge with `on_failure: skip` whose
verdicts are missing for some prompts (NaN for every "... 3 ..." prompt) trains on the others, the
missing ones counted; a manifest saved mid-run whose judge passes every file check but answers NaN
is rejected by its trial on real rollouts, and the run finishes on the old judge. While it runs,
nothing the run started (driver, Ray, learner, vLLM, judges) listens beyond 127.0.0.1."""

from __future__ import annotations

import json
import math

import psutil
import pytest

from tests.e2e.test_judge_swap import launch_with_manifest, read_jsonl, wait_for

STEPS = 16
FLAKY = (
    "judges:\n  - {name: flaky, kind: rule, function: 'tests.rollout.faulty_rules:nan_for_three',\n"
    "     on_failure: skip, max_skipped_fraction: 0.5}\n"
)
NAN = "judges:\n  - {name: nan, kind: rule, function: 'tests.rollout.faulty_rules:returns_nan'}\n"
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def listeners(pid: int) -> list[tuple[str, str, int]]:
    """(process, address, port) of every listening socket of `pid` and its descendants."""
    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet") if hasattr(proc, "net_connections") else proc.connections("inet")
            name = proc.name()
        except psutil.Error:
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


@pytest.mark.slow
def test_skipped_verdicts_and_a_rejected_nan_judge_in_a_real_run(builtin_models, tmp_path):
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        proc, manifest, out = launch_with_manifest(tmp_path, FLAKY, STEPS, log)
        try:
            wait_for(lambda: len(read_jsonl(out / "metrics.jsonl")) >= 3, proc, "step 3")
            listening = listeners(proc.pid)
            manifest.write_text(NAN)
            wait_for(lambda: any(e["event"] == "rejected" for e in read_jsonl(out / "judges.jsonl")), proc, "the rejection")
            assert proc.wait(timeout=600) == 0, log_path.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()

    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names and any("Learner" in n for n in names), names
    assert [x for x in listening if x[1] not in LOOPBACK] == []

    (rejected,) = read_jsonl(out / "judges.jsonl")
    assert rejected["event"] == "rejected" and rejected["judges"] == ["flaky"]
    assert "judge 'nan' (kind rule) failed its trial on" in rejected["reason"] and "returned nan" in rejected["reason"]
    assert "judge swap at step" in text and "keeping the current judges" in text

    records = [r for r in read_jsonl(out / "metrics.jsonl") if "learner/policy_version" in r]
    assert [r["step"] for r in records] == list(range(STEPS))
    assert records[-1]["learner/policy_version"] == STEPS  # trained on through both
    failures = [r["judges/flaky/failures"] for r in records]
    assert failures == sorted(failures) and failures[-1] > 0  # cumulative, and some prompts had no verdict
    assert all(r["judges/flaky/skipped"] == r["judges/flaky/failures"] for r in records)  # whole groups: K each
    assert failures[-1] <= 0.5 * STEPS * 4 * 4  # under the cap (prompts x K per step)
    assert "prompt groups dropped from training for missing verdicts" in text
    for s in read_jsonl(out / "samples.jsonl"):  # what was trained on carries no missing verdict
        assert all(math.isfinite(x) for e in s["examples"] for x in e["rewards"].values()), s
    assert json.loads((out / "summary.json").read_text())["final_eval"] is not None
