"""What the project listens on: a Ray cluster the driver starts (driver/cluster.py `connect`) binds
every service, the unauthenticated Prometheus metrics endpoint included, to 127.0.0.1 by default
(`security.local_cluster_bind: loopback`). Checked on the real sockets of a cluster started in a
child process (this test session has its own cluster), from the child's whole process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from protocols import RunConfig

REPO = Path(__file__).resolve().parents[2]

LISTENERS = r"""
import json, sys, time
import psutil, ray
from driver.cluster import connect
from driver.plan import resolve_plan
from protocols import RunConfig

plan = resolve_plan(RunConfig.model_validate(json.loads(sys.argv[1])), None)
assert connect(plan)

@ray.remote
def node_address():
    return ray.util.get_node_ip_address()

address = ray.get(node_address.remote())
time.sleep(3)  # the dashboard agent opens its metrics endpoint a moment after the node is up
me = psutil.Process()
found = []
for proc in [me, *me.children(recursive=True)]:
    try:
        conns = proc.net_connections(kind="inet") if hasattr(proc, "net_connections") else proc.connections("inet")
        name = proc.name()
    except psutil.Error:
        continue
    found += [[name, c.laddr.ip, c.laddr.port] for c in conns if c.status == psutil.CONN_LISTEN]
ray.shutdown()
print("LISTENERS " + json.dumps({"address": address, "listeners": found}))
"""


def listeners(tmp_path, cfg: RunConfig) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", LISTENERS, cfg.model_dump_json()], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("LISTENERS ")]
    return json.loads(line.removeprefix("LISTENERS "))


def test_a_local_cluster_listens_on_loopback_only_by_default(tmp_path):
    assert RunConfig().security.local_cluster_bind == "loopback"
    seen = listeners(tmp_path, RunConfig(output=str(tmp_path / "run")))
    assert seen["address"] == "127.0.0.1"  # the node's address, as workers and actors see it
    names = {name for name, _, _ in seen["listeners"]}
    assert {"gcs_server", "raylet"} <= names and any("DashboardAgent" in n for n in names), names  # metrics included
    exposed = [x for x in seen["listeners"] if x[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert exposed == [], exposed


def test_loopback_mode_is_set_only_around_the_start_of_the_node():
    from ray._private import ray_constants

    from driver.cluster import loopback_node

    before = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_node(True):
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.ENABLE_RAY_CLUSTER == before
    with loopback_node(False):  # security.local_cluster_bind: network: Ray's own default
        assert ray_constants.ENABLE_RAY_CLUSTER == before
