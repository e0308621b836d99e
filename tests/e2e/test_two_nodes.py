"""Two Ray nodes on this machine: rollout worker and judges pinned to one, the learner to the other,
by custom resources (deploy/configs/two_nodes.yaml); the run goes through `ray job submit
--runtime-env deploy/runtime_env.yaml` and must give the same per-step results, samples, final
weights and final evaluation as the same command on a one-node cluster the driver starts itself
(which holds every custom resource the run names: deploy/placement.py local_resources).

The two-node run stops after STEPS - 2 steps and a second job extends it from its last
checkpoint: the learner, on the node without the driver, sends its checkpoint and final-policy
files to the driver, and is sent the checkpoint's files back to continue (driver/storage.py).

Every timing metric differs between the runs; everything else must be equal, bit for bit: the
same seed draws the same prompts, the sampler re-seeds before each batch, and the learner's
arithmetic does not depend on where it runs (one rank, one thread each side).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.ray_head import RAY, list_state, start_head, start_node, stop_head, stop_node

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
FLAGS = [
    "--config",
    "deploy/configs/two_nodes.yaml",
    "--set",
    "rollout.prompts_per_step=8",
    "--set",
    "eval.every=0",
    "--set",
    "eval.num_prompts=8",
    "--set",
    "checkpoint.every=2",
    "--set",
    "tracking.plots=false",
    "--set",
    "tracking.tensorboard=false",
]


def is_timing(key: str) -> bool:
    """Wall-clock metrics: the only ones allowed to differ between the runs."""
    return key == "time" or key.startswith(("time/", "learner/time/")) or key.endswith(("seconds", "_per_s"))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def job(command: list[str], head) -> str:
    """`ray job submit` to the head; its output (the job's log, tailed), asserted successful."""
    for _ in range(60):  # the dashboard answers before its job agent is registered
        submit = subprocess.run(command, cwd=REPO, env=head.env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in submit.stdout + submit.stderr:
            break
        time.sleep(2)
    text = submit.stdout + submit.stderr
    assert submit.returncode == 0, text[-5000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", text)
    return text


def one_node_run(out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "driver", *FLAGS, "--steps", str(STEPS), "--output", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )


@pytest.mark.slow
def test_two_nodes_pinned_by_custom_resources_give_the_one_node_results(builtin_models, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # short: Ray's socket paths live under them
    head_dir, node_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp")), Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))
    # The one-node reference runs while the two nodes start.
    reference = one_node_run(one, tmp_path / "one.log")
    head_proc = node_proc = None
    try:
        head_proc, head = start_head(tmp_path / "head.log", temp_dir=head_dir, resources={"rollout_node": 100})
        node_proc = start_node(head, tmp_path / "node.log", num_cpus=2, resources={"learner_node": 100}, temp_dir=node_dir)
        assert reference.wait(timeout=600) == 0, (tmp_path / "one.log").read_text()[-3000:]

        submit = [RAY, "job", "submit", "--address", head.dashboard, "--runtime-env", "deploy/runtime_env.yaml", "--"]
        first = job(submit + ["python", "-m", "driver", *FLAGS, "--steps", str(STEPS - 2), "--output", str(two)], head)
        assert f"step {STEPS - 2}/{STEPS - 2} | reward" in first  # the job's log, tailed by `ray job submit`
        assert "learner ranks on other nodes sent" in first and "files for" in first  # checkpoints and final/
        extended = job(submit + ["python", "-m", "driver", "--resume", str(two), "--steps", str(STEPS)], head)
        assert f"from {two / 'checkpoints' / f'step-{STEPS - 2:06d}'} (step {STEPS - 2} of {STEPS})" in extended
        assert "to learner ranks on other nodes through the object store" in extended
        assert f"step {STEPS}/{STEPS} | reward" in extended

        # Where each actor ran: Ray's state API (dead actors included) and the nodes' resources.
        nodes = {n["node_id"]: n for n in list_state(head, "nodes") if n["state"] == "ALIVE"}
        assert len(nodes) == 2
        holder = {
            kind: [i for i, n in nodes.items() if kind in n["resources_total"]] for kind in ("rollout_node", "learner_node")
        }
        assert (
            len(holder["rollout_node"]) == len(holder["learner_node"]) == 1 and holder["rollout_node"] != holder["learner_node"]
        )
        placed = {
            a["name"]: a["node_id"]
            for a in list_state(head, "actors")
            if a.get("name") and not a["name"].startswith("_ray_internal")
        }
        assert placed == {
            "rollout-0": holder["rollout_node"][0],
            "judge-ground-truth-0": holder["rollout_node"][0],
            "eval-judge-ground-truth-0": holder["rollout_node"][0],
            "learner-0": holder["learner_node"][0],
        }
    finally:
        if reference.poll() is None:
            os.killpg(reference.pid, signal.SIGKILL)
            reference.wait()
        if node_proc is not None:
            stop_node(node_proc, node_dir)
        if head_proc is not None:
            stop_head(head_proc, head.gcs_port, head_dir)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(node_dir, ignore_errors=True)

    # The same run: every step's metrics but the timings, the logged samples, the final weights and evaluation.
    a, b = records(one), records(two)
    assert [r["step"] for r in a] == [*range(STEPS), STEPS - 1]  # steps, then the final eval
    assert [r["step"] for r in b] == [*range(STEPS - 2), STEPS - 3, STEPS - 2, STEPS - 1, STEPS - 1]  # + the first end's eval
    b = b[: STEPS - 2] + b[STEPS - 1 :]
    compared = set()
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra.keys() - {k for k in ra if is_timing(k)}:
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])
            compared.add(key)
    assert {"learner/loss", "learner/kl_to_reference", "rollout/reward_mean", "sync/max_probe_gap", "eval/win_rate"} <= compared
    assert (one / "samples.jsonl").read_text() == (two / "samples.jsonl").read_text()
    wa, wb = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (
        json.loads((one / "summary.json").read_text())["final_eval"]
        == json.loads((two / "summary.json").read_text())["final_eval"]
    )
