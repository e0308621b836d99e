"""The actors' repr (actors/status.py): what the dashboard's Actors table shows as Repr.

Ray records an actor's repr once, when its __init__ returns: the state API (and the Actors table,
which reads the same GCS record) must show name, role and judge kind there, and nothing that
goes stale. repr() of the live actor adds what it has done since: policy version, last step,
throughput, judged rollouts, failures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from actors.status import ActorStatus, model_label

REPO = Path(__file__).resolve().parents[2]


def test_status_line_grows_with_what_the_actor_did():
    status = ActorStatus("rollout-0", "rollout worker, vLLM cache/policy (float32)", rate_unit="tok/s")
    assert str(status) == "rollout-0 | rollout worker, vLLM cache/policy (float32)"
    status.served(11, 2104.0, 2.0)
    status.policy_version = 12
    status.details["sync"] = "synced v12 in 0.04s"
    assert (
        str(status)
        == "rollout-0 | rollout worker, vLLM cache/policy (float32) | policy v12 | step 11 | 1052 tok/s | synced v12 in 0.04s"
    )
    status.served(12, 3.0, 2.0)  # slow: two decimals
    assert "| step 12 | 1.50 tok/s |" in str(status)
    status.served(13, 5.0, 0.0)  # no measurable time: no rate rather than a division by zero
    assert "step 13 | synced" in str(status) and "tok/s" not in str(status)


def test_model_label_keeps_the_informative_end_of_a_path():
    assert model_label("/root/.cache/online-rlhf/wordlist-4f204371a22c/policy") == "wordlist-4f204371a22c/policy"
    assert model_label("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_state_api_records_identity_and_repr_reports_live_state(monitored_head):
    probe = subprocess.run(
        [sys.executable, str(REPO / "tests" / "monitoring" / "actors_probe.py"), monitored_head.gcs, monitored_head.dashboard],
        cwd=REPO,
        env=monitored_head.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    recorded, live = found["recorded"], found["live"]

    # What the dashboard's Actors table shows (Ray's record, taken when __init__ returned).
    assert {name: (a["state"], a["class_name"]) for name, a in recorded.items()} == {
        "judge-ground-truth-0": ("ALIVE", "JudgeActor"),
        "eval-judge-ground-truth-0": ("ALIVE", "JudgeActor"),
        "judge-broken-0": ("ALIVE", "JudgeActor"),
        "learner-0": ("ALIVE", "LearnerActor"),
    }
    assert recorded["judge-ground-truth-0"]["repr_name"] == "judge-ground-truth-0 | judge ground-truth, kind rule"
    assert recorded["eval-judge-ground-truth-0"]["repr_name"] == "eval-judge-ground-truth-0 | eval judge ground-truth, kind rule"
    assert recorded["judge-broken-0"]["repr_name"] == "judge-broken-0 | judge broken, kind rule"
    assert recorded["learner-0"]["repr_name"] == "learner-0 | learner rank 0/1"

    # What the actors say now: the last step they served, their throughput, what they judged.
    assert re.fullmatch(
        r"judge-ground-truth-0 \| judge ground-truth, kind rule \| step 7 \| [0-9.]+ rollouts/s "
        r"\| 9 judged",
        live["judge-ground-truth-0"],
    ), live
    assert re.fullmatch(
        r"eval-judge-ground-truth-0 \| eval judge ground-truth, kind rule \| step 9 \| [0-9.]+ "
        r"rollouts/s \| 2 judged",
        live["eval-judge-ground-truth-0"],
    ), live
    assert live["judge-broken-0"] == "judge-broken-0 | judge broken, kind rule | 1 failed (last at step 8: JudgeOutputError)"
    assert live["learner-0"] == "learner-0 | learner rank 0/1"  # not set up: nothing trained yet
