"""Shared fixtures: the built-in tiny models (built once, cached) and one Ray cluster per session.

vLLM runs in-process in tests (as in the rollout actor), so its environment is set here before
anything imports vllm.
"""

from __future__ import annotations

import os

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
