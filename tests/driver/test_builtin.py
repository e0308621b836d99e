"""The built-in model cache: one real build (the session fixture `builtin_models` from
tests/conftest.py, default cache), its quality, cache reuse, locking and path resolution.

The locking and versioning tests swap the expensive `_build_into` for a fake that writes marker
files, so they run in milliseconds against a temporary cache root.
"""

import json
import statistics
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from driver import builtin
from driver.builtin import BuiltinModels, ensure_builtin_models, resolve_model_path
from rollout.tasks import wordlist

TASK_WORDS = {w for items in wordlist.CATEGORIES.values() for w in items}


# --------------------------------------------------------------------------- the real build


def test_policy_writes_task_text_of_middling_quality(builtin_models):
    tokenizer = AutoTokenizer.from_pretrained(builtin_models.policy, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(builtin_models.policy).eval()
    prompts = [p.text for p in wordlist.heldout_prompts()] * 4
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=24,
            pad_token_id=tokenizer.pad_token_id,
        )
    generated = out[:, batch["input_ids"].shape[1] :]
    responses = tokenizer.batch_decode(generated, skip_special_tokens=True)
    assert (generated == tokenizer.eos_token_id).any(dim=1).float().mean() > 0.9  # stops by itself
    words = [w for r in responses for w in r.split()]
    assert sum(w in TASK_WORDS for w in words) / len(words) > 0.9  # writes task words
    # Measured 0.61 (the SFT corpus itself scores 0.58; random task words of random length 0.33).
    # Perfect answers score 1, so RL has room to improve.
    mean = statistics.mean(wordlist.ground_truth(p, r) for p, r in zip(prompts, responses))
    assert 0.45 < mean < 0.78, mean


def test_reward_model_ranks_heldout_pairs(builtin_models):
    tokenizer = AutoTokenizer.from_pretrained(builtin_models.reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(builtin_models.reward_model).eval()
    pairs = wordlist.reward_model_pairs(seed=123, size=400, prompts=wordlist.heldout_prompts())

    def scores(texts: list[str]) -> torch.Tensor:
        # Right padding (the tokenizer's default): HF scores the last non-pad token.
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            return model(**batch).logits[:, 0]

    chosen = scores([p + c for p, c, _ in pairs])
    rejected = scores([p + r for p, _, r in pairs])
    accuracy = (chosen > rejected).float().mean().item()
    assert accuracy > 0.8, accuracy  # measured 0.92


def test_second_call_reuses_the_cache(builtin_models):
    infos = [builtin_models.policy / "build.json", builtin_models.reward_model / "build.json"]
    before = [info.stat().st_mtime_ns for info in infos]
    again = ensure_builtin_models()
    assert again == builtin_models and [info.stat().st_mtime_ns for info in infos] == before
    assert all(json.loads(info.read_text())["version_key"] == builtin.version_key() for info in infos)


def test_resolve_builtin_names(builtin_models):
    assert resolve_model_path("builtin") == str(builtin_models.policy)
    assert resolve_model_path("builtin:reward-model") == str(builtin_models.reward_model)
    with pytest.raises(ValueError, match="builtin:reward-model"):
        resolve_model_path("builtin:nope")


# --------------------------------------------------------------------------- cache mechanics


def test_resolve_local_and_missing_paths(tmp_path, monkeypatch):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match=r"model path '.*no-such-model' does not exist .*'builtin'"):
        resolve_model_path(missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub: a hub id cannot be loaded, so it is an error
    with pytest.raises(FileNotFoundError, match="meta-llama/Llama-3-8B"):
        resolve_model_path("meta-llama/Llama-3-8B")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a hub is allowed: hub ids pass through to HF / vLLM
    assert resolve_model_path("meta-llama/Llama-3-8B") == "meta-llama/Llama-3-8B"


def test_cache_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(builtin.CACHE_ENV, str(tmp_path))
    assert builtin.default_cache_root() == tmp_path
    monkeypatch.delenv(builtin.CACHE_ENV)
    assert builtin.default_cache_root() == Path.home() / ".cache" / "online-rlhf"


def test_version_key_follows_build_params(monkeypatch):
    key = builtin.version_key()
    assert key == builtin.version_key() and len(key) == 12
    changed = {**builtin.BUILD_PARAMS, "policy": {**builtin.BUILD_PARAMS["policy"], "steps": 1}}
    monkeypatch.setattr(builtin, "BUILD_PARAMS", changed)
    assert builtin.version_key() != key


def _fake_build(calls: list[str], seconds: float = 0.3):
    def build(name: str):
        def build_into(out: Path) -> dict[str, object]:
            calls.append(name)
            time.sleep(seconds)  # long enough for the other caller to hit the lock
            (out / "config.json").write_text("{}")
            return {"fake": True}

        return build_into

    return build


def _patch_builders(monkeypatch, make) -> None:
    monkeypatch.setattr(builtin, "_build_policy", make("policy"))
    monkeypatch.setattr(builtin, "_build_reward_model", lambda out, policy: make("reward-model")(out))


def test_concurrent_callers_build_once(monkeypatch, tmp_path):
    calls: list[str] = []
    _patch_builders(monkeypatch, _fake_build(calls))
    results: list[BuiltinModels] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_builtin_models(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["policy", "reward-model"] and len(results) == 2 and results[0] == results[1]
    assert (results[0].policy / "config.json").is_file() and (results[0].reward_model / "config.json").is_file()
    # Only the final directories and their lock files remain: no temporary directories.
    key_dir = results[0].policy.parent
    assert sorted(p.name for p in key_dir.iterdir()) == [".policy.lock", ".reward-model.lock", "policy", "reward-model"]


def test_the_policy_alone_does_not_build_the_reward_model(monkeypatch, tmp_path):
    calls: list[str] = []
    _patch_builders(monkeypatch, _fake_build(calls, seconds=0.0))
    policy = builtin.ensure_builtin_policy(tmp_path)
    assert calls == ["policy"] and not (policy.parent / "reward-model").exists()


def test_failed_or_partial_builds_leave_no_debris(monkeypatch, tmp_path):
    def failing(out: Path) -> dict[str, object]:
        (out / "config.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setattr(builtin, "_build_policy", failing)
    with pytest.raises(RuntimeError, match="boom"):
        ensure_builtin_models(tmp_path)
    final = tmp_path / f"wordlist-{builtin.version_key()}"
    assert [p.name for p in final.iterdir()] == [".policy.lock"]

    # A final directory without build.json (e.g. copied half-way) is rebuilt, not trusted.
    (final / "policy").mkdir()
    calls: list[str] = []
    _patch_builders(monkeypatch, _fake_build(calls, seconds=0.0))
    assert ensure_builtin_models(tmp_path).policy == final / "policy"
    assert calls == ["policy", "reward-model"] and (final / "policy" / "build.json").is_file()
