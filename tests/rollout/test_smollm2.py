"""The real pretrained chat model from a package: conversion, chat template, vLLM == HF, weight sync."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from protocols import Prompt, PromptBatch, RolloutConfig, SyncProbe, WeightVersion
from rollout.chat import chat_text, prompt_token_ids, uses_chat_template
from rollout.sync import probe_gap

PROMPTS = ("What is 17 + 25?", "Name three fruits.", "Write one sentence about the sea in all lowercase.")


@pytest.fixture(scope="module")
def hf(smollm2):
    return AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def sampler(smollm2):
    from rollout.sampler import VLLMSampler

    cfg = RolloutConfig(max_response_tokens=12, max_model_len=512, sync_tolerance=1e-3)
    return VLLMSampler(str(smollm2), cfg, dtype="float32", seed=0, name="smollm2-test")


def test_conversion_gives_the_published_architecture_and_a_chat_template(smollm2, hf):
    cfg = hf.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (576, 30, 9, 3)
    assert cfg.vocab_size == 49152 and cfg.tie_word_embeddings
    assert sum(p.numel() for p in hf.parameters()) == 134_515_008
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()  # tied, not copied
    info = json.loads((smollm2 / "build.json").read_text())
    assert info["parameters"] == 134_515_008 and info["chat_template"] is True
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert uses_chat_template(tok, "auto") and not uses_chat_template(tok, "off")
    text = chat_text(tok, "Hi there")
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    ids = prompt_token_ids(tok, "Hi there", chat=True)
    assert ids == tok(text, add_special_tokens=False)["input_ids"] and ids.count(tok.convert_tokens_to_ids("<|im_start|>")) >= 2


def test_vllm_greedy_equals_hf_greedy_through_the_chat_template(sampler, hf):
    tok = AutoTokenizer.from_pretrained(sampler.llm.llm_engine.model_config.model)
    assert sampler.chat
    prompts = tuple(Prompt(prompt_id=f"p{i}", text=t) for i, t in enumerate(PROMPTS))
    batch = sampler.generate(PromptBatch(step=0, prompts=prompts, samples_per_prompt=1), temperature=0.0)
    for prompt, rollout in zip(prompts, batch.rollouts, strict=True):
        expected_prompt = prompt_token_ids(tok, prompt.text, chat=True)
        assert list(rollout.prompt_token_ids) == expected_prompt and rollout.prompt_text == prompt.text
        with torch.no_grad():
            out = hf.generate(torch.tensor([expected_prompt]), do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        hf_tokens = out[0, len(expected_prompt) :].tolist()
        assert list(rollout.response_token_ids) == hf_tokens[: len(rollout.response_token_ids)]
    assert any(r.response_text.strip() for r in batch.rollouts)


def test_weight_sync_probe_passes_and_catches_a_wrong_probe(sampler, hf):
    from rollout.sampler import WeightSyncError

    seq = prompt_token_ids(AutoTokenizer.from_pretrained(sampler.llm.llm_engine.model_config.model), PROMPTS[0], True)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["model.norm.weight"] *= 1.05  # a real change the probe must see
    edited = AutoModelForCausalLM.from_pretrained(sampler.llm.llm_engine.model_config.model, dtype=torch.float32)
    edited.load_state_dict(state)
    with torch.no_grad():
        ids = torch.tensor([seq])
        logp = torch.log_softmax(edited(input_ids=ids).logits[0, :-1].float(), -1)
        row = tuple(logp[torch.arange(len(seq) - 1), ids[0, 1:]].tolist())
    before = probe_gap(sampler.prompt_logprobs([seq]), SyncProbe(token_ids=(tuple(seq),), logprobs=(row,)))
    assert before > 1e-3  # the served (unedited) model differs from the edited one
    probe = SyncProbe(token_ids=(tuple(seq),), logprobs=(row,))
    report = sampler.load_weights(
        state.items(), WeightVersion(version=1, step=0, num_tensors=len(state), num_bytes=1, probe=probe)
    )
    assert report.max_abs_logprob_diff < 1e-3 and sampler.policy_version == 1
    wrong = SyncProbe(token_ids=probe.token_ids, logprobs=tuple(tuple(x - 0.01 for x in r) for r in probe.logprobs))
    with pytest.raises(WeightSyncError, match="probe logprob gap"):
        sampler.load_weights(state.items(), WeightVersion(version=2, step=1, num_tensors=len(state), num_bytes=1, probe=wrong))
