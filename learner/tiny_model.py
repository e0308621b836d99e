"""Builders for the built-in tiny model: a byte-level BPE tokenizer, a ~1M-parameter Llama policy
warm-started by supervised fine-tuning, and a Bradley-Terry reward model.

`driver/builtin.py` calls these once (then caches the result on disk) for `model.path: builtin`;
the saved directories are ordinary HF checkpoints. This module knows nothing about the task:
data arrives as (prompt, response) pairs and (prompt, chosen, rejected) triples.

Token layout (the contract every consumer relies on):
    policy:        ids(prompt) + ids(response) + [eos]   no BOS; the tokenizer adds no special tokens
    reward model:  ids(prompt + response)                 scored at the last non-pad token
Padding is on the right with `<pad>`; `config.pad_token_id` is set so that
`LlamaForSequenceClassification` finds the last non-pad token.

Run on its own (for a quick look): python -m driver.builtin
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

logger = logging.getLogger(__name__)

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IGNORE_INDEX = -100  # label value HF's causal-LM loss skips


@dataclass(frozen=True)
class BuildReport:
    """What a builder did: for logs and the cache's build info."""

    steps: int
    seconds: float
    final_loss: float
    heldout_accuracy: float | None = None  # reward model only: P(r_chosen > r_rejected) on held-out pairs


# --------------------------------------------------------------------------- tokenizer and config


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, wrapped for transformers.

    No post-processor is attached, so encoding never adds BOS/EOS: prompts are fed to the policy
    exactly as written and the builders append EOS themselves. The vocabulary may come out smaller
    than `vocab_size` when the texts run out of merges.
    """
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: " apple" and "apple" stay different tokens, and a response that
    # starts with a space tokenizes the same alone as after its prompt.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **overrides: object) -> LlamaConfig:
    """The built-in architecture: 4 layers, hidden 128, 2 heads of size 64 (a head size vLLM's
    CPU attention supports), untied embeddings (weight sync then never aliases two names)."""
    kwargs: dict[str, object] = dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


# --------------------------------------------------------------------------- shared training bits


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the block and restore the previous value after."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pad_right(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """[B, T] long tensor, T = longest row, short rows filled with `value` on the right."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _length_mask(rows: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """[B, T] long attention mask, 1 on each row's real tokens. Built from lengths rather than
    `!= pad` so it stays right even if a text happened to contain the pad token's string."""
    lengths = torch.tensor([len(r) for r in rows])
    return (torch.arange(width)[None, :] < lengths[:, None]).long()


def _optimizer(
    model: torch.nn.Module, lr: float, steps: int, warmup: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warmup then cosine decay to 10% of `lr`."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _fit(
    model: torch.nn.Module,
    loss_of,
    num_rows: int,
    what: str,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    log_every: int,
) -> float:
    """AdamW with clipping on batches drawn with replacement by a `seed`ed generator; `loss_of(idx)`
    gives the mean loss of rows `idx`. Returns the last step's loss."""
    start = time.perf_counter()
    model.train()
    opt, sched = _optimizer(model, lr, steps, warmup)
    gen = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for step in range(steps):
        loss = loss_of(torch.randint(num_rows, (batch_size,), generator=gen).tolist())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            logger.info("%s step %d/%d loss %.4f (%.1fs)", what, step + 1, steps, loss_value, time.perf_counter() - start)
    return loss_value


def _encode(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------- policy (SFT)


def sft_rows(tokenizer: PreTrainedTokenizerFast, corpus: Sequence[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """(input_ids, labels) rows: prompt + response + EOS, labels IGNORE_INDEX on prompt tokens so
    the loss covers the response and its EOS only (the policy never has to model prompts)."""
    prompt_ids = _encode(tokenizer, [p for p, _ in corpus])
    response_ids = _encode(tokenizer, [r for _, r in corpus])
    eos = tokenizer.eos_token_id
    inputs, labels = [], []
    for p, r in zip(prompt_ids, response_ids):
        inputs.append(p + r + [eos])
        labels.append([IGNORE_INDEX] * len(p) + r + [eos])
    return inputs, labels


def build_policy(
    out_dir: Path,
    corpus: Sequence[tuple[str, str]],
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 20,
    num_threads: int | None = None,
    log_every: int = 100,
) -> BuildReport:
    """Initialise the tiny Llama from `seed`, fine-tune it on `corpus` and save model, tokenizer
    and generation config (eos/bos/pad) to `out_dir`.

    Deterministic for a given seed and thread count: init and batch order both come from `seed`.
    Batches are drawn with replacement (`steps * batch_size` rows in all).
    """
    start = time.perf_counter()
    inputs, labels = sft_rows(tokenizer, corpus)
    with _torch_threads(num_threads):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(tokenizer))

        def sft_loss(idx: list[int]) -> torch.Tensor:
            rows = [inputs[i] for i in idx]
            input_ids = _pad_right(rows, tokenizer.pad_token_id)
            mask = _length_mask(rows, input_ids.shape[1])
            batch_labels = _pad_right([labels[i] for i in idx], IGNORE_INDEX)
            return model(input_ids=input_ids, attention_mask=mask, labels=batch_labels).loss

        loss_value = _fit(
            model,
            sft_loss,
            len(inputs),
            "policy SFT",
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            log_every=log_every,
        )
        model.eval()
        out_dir = Path(out_dir)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    seconds = time.perf_counter() - start
    logger.info("policy saved to %s (%d params, %.1fs)", out_dir, model.num_parameters(), seconds)
    return BuildReport(steps=steps, seconds=seconds, final_loss=loss_value)


# --------------------------------------------------------------------------- reward model


def reward_scores(
    model: LlamaForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """[N] float32 rewards of prompt + response (the reward-model token layout above)."""
    ids = _encode(tokenizer, [p + r for p, r in zip(prompts, responses, strict=True)])
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            rows = ids[start : start + batch_size]
            input_ids = _pad_right(rows, tokenizer.pad_token_id)
            mask = _length_mask(rows, input_ids.shape[1])
            out.append(model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float())
    return torch.cat(out) if out else torch.zeros(0)


def pair_accuracy(
    model: LlamaForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    pairs: Sequence[tuple[str, str, str]],
) -> float:
    """Fraction of (prompt, chosen, rejected) triples with r(chosen) > r(rejected)."""
    prompts = [p for p, _, _ in pairs]
    chosen = reward_scores(model, tokenizer, prompts, [c for _, c, _ in pairs])
    rejected = reward_scores(model, tokenizer, prompts, [r for _, _, r in pairs])
    return (chosen > rejected).float().mean().item()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """[B] per-pair loss -log sigmoid(r_chosen - r_rejected) (Bradley & Terry 1952; the reward-model
    objective of Ouyang et al. 2022, eq. 1). Reduction is left to the caller."""
    return -F.logsigmoid(chosen - rejected)


def build_reward_model(
    out_dir: Path,
    pairs: Sequence[tuple[str, str, str]],
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup: int = 20,
    heldout_fraction: float = 0.1,
    num_threads: int | None = None,
    log_every: int = 100,
) -> BuildReport:
    """Train a scalar reward model with the Bradley-Terry loss and save it with the tokenizer.

    The last `heldout_fraction` of `pairs` is kept out of training and used to report accuracy.
    The model starts from scratch, not from the policy: in our measurements a policy-initialised
    body learned more slowly. Learning is a sudden transition after a plateau and is sensitive to
    `lr` (1e-3 reached ~0.92 held-out accuracy in 600 steps; 2e-3 sometimes stalled near 0.67),
    and it needs many distinct pairs (8k pairs overfit; 40k do not).
    """
    start = time.perf_counter()
    n_heldout = int(len(pairs) * heldout_fraction)
    train_pairs, heldout_pairs = pairs[: len(pairs) - n_heldout], pairs[len(pairs) - n_heldout :]
    chosen_ids = _encode(tokenizer, [p + c for p, c, _ in train_pairs])
    rejected_ids = _encode(tokenizer, [p + r for p, _, r in train_pairs])
    with _torch_threads(num_threads):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1))

        def bt_loss(idx: list[int]) -> torch.Tensor:
            # Chosen and rejected go through one forward pass: [2B, T], chosen first.
            rows = [chosen_ids[i] for i in idx] + [rejected_ids[i] for i in idx]
            input_ids = _pad_right(rows, tokenizer.pad_token_id)
            mask = _length_mask(rows, input_ids.shape[1])
            rewards = model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
            return bradley_terry_loss(rewards[: len(idx)], rewards[len(idx) :]).mean()

        loss_value = _fit(
            model,
            bt_loss,
            len(train_pairs),
            "reward model",
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            log_every=log_every,
        )
        model.eval()
        accuracy = pair_accuracy(model, tokenizer, heldout_pairs) if heldout_pairs else None
        out_dir = Path(out_dir)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    seconds = time.perf_counter() - start
    logger.info(
        "reward model saved to %s (held-out pair accuracy %s, %.1fs)",
        out_dir,
        "n/a" if accuracy is None else f"{accuracy:.3f}",
        seconds,
    )
    return BuildReport(steps=steps, seconds=seconds, final_loss=loss_value, heldout_accuracy=accuracy)
