"""A run on a `ray start --head` cluster publishes its metrics on the Prometheus endpoint, under the
names the README documents (`ray_online_rlhf_<key>`, tagged with the run name)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER_GAUGES = [
    "learner_loss",
    "learner_kl_to_reference",
    "learner_grad_norm",
    "learner_lr",
    "learner_policy_version",
    "learner_staleness",
    "rollout_reward_mean",
    "rollout_tokens_per_s",
    "rollout_queue_depth",
    "sync_seconds",
    "judge_seconds",
]
ACTOR_METRICS = ["judge_latency_seconds_count", "judge_rollouts_total", "rollout_tokens_total", "sync_load_seconds_count"]


def scrape(url: str) -> dict[str, float]:
    """'ray_online_rlhf_<name>' -> value of the first sample of each metric (labels dropped)."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:  # the metrics agent starts a little after the dashboard
        return {}
    found = {}
    for line in text.splitlines():
        match = re.match(r"^ray_online_rlhf_(\w+)\{(.*)\} (\S+)$", line)
        if match:
            found.setdefault(match.group(1), (match.group(2), float(match.group(3))))
    return found


@pytest.mark.slow
def test_run_metrics_reach_the_prometheus_endpoint(builtin_models, head_node, tmp_path):
    run = tmp_path / "metrics-run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driver",
            "--steps",
            "400",
            "--address",
            head_node.gcs,
            "--output",
            str(run),
            "--set",
            "eval.every=0",
            "--set",
            "eval.num_prompts=8",
        ],
        cwd=REPO,
        env={**head_node.env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "driver.log").open("w"),
        start_new_session=True,
    )
    try:
        # No wall-clock deadline: the endpoint must show every metric while the run is going (400
        # steps, minutes); the run ending first is the failure, however slow the machine.
        found: dict = {}
        wanted = DRIVER_GAUGES + ACTOR_METRICS
        while not all(name in found for name in wanted):
            if proc.poll() is not None:
                missing = [name for name in wanted if name not in found]
                raise AssertionError(
                    f"the run ended ({proc.returncode}) and {head_node.metrics} still lacks "
                    f"{missing}:\n" + (tmp_path / "driver.log").read_text()[-3000:]
                )
            found = scrape(head_node.metrics)
            time.sleep(1)
        labels, version = found["learner_policy_version"]
        assert f'run="{run.name}"' in labels
        assert version >= 1.0
        assert 0.0 <= found["rollout_reward_mean"][1] <= 1.0
        assert found["rollout_tokens_total"][1] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
