"""Tiny-model builders: tokenizer contract, SFT label masking, the Bradley-Terry loss, and short
builds that save loadable HF checkpoints. Quality of the full build is tested in
tests/driver/test_builtin.py."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GenerationConfig

from learner import tiny_model
from learner.tiny_model import IGNORE_INDEX, bradley_terry_loss, sft_rows, train_tokenizer

# A small task-like corpus written out here so the learner tests stand alone.
CORPUS = [
    ("list 3 fruits:", " apple pear plum"),
    ("name 2 colors:", " red blue"),
    ("give 1 tools:", " hammer"),
    ("write 4 birds:", " owl crow owl hawk"),
    ("list 2 metals:", " gold tin"),
    ("name 5 animals:", " cat dog cow lion bear"),
] * 20
PAIRS = [
    ("list 2 fruits:", " apple pear", " cat cat cat cat"),
    ("name 1 colors:", " red", " hammer owl"),
    ("give 3 tools:", " saw axe rake", " saw"),
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([p + r for p, r in CORPUS], vocab_size=300)


def test_tokenizer_round_trips_and_adds_no_special_tokens(tokenizer):
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert len(specials) == 3 and None not in specials
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    for text in ["list 3 fruits:", " apple pear plum", "name 2 colors: red blue", " zebra!  é"]:
        ids = tokenizer(text)["input_ids"]  # default add_special_tokens=True must still add none
        assert not specials & set(ids), text
        assert tokenizer.decode(ids) == text
    # Prompt and response tokenized apart = tokenized together (the policy and the RM rely on it).
    for prompt, response in CORPUS[:6]:
        apart = tokenizer(prompt)["input_ids"] + tokenizer(response)["input_ids"]
        assert apart == tokenizer(prompt + response)["input_ids"]


def test_tokenizer_saves_and_loads_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tokenizer)
    assert loaded("list 3 fruits: apple")["input_ids"] == tokenizer("list 3 fruits: apple")["input_ids"]
    assert (loaded.eos_token_id, loaded.pad_token_id, loaded.bos_token_id) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
    )


def test_sft_rows_train_on_response_and_eos_only(tokenizer):
    inputs, labels = sft_rows(tokenizer, [("list 3 fruits:", " apple pear plum")])
    prompt_len = len(tokenizer("list 3 fruits:")["input_ids"])
    response = tokenizer(" apple pear plum")["input_ids"]
    assert inputs[0][prompt_len:] == response + [tokenizer.eos_token_id]
    assert labels[0] == [IGNORE_INDEX] * prompt_len + response + [tokenizer.eos_token_id]


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + exp(-d)): d = 1 -> 0.31326, d = 0 -> log 2, d = -3 -> 3.04859
    expected = torch.tensor([math.log1p(math.exp(-1)), math.log(2), math.log1p(math.exp(3))])
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), expected)
    assert torch.isclose(expected[0], torch.tensor(0.31326), atol=1e-5)


def test_short_policy_build_saves_a_loadable_deterministic_checkpoint(tokenizer, tmp_path):
    reports = [
        tiny_model.build_policy(tmp_path / name, CORPUS, tokenizer, seed=5, steps=3, batch_size=8, warmup=1)
        for name in ("a", "b")
    ]
    assert all(math.isfinite(r.final_loss) for r in reports)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    cfg = a.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.num_hidden_layers) == (128, 2, 64, 4)
    assert cfg.tie_word_embeddings is False and cfg.vocab_size == len(tokenizer)
    assert (cfg.eos_token_id, cfg.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert a.dtype == torch.float32
    assert GenerationConfig.from_pretrained(tmp_path / "a").eos_token_id == tokenizer.eos_token_id
    assert AutoTokenizer.from_pretrained(tmp_path / "a")("list")["input_ids"] == tokenizer("list")["input_ids"]


def test_short_reward_model_build_and_padded_scoring(tokenizer, tmp_path):
    report = tiny_model.build_reward_model(
        tmp_path, PAIRS, tokenizer, seed=0, steps=3, batch_size=8, warmup=1, heldout_fraction=0.2
    )
    assert report.heldout_accuracy is not None and 0.0 <= report.heldout_accuracy <= 1.0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    # Batched scoring with right padding must equal scoring each text on its own.
    prompts = ["list 2 fruits:", "name 1 colors:", "give 3 tools:"]
    responses = [" apple pear", " red", " saw axe rake saw axe"]
    batched = tiny_model.reward_scores(model, tokenizer, prompts, responses)
    with torch.no_grad():
        single = [model(input_ids=torch.tensor([tokenizer(p + r)["input_ids"]])).logits[0, 0] for p, r in zip(prompts, responses)]
    torch.testing.assert_close(batched, torch.stack(single), rtol=1e-4, atol=1e-5)
