"""A `ray start --head` cluster for end-to-end tests (imported as tests.e2e.ray_head), and more
nodes joining it (`start_node`).

Each node runs with `--block` in its own process group so a test can stop exactly this cluster
(`ray stop` would stop every Ray instance on the machine, other tests' and users' included). Token authentication stays on, as users
get it from Ray 2.60; clients are told to send the token with RAY_AUTH_MODE=token. Metrics are
reported every second (instead of 10 s) so a test can read them from the Prometheus endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class Head:
    dashboard: str  # http://127.0.0.1:PORT
    gcs: str  # 127.0.0.1:PORT, for ray.init / --address
    metrics: str  # http://127.0.0.1:PORT/metrics (Prometheus)
    env: dict[str, str]  # what clients of this cluster need in their environment
    gcs_port: int
    temp_dir: Path | None = None  # --temp-dir (Ray's metrics discovery file is written there); None: Ray's default


STOP_GRACE_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(
    log: Path,
    timeout_s: float = 120.0,
    temp_dir: Path | None = None,
    num_cpus: int = 2,
    resources: dict[str, float] | None = None,
) -> tuple[subprocess.Popen, Head]:
    """`temp_dir` (keep it short: Ray's socket paths live under it) gives the cluster its own
    session directory, so files such as the metrics discovery file are this cluster's alone.
    `resources`: the head's custom resources (`ray start --resources`)."""
    dashboard, gcs, metrics, agent = free_port(), free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_metrics_report_interval_ms": "1000",
        # as after `source .venv/bin/activate`: a job's `python` is this environment's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--num-cpus",
            str(num_cpus),
            "--port",
            str(gcs),
            "--metrics-export-port",
            str(metrics),
            *(["--resources", json.dumps(resources)] if resources else []),
            # The job agent's HTTP port defaults to 52365, which any other Ray instance on this machine
            # (the test session's own cluster, for one) already holds: then no job can be submitted.
            "--dashboard-agent-listen-port",
            str(agent),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--include-dashboard",
            "true",
            *(["--temp-dir", str(temp_dir)] if temp_dir else []),
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    head = Head(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", f"http://127.0.0.1:{metrics}/metrics", env, gcs, temp_dir)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(head.dashboard, timeout=2)
            return proc, head
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_head(proc, gcs)
                raise RuntimeError("the Ray head did not come up:\n" + log.read_text()[-3000:]) from None
            time.sleep(1)


def stop_head(proc: subprocess.Popen, gcs_port: int, temp_dir: Path | None = None) -> None:
    """Stop this cluster only: SIGTERM its process group (SIGKILL after 3 s: a test's cluster holds
    nothing to save, and `ray start --block` takes 15 s or more to act on SIGTERM), then SIGKILL
    whatever still serves its GCS port, or names its `temp_dir` (Ray's daemons do not all stay in
    the group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    _kill_matching(
        lambda cmdline: (
            f":{gcs_port}" in cmdline or f"port={gcs_port}" in cmdline or (temp_dir is not None and str(temp_dir) in cmdline)
        )
    )


def start_node(
    head: Head,
    log: Path,
    num_cpus: int,
    resources: dict[str, float] | None = None,
    temp_dir: Path | None = None,
    nodes: int = 2,
    timeout_s: float = 120.0,
) -> subprocess.Popen:
    """Another node of `head`'s cluster on this machine (`ray start --address`), with `num_cpus`
    logical CPUs and custom `resources`; returns once the cluster has `nodes` live nodes. Stop it
    with `stop_node`, before the head. Its ports are its own: the job agent's default (52365) and
    the head's are taken."""
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--address",
            head.gcs,
            "--block",
            "--num-cpus",
            str(num_cpus),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
            *(["--resources", json.dumps(resources)] if resources else []),
            *(["--temp-dir", str(temp_dir)] if temp_dir else []),
        ],
        env=head.env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if len([n for n in list_state(head, "nodes") if n["state"] == "ALIVE"]) >= nodes:
                return proc
        except RuntimeError:
            pass  # the state API answered nothing yet
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_node(proc, temp_dir)
            raise RuntimeError(f"the node did not join {head.gcs}:\n" + log.read_text()[-3000:])
        time.sleep(1)


def stop_node(proc: subprocess.Popen, temp_dir: Path | None = None) -> None:
    """SIGTERM a `start_node` node's process group (SIGKILL after STOP_GRACE_S), then SIGKILL
    whatever still names its `temp_dir`; `stop_head` then kills what is left of the cluster (its
    processes name the head's GCS port)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    if temp_dir is not None:
        _kill_matching(lambda cmdline: str(temp_dir) in cmdline)


def _kill_matching(match) -> None:
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid != os.getpid() and match(" ".join(process.info["cmdline"] or ())):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def list_state(head: Head, what: str) -> list[dict]:
    """Ray's state API through its CLI (`ray list nodes|actors ... --detail`): every entry, dead ones included."""
    out = subprocess.run(
        [RAY, "list", what, "--address", head.dashboard, "--detail", "--format", "json", "--limit", "10000"],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return json.loads(out.stdout) if out.returncode == 0 else None
    except json.JSONDecodeError:
        pass
    raise RuntimeError(f"ray list {what} (exit {out.returncode}): {out.stdout[-1000:]} {out.stderr[-2000:]}")
