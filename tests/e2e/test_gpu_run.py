"""`python -m driver` on CUDA GPUs: vLLM rollouts on a GPU, the DeepSpeed learner over NCCL, and
(with two GPUs or more) the weights broadcast from learner rank 0 to the vLLM workers over NCCL.

Marked `gpu`; skipped unless torch sees CUDA and the installed vLLM is its CUDA build (`GPU=1 bash
deploy/setup.sh`). On such a machine: `python -m pytest -m gpu tests/e2e/test_gpu_run.py`. What the
CPU suite checks of the same code: the gloo broadcast in real processes
(tests/common/test_weight_broadcast.py) and the fault run with `learner.weight_sync=broadcast`
(tests/e2e/test_faults.py).
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.driver_runs import read_metrics, run_driver


def cuda_vllm_gpus() -> int:
    """GPUs a run can use: 0 without CUDA in torch or without vLLM's CUDA platform."""
    import torch

    if not torch.cuda.is_available():
        return 0
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return 0
    return torch.cuda.device_count() if current_platform.is_cuda() else 0


GPUS = cuda_vllm_gpus()
pytestmark = pytest.mark.gpu


def check_a_gpu_run(result, out, steps: int) -> None:
    log = result.stderr
    assert f"step {steps}/{steps} | " in log and "win rate vs starting policy" in log
    assert ", on cuda:0," in log and "(nccl)" in log  # where the learner rank ran, and its process group
    records, final = read_metrics(out)
    assert [r["learner/policy_version"] for r in records] == [float(s + 1) for s in range(steps)]
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in records)  # vLLM on the GPU serves what DeepSpeed trained
    assert any(r.get("learner/grad_norm", 0.0) > 0.0 for r in records)
    summary = json.loads((out / "summary.json").read_text())["final_eval"]["vs_start"]
    assert summary["win_rate"] == final["eval/win_rate"] and summary["num_prompts"] == 8


@pytest.mark.skipif(GPUS < 1, reason="needs a CUDA GPU and vLLM's CUDA build")
def test_a_run_on_one_gpu_shared_by_the_rollout_worker_and_the_learner(builtin_models, tmp_path):
    """Both actors take half of one GPU (vLLM capped at a fifth of its memory); the weights go
    through the object store (NCCL takes one device per member, so a broadcast needs two GPUs)."""
    out = tmp_path / "run"
    sets = ("rollout.num_gpus=0.5", "learner.num_gpus=0.5", "rollout.gpu_memory_utilization=0.2")
    check_a_gpu_run(run_driver(out, *sets, steps=3), out, 3)


@pytest.mark.skipif(GPUS < 2, reason="needs two CUDA GPUs and vLLM's CUDA build")
def test_the_weights_are_broadcast_over_nccl_to_the_vllm_worker(builtin_models, tmp_path):
    out = tmp_path / "run"
    sets = (
        "rollout.num_gpus=1",
        "learner.num_gpus=1",
        "rollout.gpu_memory_utilization=0.3",
        "learner.weight_sync=broadcast",
    )
    result = run_driver(out, *sets, steps=3)
    assert "weight broadcast group formed: learner-0 and 1 rollout workers over nccl" in result.stderr
    assert "the weight broadcast failed" not in result.stderr
    check_a_gpu_run(result, out, 3)
