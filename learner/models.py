"""The one handle both training steps get: the models of a learner rank, and the accumulation loop.

`pair_step` (learner/pair_step.py) and `sequence_step` (learner/sequence_step.py) see the learner
only through `Models`; `PolicyLearner` (learner/engine.py) builds it and owns the checkpoints and
weight export.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from learner.collate import PairTensors, SequenceTensors
from learner.ops import gather_token_logprobs

if TYPE_CHECKING:
    from learner.critic import Critic
    from learner.opponents import OpponentRing

Chunk = TypeVar("Chunk")


@dataclass
class Models:
    """A learner rank's models and where it sits among the ranks.

    Attributes:
        policy: the DeepSpeed engine being trained (`policy.module` is the bare model).
        reference: frozen pi_ref (with LoRA: the base under the adapters), or None when the algorithm
            does not read it under its config (`AlgorithmSpec.reads_reference`: SPPO, a zero KL weight).
        opponents: MNPO's ring of frozen snapshots, or None.
        critic: PPO's value model on its own engine, or None.
        micro_batch_size: sequences per forward pass.
        length_buckets: micro-batches of similar lengths (`by_length`), LearnerConfig.length_buckets.
    """

    policy: Any  # deepspeed.DeepSpeedEngine (imported lazily: see learner/distributed.py)
    reference: torch.nn.Module | None
    opponents: OpponentRing | None
    critic: Critic | None
    device: torch.device
    pad_token_id: int
    micro_batch_size: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    logits_to_keep: bool = False  # the model class takes HF's `logits_to_keep` (see token_logprobs)
    offpolicy_clip: float = 0.0  # LearnerConfig.offpolicy_clip (sequence family; 0 = no correction)
    length_buckets: bool = False

    def token_logprobs(self, model: torch.nn.Module, t: PairTensors | SequenceTensors) -> Tensor:
        """[rows, T-1] logprob of each next token (positions outside the response mask hold garbage).

        Only positions from the earliest response token on get logits: the prompts' vocabulary
        projections and log-softmaxes (most of a [rows, T, vocab] tensor for a chat model's
        templated prompts) are never computed. Positions before it hold 0."""
        start = first_response_position(t.response_mask) if self.logits_to_keep else 0
        width = t.input_ids.shape[1]
        if start <= 0:
            logits = model(input_ids=t.input_ids, attention_mask=t.attention_mask).logits
            return gather_token_logprobs(logits[:, :-1], t.input_ids[:, 1:])
        logits = model(input_ids=t.input_ids, attention_mask=t.attention_mask, logits_to_keep=width - start).logits
        kept = gather_token_logprobs(logits[:, :-1], t.input_ids[:, start + 1 :])  # positions start .. T-2
        return torch.cat([kept.new_zeros(kept.shape[0], start), kept], dim=1)

    def engines(self) -> list[Any]:
        """The engines one optimizer step updates: the policy, then the critic if there is one."""
        return [self.policy] + ([self.critic.engine] if self.critic is not None else [])


def first_response_position(response_mask: Tensor) -> int:
    """The first position (column of the [rows, T-1] mask) holding a response token of any row; 0 if none."""
    columns = response_mask.any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else 0


def takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether an HF model's forward computes logits for the last positions only (`logits_to_keep`)."""
    return "logits_to_keep" in inspect.signature(type(model).forward).parameters


def grad_norm(engine: Any) -> float:
    """The engine's global gradient norm of its last step (0 when DeepSpeed does not know it)."""
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else 0.0


def zero_backward(engine: Any) -> None:
    """A zero gradient: a rank with no rows still joins the other ranks' gradient collectives."""
    engine.set_gradient_accumulation_boundary(True)
    engine.backward(sum(p.sum() for p in engine.module.parameters()) * 0.0)


def accumulate(
    engines: Sequence[Any],
    chunks: Sequence[Chunk],
    rows: int,
    losses: Callable[[Chunk], tuple[Sequence[Tensor], dict[str, float]]],
    size: Callable[[Chunk], int] = len,
) -> tuple[dict[str, float], list[float]]:
    """One optimizer step of each engine, gradients accumulated over micro-batches.

    `losses(chunk)` returns one per-row loss tensor per engine (in `engines` order) and the chunk's
    metrics. Each engine backs `loss.sum() / rows`, so the step's gradient is the mean over all
    `rows` of this rank however they are chunked. With no chunks every engine backs a zero
    gradient (see `zero_backward`). Returns the metrics averaged over rows (weighted by each
    chunk's `size`), with "learner/loss" the mean of the first engine's loss, and each engine's
    gradient norm.
    """
    for engine in engines:
        engine.train()
    sums: dict[str, float] = {}
    clock = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for index, chunk in enumerate(chunks):
        start = time.perf_counter()
        per_engine, metrics = losses(chunk)
        middle = time.perf_counter()
        last = index == len(chunks) - 1
        for engine, loss in zip(engines, per_engine, strict=True):
            engine.set_gradient_accumulation_boundary(last)
            engine.backward(loss.sum() / rows)
        clock["forward"] += middle - start
        clock["backward"] += time.perf_counter() - middle
        metrics["learner/loss"] = float(per_engine[0].detach().mean())
        add_weighted(sums, metrics, size(chunk))
    if not chunks:
        for engine in engines:
            zero_backward(engine)
    norms = []
    start = time.perf_counter()
    for engine in engines:
        engine.step()
        norms.append(grad_norm(engine))
    clock["optimizer"] = time.perf_counter() - start
    out = {key: value / max(rows, 1) for key, value in sums.items()}
    out.update({f"learner/time/{name}": seconds for name, seconds in clock.items()})  # seconds, summed
    return out, norms


def add_weighted(sums: dict[str, float], metrics: dict[str, float], weight: float = 1.0) -> None:
    """sums[key] += weight * metrics[key] for every key (the metrics-averaging idiom, once)."""
    for key, value in metrics.items():
        sums[key] = sums.get(key, 0.0) + value * weight
