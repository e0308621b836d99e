"""Shared fixtures: the built-in tiny models (built once, cached) and one Ray cluster per session.

vLLM runs in-process in tests (as in the rollout actor), so its environment is set here before
anything imports vllm.
"""

from __future__ import annotations

import os
import re

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def builtin_models():
    from driver.builtin import ensure_builtin_models

    return ensure_builtin_models()


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct converted from the packaged GGUF (cached after the first conversion)."""
    from driver.builtin import ensure_smollm2

    return ensure_smollm2()


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server (moto's, in its own process: its Flask app must stay out of this
    one, where vLLM engines start in-process and trip over Flask's context proxies) on a free local
    port. fsspec's `s3` (s3fs) is pointed at it: here through fsspec's config, in child processes
    (drivers, Ray workers) through FSSPEC_S3_ENDPOINT_URL and test credentials in the environment."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import fsspec.config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from moto.server import main; main(sys.argv[1:])",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto's S3 server did not start on {endpoint} within 60 s") from None
            time.sleep(0.2)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint
    try:
        yield endpoint
    finally:
        fsspec.config.conf["s3"].pop("endpoint_url", None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_endpoint, request) -> str:
    """A new, empty bucket on the test S3 server, named after the test: its `s3://` URI."""
    import fsspec

    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:55] + "-b"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"


def _start_session_ray():
    import ray

    from driver.checkout import worker_runtime_env

    # The project is not installed: its workers import it from this checkout, as a run's do.
    ray.init(
        address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, runtime_env=worker_runtime_env(joined=False)
    )


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    _start_session_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def without_session_ray():
    """For a module that starts its own cluster in this process (ray.cluster_utils): the session's
    cluster, if one is up, is shut down first and started again afterwards, so the module's
    `ray.init` is not refused and later `ray_cluster` tests are not left talking to a dead cluster
    (a bare `.remote()` would quietly start a new one without the checkout on its path)."""
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
    if was_up:
        _start_session_ray()
