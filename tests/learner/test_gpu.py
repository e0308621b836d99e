"""The learner on a CUDA GPU: DeepSpeed ZeRO-2 and ZeRO-3 over NCCL (world size 1), fp32 and bf16,
on the built-in tiny model. Marked `gpu` and skipped without a GPU; run with
`DS_ACCELERATOR=cuda python -m pytest -m gpu tests/learner/test_gpu.py` (BENCHMARKS.md records
what it printed on a lent H200).

Checked against hand-computed values: at the first step the policy is its own reference, so every
pair's implicit reward margin is 0 and DPO's loss is -log sigmoid(0) = log 2 exactly (Rafailov et
al. 2023, eq. 7), whatever the batch. The exported weights (what the rollout workers are sent)
reproduce the learner's probe logprobs in a separate HF model on the GPU, which is the check every
weight sync makes (rollout/sync.py)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from tests.learner.engine_helpers import judged_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def batch(builtin_models):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(builtin_models.policy)
    return judged_batch(config.vocab_size, config.eos_token_id, prompts=16)


@pytest.mark.parametrize(("zero_stage", "dtype"), [(2, "float32"), (3, "float32"), (2, "bfloat16")])
def test_a_learner_on_the_gpu_starts_at_log_2_and_moves_the_policy(builtin_models, batch, zero_stage, dtype):
    from learner import distributed

    assert distributed.backend() == "nccl" and distributed.device().type == "cuda"
    learner = gpu_learner(builtin_models.policy, dtype, zero_stage)
    assert next(learner.engine.module.parameters()).device.type == "cuda"
    before = {k: v.float().cpu().clone() for k, v in learner.state_dict().items()}
    first = learner.train_step([batch], 0, {"gt": 1.0})
    tolerance = 1e-5 if dtype == "float32" else 1e-2
    assert first.metrics["learner/loss"] == pytest.approx(math.log(2), abs=tolerance)
    times = []
    for step in range(1, 6):
        torch.cuda.synchronize()
        began = time.perf_counter()
        result = learner.train_step([batch], step, {"gt": 1.0})
        torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
        assert math.isfinite(result.metrics["learner/loss"])
    assert result.metrics["learner/loss"] < first.metrics["learner/loss"]  # the same batch, six steps: it learns
    after = learner.state_dict()
    moved = max((after[k].float().cpu() - before[k]).abs().max().item() for k in before)
    assert moved > 1e-4
    print(f"\nGPU learner ZeRO-{zero_stage} {dtype}: {len(batch.batch.rollouts)} sequences/step, "
          f"median step {sorted(times)[len(times) // 2] * 1000:.1f} ms, loss {first.metrics['learner/loss']:.4f} -> "
          f"{result.metrics['learner/loss']:.4f}")  # fmt: skip


def gpu_learner(path, dtype: str, zero_stage: int):
    from learner.engine import PolicyLearner
    from protocols import LearnerConfig, ModelConfig, RunConfig

    cfg = RunConfig(algo="dpo", model=ModelConfig(dtype=dtype), learner=LearnerConfig(warmup_steps=0, zero_stage=zero_stage))
    return PolicyLearner(str(path), cfg)


def test_exported_weights_reproduce_the_learners_probe_on_the_gpu(builtin_models, batch):
    from transformers import AutoModelForCausalLM

    from common.tensors import probe_logprobs

    learner = gpu_learner(builtin_models.policy, "float32", 2)
    for step in range(3):
        learner.train_step([batch], step, {"gt": 1.0})
    sequences = [r.sequence_token_ids.tolist() for r in batch.batch.rollouts[:4]]
    probe = learner.probe(sequences)
    state = learner.state_dict()
    torch.cuda.synchronize()
    began = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(builtin_models.policy).cuda().eval()
    model.load_state_dict({k: v.cuda() for k, v in state.items()}, strict=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    served = probe_logprobs(model, sequences)
    gap = max(abs(a - b) for row_s, row_l in zip(served, probe.logprobs) for a, b in zip(row_s, row_l))
    assert gap < 1e-3, gap  # rollout.sync_tolerance's default
    start = AutoModelForCausalLM.from_pretrained(builtin_models.policy).cuda().eval()
    unchanged = probe_logprobs(start, sequences)
    assert max(abs(a - b) for row_s, row_l in zip(unchanged, probe.logprobs) for a, b in zip(row_s, row_l)) > 1e-3
    size = sum(t.numel() * t.element_size() for t in state.values())
    print(f"\nGPU export + load of {size / 1e6:.1f} MB: {seconds * 1000:.1f} ms, probe gap {gap:.2e}")
