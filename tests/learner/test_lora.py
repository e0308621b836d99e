"""LoRA on the learner (tiny built-in model, CPU): adapters train, the base stays the reference,
merged weights leave the learner, checkpoints hold only what trains."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from protocols import LoraConfig
from tests.learner.engine_helpers import judged_batch, make_learner

LORA = LoraConfig(rank=4, alpha=8.0)


@pytest.fixture(scope="module")
def batch(builtin_models):
    config = AutoConfig.from_pretrained(builtin_models.policy)
    return judged_batch(config.vocab_size, config.eos_token_id)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("algo", ["mnpo", "grpo"])
def test_a_lora_step_trains_adapters_only_and_exports_merged_weights(builtin_models, batch, algo):
    base = AutoModelForCausalLM.from_pretrained(builtin_models.policy).eval()
    learner = make_learner(builtin_models.policy, algo, lora=LORA, lr=1e-2)
    start = learner.state_dict()
    assert start.keys() == base.state_dict().keys()  # merged export: the base model's HF names
    assert all(torch.equal(start[k], v) for k, v in base.state_dict().items())  # B = 0 at the start
    trained = [n for n, p in learner.engine.module.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)

    result = learner.train_step([batch], 0, {"gt": 1.0})
    assert result.policy_version == 1 and result.metrics["learner/grad_norm"] > 0
    after = learner.state_dict()
    changed = {k for k in after if not torch.equal(after[k], start[k])}
    # Only the adapted projections move; embeddings and norms are untouched.
    assert changed and all(k.split(".")[-2] in LORA.target_modules for k in changed)
    assert "model.embed_tokens.weight" not in changed

    ids = torch.tensor([batch.batch.rollouts[0].sequence_token_ids.tolist()])
    merged = AutoModelForCausalLM.from_pretrained(builtin_models.policy).eval()
    merged.load_state_dict(after, strict=True)
    learner.engine.module.eval()
    assert torch.allclose(logits(merged, ids), logits(learner.engine.module, ids), atol=1e-5)
    # The reference is the frozen base, read through the same module with the adapters off.
    assert torch.allclose(logits(learner.reference, ids), logits(base, ids), atol=1e-6)
    assert not torch.allclose(logits(merged, ids), logits(base, ids), atol=1e-4)
    assert sum(p.numel() for p in learner.reference.parameters()) == 0  # no second copy of the weights


def test_lora_checkpoint_holds_the_adapters_and_restores_the_policy(builtin_models, batch, tmp_path):
    learner = make_learner(builtin_models.policy, "dpo", lora=LORA, lr=1e-2)
    learner.train_step([batch], 0, {"gt": 1.0})
    learner.save_checkpoint(str(tmp_path))
    saved = torch.load(next((tmp_path / "learner").glob("mp_rank_00_model_states.pt")), map_location="cpu", weights_only=False)[
        "module"
    ]
    assert saved and all(".lora_" in k for k in saved)  # the frozen base is not written again
    expected = learner.state_dict()

    fresh = make_learner(builtin_models.policy, "dpo", lora=LORA, lr=1e-2)
    assert fresh.load_checkpoint(str(tmp_path)) == 1
    restored = fresh.state_dict()
    assert all(torch.equal(restored[k], expected[k]) for k in expected)
    # Training continues identically from the restored adapters and optimizer state.
    a, b = learner.train_step([batch], 1, {"gt": 1.0}), fresh.train_step([batch], 1, {"gt": 1.0})
    assert a.metrics["learner/loss"] == pytest.approx(b.metrics["learner/loss"], rel=1e-6)
    assert all(torch.allclose(learner.state_dict()[k], fresh.state_dict()[k], atol=1e-7) for k in expected)


def test_final_export_is_a_plain_merged_hf_model(builtin_models, batch, tmp_path):
    learner = make_learner(builtin_models.policy, "dpo", lora=LORA, lr=1e-2)
    learner.train_step([batch], 0, {"gt": 1.0})
    learner.save_pretrained(str(tmp_path / "final"))
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    state = learner.state_dict()
    assert all(torch.equal(exported.state_dict()[k], state[k]) for k in state)
    assert not (tmp_path / "final" / "adapter_config.json").exists()


def test_bad_target_module_names_the_field(builtin_models):
    with pytest.raises(ValueError, match=r"learner.lora.target_modules \['nope_proj'\]"):
        make_learner(builtin_models.policy, "dpo", lora=LoraConfig(rank=2, target_modules=("nope_proj",)))


def test_a_tied_frozen_embedding_is_not_written_into_lora_checkpoints(tmp_path):
    """DeepSpeed drops frozen parameters by name but lists a tied weight once; SmolLM2 ties its head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        eos_token_id=1,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    learner = make_learner(tmp_path / "tied", "dpo", lora=LORA)
    learner.save_checkpoint(str(tmp_path / "ckpt"))
    saved = torch.load(tmp_path / "ckpt" / "learner" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)[
        "module"
    ]
    assert saved and all(".lora_" in k for k in saved), [k for k in saved if ".lora_" not in k]
    assert learner.load_checkpoint(str(tmp_path / "ckpt")) == 0
    # The final export ties the head again, as the starting checkpoint did (no second copy of the embedding).
    learner.save_pretrained(str(tmp_path / "final"))
    from safetensors.torch import load_file

    assert load_file(tmp_path / "final" / "model.safetensors").keys() == load_file(tmp_path / "tied" / "model.safetensors").keys()
    exported = LlamaForCausalLM.from_pretrained(tmp_path / "final")
    assert exported.lm_head.weight.data_ptr() == exported.model.embed_tokens.weight.data_ptr()
