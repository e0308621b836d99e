"""Prompts through a chat model's template: the one place where raw prompt text becomes token ids.

Used by the sampler (rollout/sampler.py) for the policy's prompts and by the causal-LM judges
(rollout/judges/verdict.py) for judge prompts. Tasks and judges see the raw text
(`Prompt.text`, `Rollout.prompt_text`); only the models see the template. Rollouts keep the token
ids that were actually fed to the engine (`Rollout.prompt_token_ids`), so the learner scores
exactly what was sampled.

mode "auto" uses the template when the tokenizer has one (instruct/chat checkpoints) and raw text
when it has none (base models, the built-in tiny model); "on" requires one; "off" never uses it.
"""

from __future__ import annotations

from typing import Literal

ChatMode = Literal["auto", "on", "off"]


def uses_chat_template(tokenizer, mode: ChatMode, what: str = "the policy") -> bool:
    """Whether prompts for this tokenizer go through its chat template; ValueError for "on" without one."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise ValueError(f"model.chat_template is 'on' but {what}'s tokenizer has no chat template")
    return has and mode != "off"


def chat_text(tokenizer, user_text: str) -> str:
    """The templated text of one user turn, ending where the assistant's reply starts."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids fed to the model for a prompt: the chat turn (its special tokens come from the
    template, so none are added again), or the raw text with the tokenizer's default special tokens."""
    if chat:
        return list(tokenizer(chat_text(tokenizer, text), add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])
