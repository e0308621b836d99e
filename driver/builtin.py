"""The built-in tiny model: build it once, cache it on disk, resolve model paths.

When a run says `model.path: builtin` (the default) or a judge says `path: builtin:reward-model`,
the driver calls `resolve_model_path`, which returns ordinary HF checkpoint directories that
vLLM, the learner and the reward-model judge load like any other. The first call trains them
(tokenizer, SFT policy, Bradley-Terry reward model on the wordlist task; about a minute on two
CPU cores) and every later call, in any process, reuses the cache.

Cache layout: `$ONLINE_RLHF_CACHE` or `~/.cache/online-rlhf`, then one directory per version key
    wordlist-<key>/policy/          LlamaForCausalLM + tokenizer + generation_config
    wordlist-<key>/reward-model/    LlamaForSequenceClassification (num_labels=1) + tokenizer
    wordlist-<key>/build.json       parameters, timings, SFT loss, RM held-out accuracy
The key hashes BUILDER_VERSION, BUILD_PARAMS and the task definition, so changing any of them
builds into a fresh directory instead of silently reusing stale weights.

Concurrency: the build happens in a temporary directory inside the cache root and is moved into
place with one `os.rename` (atomic on one filesystem), under an `fcntl.flock` lock per key, so
two processes starting at once build once: the second waits on the lock, then reuses the result.

Run on its own to pre-build: python -m driver.builtin
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


def _models(final: Path) -> BuiltinModels:
    return BuiltinModels(policy=final / "policy", reward_model=final / "reward-model")


def _is_complete(final: Path) -> bool:
    # build.json is written last inside the temporary directory, before the rename.
    return (final / _INFO_FILE).is_file()


def ensure_builtin_models(cache_dir: Path | None = None) -> BuiltinModels:
    """Return the cached built-in checkpoints, building them first if this key has none yet.

    `cache_dir` overrides the cache root (default: `default_cache_root()`). Safe to call from
    several processes at once; returns without importing torch when the cache is ready.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    final = root / f"wordlist-{version_key()}"
    if _is_complete(final):
        return _models(final)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{final.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building the built-in tiny model in %s; waiting", root)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # The lock is released when the file is closed, also if the process dies.
        if not _is_complete(final):
            _build_locked(root, final)
    return _models(final)


def _build_locked(root: Path, final: Path) -> None:
    """Build into a temporary directory and rename it to `final`; caller holds the key's lock."""
    # Anything left under this key's name is debris of a killed build: the lock says nobody else
    # is working on it.
    for stale in root.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        logger.warning("removing incomplete built-in model directory %s", final)
        shutil.rmtree(final)
    logger.info("building the built-in tiny model (first run only) into %s ...", final)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        info = _build_into(tmp)
        info["seconds_total"] = round(time.perf_counter() - start, 2)
        (tmp / _INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built-in tiny model ready in %.1fs: %s", info["seconds_total"], final)


def _build_into(out: Path) -> dict[str, object]:
    """Train tokenizer, policy and reward model into `out`/policy and `out`/reward-model.

    Returns the build information saved as build.json. torch and transformers are imported here
    so that resolving an already-cached model stays cheap.
    """
    from learner import tiny_model

    tok_p, pol_p, rm_p = BUILD_PARAMS["tokenizer"], BUILD_PARAMS["policy"], BUILD_PARAMS["reward_model"]
    corpus = wordlist.sft_corpus(seed=int(pol_p["seed"]), size=int(pol_p["corpus_size"]))
    # Held-out prompt texts join the tokenizer's data (not the model's) so that they tokenize
    # like the training prompts do.
    texts = [p + r for p, r in corpus] + [p.text for p in wordlist.heldout_prompts()]
    tokenizer = tiny_model.train_tokenizer(texts, vocab_size=int(tok_p["vocab_size"]))
    logger.info("tokenizer: %d tokens", len(tokenizer))

    policy = tiny_model.build_policy(
        out / "policy", corpus, tokenizer, seed=int(pol_p["seed"]), steps=int(pol_p["steps"]),
        batch_size=int(pol_p["batch_size"]), lr=float(pol_p["lr"]),
    )
    pairs = wordlist.reward_model_pairs(seed=int(rm_p["seed"]), size=int(rm_p["pairs"]))
    reward = tiny_model.build_reward_model(
        out / "reward-model", pairs, tokenizer, seed=int(rm_p["seed"]), steps=int(rm_p["steps"]),
        batch_size=int(rm_p["batch_size"]), lr=float(rm_p["lr"]),
    )
    return {
        "builder_version": BUILDER_VERSION,
        "version_key": version_key(),
        "params": BUILD_PARAMS,
        "vocab_size": len(tokenizer),
        "policy_final_loss": round(policy.final_loss, 4),
        "policy_seconds": round(policy.seconds, 2),
        "reward_model_final_loss": round(reward.final_loss, 4),
        "reward_model_heldout_accuracy": reward.heldout_accuracy,
        "reward_model_seconds": round(reward.seconds, 2),
    }


def check_model_path(path: str, what: str = "model path") -> None:
    """Raise unless `path` names a model we can load, without building or loading anything.

    Accepted: 'builtin', 'builtin:reward-model', an existing local directory, or an `org/name`
    hub id when the hub is not switched off (HF_HUB_OFFLINE=1) and no local parent dir of that
    name exists (so a mistyped local path is reported as missing, not fetched).
    """
    if path in (BUILTIN_MODEL, BUILTIN_REWARD_MODEL) or Path(path).expanduser().is_dir():
        return
    if path.startswith(f"{BUILTIN_MODEL}:"):
        raise ValueError(f"unknown built-in model {path!r}; valid: {[BUILTIN_MODEL, BUILTIN_REWARD_MODEL]}")
    if HUB_ID.match(path) and os.environ.get("HF_HUB_OFFLINE") != "1" and not Path(path).parent.exists():
        return
    raise FileNotFoundError(f"{what} {path!r} does not exist (pass a local HF checkpoint directory, or 'builtin')")


def resolve_model_path(path: str) -> str:
    """A configured model path as something HF/vLLM load: the built-in models are built on first
    use; local directories and hub ids pass through (see `check_model_path`)."""
    check_model_path(path)
    if path == BUILTIN_MODEL:
        return str(ensure_builtin_models().policy)
    if path == BUILTIN_REWARD_MODEL:
        return str(ensure_builtin_models().reward_model)
    return str(Path(path).expanduser()) if Path(path).expanduser().is_dir() else path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models = ensure_builtin_models()
    logger.info("policy: %s", models.policy)
    logger.info("reward model: %s", models.reward_model)
