"""driver/checkout.py: the runtime_env that lets Ray's workers import the project from its checkout
(the project is not installed: README, "Installation"), for each way the driver reaches a cluster."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

import driver.cluster
from driver.checkout import CHECKOUT, JOB_CONFIG_ENV, worker_runtime_env
from protocols.config import SecurityConfig

HERE = str(CHECKOUT)


def job(runtime_env: dict) -> dict[str, str]:
    """The environment of a `ray job submit` entrypoint whose job has `runtime_env`."""
    return {JOB_CONFIG_ENV: json.dumps({"runtime_env": runtime_env, "metadata": {}})}


@pytest.mark.parametrize(
    ("pythonpath", "expected"),
    [
        (None, HERE),
        ("", HERE),
        (f"/a{os.pathsep}/b", f"{HERE}{os.pathsep}/a{os.pathsep}/b"),
        (
            f"/a{os.pathsep}{os.pathsep}{HERE}{os.pathsep}",
            f"{HERE}{os.pathsep}/a",
        ),  # no empty entry (the worker's cwd), no repeat
    ],
)
def test_a_local_cluster_puts_the_checkout_before_the_drivers_pythonpath(pythonpath, expected):
    environ = {} if pythonpath is None else {"PYTHONPATH": pythonpath}
    assert worker_runtime_env(joined=False, environ=environ) == {"env_vars": {"PYTHONPATH": expected}}
    # a local cluster is this process's own, whatever job it runs in
    assert worker_runtime_env(joined=False, environ={**environ, **job({"working_dir": "."})}) == {
        "env_vars": {"PYTHONPATH": expected}
    }


def test_a_joined_cluster_puts_the_checkout_before_each_nodes_pythonpath():
    joined = {"env_vars": {"PYTHONPATH": f"{HERE}{os.pathsep}${{PYTHONPATH}}"}}  # Ray expands it per worker
    assert worker_runtime_env(joined=True, environ={"PYTHONPATH": "/driver/only"}) == joined
    assert worker_runtime_env(joined=True, environ=job({})) == joined
    assert worker_runtime_env(joined=True, environ=job({"env_vars": {"OMP_NUM_THREADS": "1"}})) == joined


@pytest.mark.parametrize(
    "runtime_env",
    [
        {"working_dir": "gcs://_ray_pkg_0123.zip"},  # ray job submit --working-dir .
        {"py_modules": ["gcs://_ray_pkg_4567.zip"]},
        {"env_vars": {"PYTHONPATH": "/elsewhere"}},  # ray.init's own PYTHONPATH would conflict with the job's
    ],
)
def test_a_job_that_ships_the_code_is_left_alone(runtime_env):
    assert worker_runtime_env(joined=True, environ=job(runtime_env)) == {}


def test_connect_passes_the_runtime_env_to_ray_init(monkeypatch):
    calls = []
    monkeypatch.setattr(driver.cluster.ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(driver.cluster.ray, "cluster_resources", lambda: {})
    monkeypatch.setattr(driver.cluster.placement, "required_resources", lambda cfg, judges: {"CPU": 1.0})
    monkeypatch.setattr(driver.cluster.placement, "local_resources", lambda cfg, judges: {})
    monkeypatch.setattr(driver.cluster.placement, "shared_cores_warning", lambda cfg, cores: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    plan = SimpleNamespace(
        cfg=SimpleNamespace(address=None, security=SecurityConfig()), manifest=SimpleNamespace(judges=[]), eval_judge=None
    )

    assert driver.cluster.connect(plan) is True
    assert calls[-1]["address"] == "local"
    assert calls[-1]["runtime_env"] == {"env_vars": {"PYTHONPATH": HERE}}

    plan.cfg.address = "127.0.0.1:6379"
    assert driver.cluster.connect(plan) is False
    assert calls[-1]["runtime_env"] == {"env_vars": {"PYTHONPATH": f"{HERE}{os.pathsep}${{PYTHONPATH}}"}}

    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}))
    assert driver.cluster.connect(plan) is False
    assert calls[-1]["runtime_env"] is None  # the job's working_dir is on the workers' path already


def test_an_actor_with_its_own_env_vars_imports_the_project_from_the_checkout(ray_cluster):
    """The job's PYTHONPATH (tests/conftest.py starts the cluster as the driver does) and an actor's
    own env_vars (deploy/placement.py gives every actor some) are merged, not replaced."""

    @ray_cluster.remote(num_cpus=0)
    class Probe:
        def where(self) -> tuple[str, str, str | None]:
            import protocols

            return protocols.__file__, os.environ.get("PYTHONPATH", ""), os.environ.get("OMP_NUM_THREADS")

    actor = Probe.options(runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}).remote()
    try:
        module, pythonpath, threads = ray_cluster.get(actor.where.remote(), timeout=300)
    finally:
        ray_cluster.kill(actor)
    assert module == str(CHECKOUT / "protocols" / "__init__.py")
    assert pythonpath.split(os.pathsep)[0] == HERE
    assert threads == "1"
