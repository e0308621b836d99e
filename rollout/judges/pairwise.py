"""Pairwise judge: a fixed causal LM comparing two responses by the probability of its verdict tokens.

The judge prompt, verdict tokens and both-orders averaging are rollout/judges/verdict.py's.
`path: builtin:policy` (resolved by the driver) is the task's starting policy: a weak judge, but
one that runs anywhere; point `path` at an instruction-tuned checkpoint for a real one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from protocols import PairwiseJudgeSpec
from rollout.judges.verdict import VerdictScorer, load_causal_lm

logger = logging.getLogger(__name__)


class PairwiseJudge:
    def __init__(self, spec: PairwiseJudgeSpec, model_path: str):
        self.name = spec.name
        model, tokenizer = load_causal_lm(model_path)
        self.scorer = VerdictScorer.from_spec(spec, model, tokenizer)
        logger.info("pairwise judge %r loaded from %s", self.name, model_path)

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """P(first[i] preferred over second[i]), both presentation orders averaged."""
        return self.scorer.compare(prompts, first, second)
