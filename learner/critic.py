"""The PPO critic: a value model trained alongside the policy on its own DeepSpeed engine.

The sequence step (learner/sequence_step.py) reads `values` in its no-grad pass (for GAE), then
trains `engine` beside the policy on the algorithm's `critic_loss` (learner/algorithms/ppo.py).

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
    def __init__(self, model_path: str, cfg: LearnerConfig, lr: float, ds_config: dict, dtype: torch.dtype, device: torch.device):
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

    def save_checkpoint(self, directory: str) -> None:
        self.engine.save_checkpoint(directory, tag=TAG)

    def load_checkpoint(self, directory: str) -> None:
        path, _ = self.engine.load_checkpoint(directory, tag=TAG)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {TAG!r} under {Path(directory)}")
