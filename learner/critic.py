"""The PPO critic: a value model trained alongside the policy on its own DeepSpeed engine.

Where it sits: learner/engine.py's sequence step -> **Critic.values** (no-grad pass before the
update, for GAE) -> advantages -> for each minibatch: **Critic.train_micro_batch** on the returns
(value loss from learner/algorithms/ppo.py) -> **Critic.step**.

The value model is the policy's architecture with a scalar head per token (HF
`AutoModelForTokenClassification`, num_labels=1): the backbone starts from the policy checkpoint
(as in OpenRLHF/TRL when no separate reward model initialises it), the head from scratch. It has
its own AdamW (`ppo.critic_lr`) and its own ZeRO engine, so it shards like the policy.

Alignment: values[:, t] is V(prefix input_ids[:, : t + 1]), the value of the state in which the
token input_ids[:, t + 1] (= labels[:, t]) is chosen, so values line up with `response_mask` and
the policy's token logprobs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from torch import Tensor
from transformers import AutoConfig, AutoModelForTokenClassification

from learner.collate import SequenceTensors
from protocols import LearnerConfig

logger = logging.getLogger(__name__)
TAG = "critic"


class Critic:
    def __init__(self, model_path: str, cfg: LearnerConfig, lr: float, ds_config: dict, dtype: torch.dtype,
                 device: torch.device):
        import deepspeed  # deferred: see learner/distributed.py

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # the new head is expected to be "newly initialised"
        try:
            # no dropout on the head (HF defaults to 0.1): values must be a deterministic function of the input
            config = AutoConfig.from_pretrained(model_path, num_labels=1)
            config.classifier_dropout = 0.0
            model = AutoModelForTokenClassification.from_pretrained(model_path, config=config, dtype=dtype)
        finally:
            transformers.logging.set_verbosity(verbosity)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = model.config.eos_token_id
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.device = device
        logger.info("critic: %s backbone + value head, lr %g", model_path, lr)

    def forward(self, t: SequenceTensors) -> Tensor:
        """[N, T-1] values aligned with t.response_mask (see module docstring)."""
        out = self.engine(input_ids=t.input_ids, attention_mask=t.attention_mask)
        return out.logits[:, :-1, 0].float()

    @torch.no_grad()
    def values(self, t: SequenceTensors) -> Tensor:
        self.engine.eval()
        return self.forward(t)

    def backward(self, loss: Tensor, last: bool) -> None:
        self.engine.train()
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def step(self) -> float:
        """Apply the accumulated gradient; returns the global gradient norm (0 if unknown)."""
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def zero_backward(self) -> None:
        """A zero gradient, so that a rank with no rows stays in step with the others' collectives."""
        self.backward(sum(p.sum() for p in self.engine.module.parameters()) * 0.0, last=True)

    def save_checkpoint(self, directory: str) -> None:
        self.engine.save_checkpoint(directory, tag=TAG)

    def load_checkpoint(self, directory: str) -> None:
        path, _ = self.engine.load_checkpoint(directory, tag=TAG)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {TAG!r} under {Path(directory)}")
