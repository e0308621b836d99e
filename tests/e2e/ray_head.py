"""A `ray start --head` cluster for end-to-end tests (imported as tests.e2e.ray_head).

The head runs with `--block` in its own process group so a test can stop exactly this cluster
(`ray stop` would stop every Ray instance on the machine). Token authentication stays on, as users
get it from Ray 2.60; clients are told to send the token with RAY_AUTH_MODE=token. Metrics are
reported every second (instead of 10 s) so a test can read them from the Prometheus endpoint.
"""

from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(log: Path, timeout_s: float = 120.0, temp_dir: Path | None = None) -> tuple[subprocess.Popen, Head]:
    """`temp_dir` (keep it short: Ray's socket paths live under it) gives the cluster its own
    session directory, so files such as the metrics discovery file are this cluster's alone."""
    dashboard, gcs, metrics, agent = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_metrics_report_interval_ms": "1000",
           # as after `source .venv/bin/activate`: a job's `python` is this environment's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs), "--metrics-export-port", str(metrics),
         # The job agent's HTTP port defaults to 52365, which any other Ray instance on this machine
         # (the test session's own cluster, for one) already holds: then no job can be submitted.
         "--dashboard-agent-listen-port", str(agent),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
         *(["--temp-dir", str(temp_dir)] if temp_dir else [])],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    head = Head(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", f"http://127.0.0.1:{metrics}/metrics", env, gcs,
                temp_dir)
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


def stop_head(proc: subprocess.Popen, gcs_port: int) -> None:
    """Stop this cluster only: SIGTERM its process group, then SIGKILL whatever still serves its
    GCS port (Ray's daemons do not all stay in the group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    marker = f":{gcs_port}"
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if process.pid != os.getpid() and (marker in cmdline or f"port={gcs_port}" in cmdline):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
