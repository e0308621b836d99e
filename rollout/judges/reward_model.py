"""Reward-model judge: an HF sequence-classification model scoring prompt + response.

The score is the model's single logit at the last non-pad token (HF's convention for
`num_labels=1`). Sequences are scored in batches of `batch_size`, right-padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from protocols import RewardModelJudgeSpec

logger = logging.getLogger(__name__)


class RewardModelJudge:
    def __init__(self, spec: RewardModelJudgeSpec, path: str):
        self.name = spec.name
        self.batch_size = spec.batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval().to(self.device)
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {path!r} has num_labels={self.model.config.num_labels}; need 1")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        logger.info("reward model judge %r loaded from %s", self.name, path)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        for lo in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[lo : lo + self.batch_size], return_tensors="pt", padding=True)
            logits = self.model(**enc.to(self.device)).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores
