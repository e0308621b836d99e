"""HF `model.generate` sampling over a batch of prompts, for the benchmarks that compare with it or
score checkpoints outside a run (bench/generation.py, bench/nash_lm.py, bench/vs_trl.py).

    sampler = HFSampler(path, ["list 3 fruits:", ...])             # prompts through the chat template when it has one
    rows = sampler(seed=0, n=4, max_tokens=24)                      # prompt-major: n rows per prompt
    texts = sampler.decode(rows)

Prompts are left-padded (what `generate` needs for a batch); each row is the generated token ids
up to and including the first EOS, as vLLM returns them. Not used by a run.
"""

from __future__ import annotations

from pathlib import Path


class HFSampler:
    def __init__(self, path: str | Path, prompts: list[str], chat_template: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rollout.chat import prompt_token_ids, uses_chat_template

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        chat = uses_chat_template(self.tokenizer, chat_template)
        ids = [prompt_token_ids(self.tokenizer, p, chat) for p in prompts]
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else self.tokenizer.eos_token_id
        self.eos = self.tokenizer.eos_token_id
        self.width = max(map(len, ids))
        self.input_ids = torch.tensor([[self.pad] * (self.width - len(x)) + x for x in ids])  # [P, W], left-padded
        self.mask = torch.tensor([[0] * (self.width - len(x)) + [1] * len(x) for x in ids])

    def __call__(self, seed: int, n: int, max_tokens: int, temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
        """n sampled responses per prompt (P * n rows, prompt-major), each cut after its first EOS."""
        import torch

        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=self.input_ids,
                attention_mask=self.mask,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                eos_token_id=self.eos,
                pad_token_id=self.pad,
            )
        return [row[: row.index(self.eos) + 1] if self.eos in row else row for row in out[:, self.width :].tolist()]

    def decode(self, rows: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in rows]
