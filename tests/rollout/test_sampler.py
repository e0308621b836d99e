"""The vLLM sampler on the built-in tiny model: sampling, logprobs and in-place weight updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from protocols import Prompt, PromptBatch, RolloutConfig, SyncProbe, WeightVersion
from rollout.tasks import wordlist


@pytest.fixture(scope="module")
def sampler(builtin_models):
    from rollout.sampler import VLLMSampler

    cfg = RolloutConfig(max_response_tokens=16, sync_tolerance=1e-3)
    sampler = VLLMSampler(str(builtin_models.policy), cfg, dtype="float32", seed=0)
    assert sampler.policy_version == 0  # the starting weights
    return sampler


@pytest.fixture(scope="module")
def hf_policy(builtin_models):
    return AutoModelForCausalLM.from_pretrained(builtin_models.policy).eval()


def _hf_logprobs(model, sequences):
    rows = []
    with torch.no_grad():
        for seq in sequences:
            ids = torch.tensor([list(seq)])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            rows.append(tuple(logp[torch.arange(len(seq) - 1), ids[0, 1:]].tolist()))
    return rows


def test_generate_returns_k_grouped_rollouts_with_sampler_logprobs(sampler, hf_policy):
    prompts = tuple(wordlist.train_prompts()[:5])
    batch = sampler.generate(PromptBatch(step=3, prompts=prompts, samples_per_prompt=3))
    assert len(batch.rollouts) == 15 and batch.step == 3 and batch.policy_version == sampler.policy_version
    assert [g[0].prompt_id for g in batch.groups()] == [p.prompt_id for p in prompts]
    for group in batch.groups():  # token data as arrays; a prompt's samples share its one prompt array
        assert all(r.prompt_token_ids is group[0].prompt_token_ids for r in group)
    assert all(r.response_token_ids.dtype == np.int32 and r.logprobs.dtype == np.float32 for r in batch.rollouts)
    assert all(not r.logprobs.flags.writeable and (r.logprobs <= 0).all() for r in batch.rollouts)
    for r in batch.rollouts:
        assert 1 <= len(r.response_token_ids) <= 16
        assert (r.finish_reason == "length") == (r.response_token_ids[-1] != hf_policy.config.eos_token_id)
    # Sampler logprobs equal the HF model's logprobs of the same tokens (fp32, same weights).
    for r in batch.rollouts[:6]:
        seq = r.sequence_token_ids.tolist()
        hf = _hf_logprobs(hf_policy, [seq])[0][len(r.prompt_token_ids) - 1 :]
        assert max(abs(a - b) for a, b in zip(hf, r.logprobs)) < 1e-3


def test_weight_update_changes_what_vllm_samples(sampler, hf_policy):
    """Leaves the sampler serving the starting weights again (whatever runs next sees them)."""
    from rollout.sampler import WeightSyncError

    start = sampler.policy_version
    prompts = (Prompt(prompt_id="p", text=wordlist.heldout_prompts()[0].text),)
    greedy = dict(temperature=0.0)
    before = sampler.generate(PromptBatch(step=0, prompts=prompts, samples_per_prompt=1), **greedy)
    first = before.rollouts[0].response_token_ids[0]
    other = first + 1 if first + 1 < hf_policy.config.vocab_size else first - 1
    # Swap two rows of the output head: the greedy first token must change from `first` to `other`.
    state = {k: v.clone() for k, v in hf_policy.state_dict().items()}
    head = state["lm_head.weight"]
    head[[first, other]] = head[[other, first]]
    edited = AutoModelForCausalLM.from_pretrained(sampler.llm.llm_engine.model_config.model)
    edited.load_state_dict(state)
    seqs = [before.rollouts[0].sequence_token_ids.tolist()]
    probe = SyncProbe(token_ids=tuple(tuple(s) for s in seqs), logprobs=tuple(_hf_logprobs(edited, seqs)))

    # A probe that does not match what is loaded is refused and the version does not advance.
    wrong = SyncProbe(token_ids=probe.token_ids, logprobs=tuple(tuple(x - 0.5 for x in row) for row in probe.logprobs))
    with pytest.raises(WeightSyncError, match="probe logprob gap"):
        sampler.load_weights(
            state.items(), WeightVersion(version=start + 1, step=0, num_tensors=len(state), num_bytes=1, probe=wrong)
        )
    assert sampler.policy_version == start

    try:
        report = sampler.load_weights(
            state.items(), WeightVersion(version=start + 2, step=1, num_tensors=len(state), num_bytes=1, probe=probe)
        )
        assert report.version == start + 2 and report.max_abs_logprob_diff < 1e-3
        after = sampler.generate(PromptBatch(step=1, prompts=prompts, samples_per_prompt=1), **greedy)
        assert all(r.policy_version == start + 2 for r in after.rollouts)
        assert all(r.response_token_ids[0] == other for r in after.rollouts)
        assert all(r.response_token_ids[0] == first for r in before.rollouts)
        # an older version is taken too (work redone after a fault, driver/faults.py): the probe proves it
        report = sampler.load_weights(
            state.items(), WeightVersion(version=start + 1, step=2, num_tensors=len(state), num_bytes=1, probe=probe)
        )
        assert report.version == start + 1 and sampler.policy_version == start + 1
    finally:
        original = hf_policy.state_dict()
        back = SyncProbe(token_ids=probe.token_ids, logprobs=tuple(_hf_logprobs(hf_policy, seqs)))
        sampler.load_weights(
            original.items(),
            WeightVersion(version=sampler.policy_version + 1, step=3, num_tensors=len(original), num_bytes=1, probe=back),
        )
    again = sampler.generate(PromptBatch(step=0, prompts=prompts, samples_per_prompt=1), **greedy)
    assert [r.response_token_ids.tolist() for r in again.rollouts] == [r.response_token_ids.tolist() for r in before.rollouts]
