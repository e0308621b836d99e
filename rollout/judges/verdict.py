"""Causal-LM verdicts: P(first preferred) read off the next-token distribution of a judge prompt.

The scorer shared by the `pairwise` judge (a fixed model, rollout/judges/pairwise.py)
and the `self` judge (the policy, rollout/judges/self_judge.py). Pure torch/transformers, no Ray.

For each (prompt, first, second) the spec's template is filled (base.fill_template) and run through
the model once; at the last position the logits l0, l1 of the two verdict tokens (`choices`) give

    p(first, second) = P(c0) / (P(c0) + P(c1)) = sigmoid(l0 - l1)       (the softmax normaliser cancels)

(divided by `verdict_temperature` T before the sigmoid: T < 1 sharpens a weak judge's verdicts),

and both presentation orders are averaged (base.both_orders):  P = 0.5 [p(a, b) + 1 - p(b, a)].
With `orders: logit_difference` the two orders' logit gaps are combined before the sigmoid instead,
P = sigmoid((g(a, b) - g(b, a)) / 2T): a judge that leans to the first position by a constant gap
loses it exactly, where averaging sharpened probabilities would saturate both orders at "first"
and read every pair as 0.5. P > 0.5 means the first response is preferred.

Batching: judge prompts go through in batches of `batch_size`, LEFT-padded so the last position of
every row is its verdict position, with position ids counted from each row's first real token (as
HF `generate` does), so a padded row computes what it would alone (up to float rounding). Only the
last position's logits are materialised (`logits_to_keep=1`): [B, 1, V], not [B, T, V].

Tokenisation: the filled template is tokenised as a whole, with the tokenizer's default special
tokens; with a chat template (`chat_template`, auto: when the judge tokenizer has one) the filled
template is the user turn and the verdict is read at the first position of the assistant's reply
(rollout/chat.py). Each choice is encoded alone (no special tokens) and must be exactly one token; that token
is the verdict read at the end of the template, so put the separating space where your tokenizer
wants it (in the template or in the choice: for byte-level BPE "...: " + "A", or "...:" + " A").
Truncation: none. A judge prompt longer than the model's context (`max_position_embeddings`) is
still run as is (a warning is logged once per judge); keep prompts, responses and the template
short enough for the judge model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from common.tensors import DTYPES
from protocols import PairwiseJudgeSpec, SelfJudgeSpec
from rollout.chat import ChatMode, chat_text, uses_chat_template
from rollout.judges.base import both_orders, fill_template

logger = logging.getLogger(__name__)


def load_causal_lm(path: str, dtype: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on the GPU if one is visible, else the CPU; its tokenizer).

    `dtype` None keeps the checkpoint's dtype; "float32"/"bfloat16" force one (the self judge
    uses the run's `model.dtype` so its logprobs match the learner's).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype] if dtype else "auto")
    return model.eval().to(device), tokenizer


def choice_token_ids(tokenizer: PreTrainedTokenizerBase, choices: Sequence[str], judge: str) -> tuple[int, int]:
    """The single token id of each verdict string; ValueError naming the judge otherwise."""
    ids = []
    for choice in choices:
        encoded = tokenizer.encode(choice, add_special_tokens=False)
        if len(encoded) != 1:
            pieces = tokenizer.convert_ids_to_tokens(encoded)
            raise ValueError(
                f"judge {judge!r}: field 'choices': {choice!r} encodes to {len(encoded)} tokens {pieces} "
                f"(ids {encoded}); each choice must be exactly one token of the judge's tokenizer"
            )
        ids.append(encoded[0])
    if ids[0] == ids[1]:
        raise ValueError(f"judge {judge!r}: field 'choices': {tuple(choices)} encode to the same token {ids[0]}")
    return ids[0], ids[1]


class VerdictScorer:
    """A causal LM judging (prompt, first, second) triples by its verdict-token probabilities."""

    def __init__(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: str,
        choices: Sequence[str],
        batch_size: int,
        chat_template: ChatMode = "auto",
        verdict_temperature: float = 1.0,
        orders: str = "average",
    ):
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self.choice_ids = choice_token_ids(tokenizer, choices, name)
        self.chat = uses_chat_template(tokenizer, chat_template, f"judge {name!r}")
        self.verdict_temperature = verdict_temperature
        if orders not in ("average", "logit_difference"):
            raise ValueError(f"judge {name!r}: orders must be 'average' or 'logit_difference', got {orders!r}")
        self.orders = orders
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # the last position of every row is its verdict position
        self.max_length = getattr(model.config, "max_position_embeddings", None)
        self._warned_long = False

    @classmethod
    def from_spec(cls, spec: PairwiseJudgeSpec | SelfJudgeSpec, model: PreTrainedModel,
                  tokenizer: PreTrainedTokenizerBase) -> VerdictScorer:  # fmt: skip
        """The scorer a `pairwise` or `self` judge's spec describes, on `model`."""
        return cls(spec.name, model, tokenizer, spec.template, spec.choices, spec.batch_size, spec.chat_template,
                   spec.verdict_temperature, spec.orders)  # fmt: skip

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """P(first[i] preferred over second[i]), both presentation orders combined (`orders`); in [0, 1]."""
        if self.orders == "average":
            return both_orders(self.one_order, prompts, first, second)
        n = len(prompts)
        if not n == len(first) == len(second):
            raise ValueError(f"got {n} prompts, {len(first)} first and {len(second)} second responses")
        texts = [
            fill_template(self.template, p, a, b)
            for p, a, b in zip([*prompts, *prompts], [*first, *second], [*second, *first], strict=True)
        ]
        gap = self.verdict_logit_gap(texts)
        return torch.sigmoid((gap[:n] - gap[n:]) / (2 * self.verdict_temperature)).tolist()

    def one_order(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """p(first[i] preferred) with first[i] shown first: sigmoid(l_choice0 - l_choice1)."""
        texts = [fill_template(self.template, p, a, b) for p, a, b in zip(prompts, first, second, strict=True)]
        return torch.sigmoid(self.verdict_logit_gap(texts) / self.verdict_temperature).tolist()

    @torch.no_grad()
    def verdict_logit_gap(self, texts: Sequence[str]) -> torch.Tensor:
        """[N] l_choice0 - l_choice1 at the position after each judge text (through the chat template if on)."""
        if self.chat:
            texts = [chat_text(self.tokenizer, t) for t in texts]
        device = next(self.model.parameters()).device
        out: list[torch.Tensor] = []
        for lo in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[lo : lo + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=not self.chat
            ).to(device)  # a chat text has its own
            mask = enc["attention_mask"]  # [B, T], zeros on the left
            self._warn_if_long(mask.shape[1])
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # 0 at each row's first real token
            logits = self.model(
                input_ids=enc["input_ids"], attention_mask=mask, position_ids=position_ids, logits_to_keep=1
            ).logits[:, -1]  # [B, V] at the verdict position
            verdict = logits[:, list(self.choice_ids)].float()  # [B, 2]
            out.append((verdict[:, 0] - verdict[:, 1]).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def _warn_if_long(self, length: int) -> None:
        if self.max_length and length > self.max_length and not self._warned_long:
            self._warned_long = True
            logger.warning(
                "judge %r: a judge prompt has %d tokens, more than the model's context %d; it is not truncated",
                self.name,
                length,
                self.max_length,
            )
