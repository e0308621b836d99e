"""What an algorithm declares about itself, and the tensors the learner hands its loss.

Each module under learner/algorithms/ defines one `SPEC = AlgorithmSpec(...)`; the literal dict in
learner/algorithms/__init__.py registers it by name. This is data only: no behaviour, no base class
for losses to inherit from (composition over inheritance, docs/architecture.md).

Two families share the learner (learner/engine.py):
- "pair": the judged samples become (chosen, rejected) pairs (learner/pairing.py, rule named by
  the algorithm's config `pairing`); the learner computes sequence logprobs of both halves under
  the policy (with grad) and, as declared, the reference and the opponent snapshots, then calls
  `SPEC.pair_loss(PairInputs, cfg) -> (per-pair loss [B], metrics)`.
- "sequence": every sample is trained on by itself with a per-sample scalar (the combined judged
  reward, or its estimated win probability for SPPO). The learner runs a no-grad pass for old /
  reference logprobs and values, computes advantages (learner/advantages.py, per `advantage`),
  then for `epochs` x `minibatches` calls `SPEC.sequence_loss(SequenceInputs, cfg) -> (per-sequence
  loss [N], metrics)`; a critic (PPO) is trained alongside on the returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

Family = Literal["pair", "sequence"]
Advantage = Literal["gae", "group", "leave_one_out", "none"]
Target = Literal["reward", "win_probability"]


@dataclass(frozen=True)
class PairInputs:
    """Sequence logprobs of one micro-batch of B pairs (reduction from the algorithm's config).

    Attributes:
        policy_chosen: [B] logprob of the chosen response y_w under pi (requires grad).
        policy_rejected: [B] same for the rejected response y_l.
        ref_chosen, ref_rejected: [B] under pi_ref (no grad); None unless `needs_reference`.
        opponent_chosen, opponent_rejected: [M, B], row j = snapshot pi_{t-1-j} (no grad); None
            unless `needs_opponents`.
        probability: [B] P(chosen preferred over rejected) from the pairing, in [0, 1]; > 0.5
            favours the chosen response (1.0 for a hard comparison).
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor | None
    ref_rejected: Tensor | None
    opponent_chosen: Tensor | None
    opponent_rejected: Tensor | None
    probability: Tensor


@dataclass(frozen=True)
class SequenceInputs:
    """Token-level tensors of one micro-batch of N sequences, aligned with `response_mask`.

    All [N, T] tensors use collate's alignment (learner/collate.py): position t scores the token
    input_ids[:, t + 1]; only positions where `mask` is True count.

    Attributes:
        logprobs: [N, T] policy logprobs of the sampled tokens (requires grad).
        old_logprobs: [N, T] logprobs under the policy before this step's updates (no grad);
            None unless `needs_old_logprobs`.
        ref_logprobs: [N, T] under pi_ref (no grad); None unless `needs_reference`.
        advantages: [N, T] (no grad; constant over a sequence for group/leave-one-out); None when
            `advantage == "none"`.
        targets: [N] the per-sequence scalar the learner derived (`target`): combined reward, or
            estimated win probability P(y > pi_t) for SPPO.
        mask: [N, T] bool response mask.
    """

    logprobs: Tensor
    old_logprobs: Tensor | None
    ref_logprobs: Tensor | None
    advantages: Tensor | None
    targets: Tensor
    mask: Tensor


@dataclass(frozen=True)
class AlgorithmSpec:
    """Declaration of one algorithm.

    Attributes:
        name: registry key, also `RunConfig.algo`.
        description: one line for `--list-algos`.
        family: "pair" or "sequence" (module docstring above).
        config_section: attribute of `RunConfig` holding its hyperparameters (e.g. "dpo").
        needs_reference: a frozen pi_ref forward pass.
        needs_opponents: an opponent ring of frozen past-policy snapshots (pair family).
        needs_old_logprobs: logprobs of the policy before the step's updates (PPO ratio, SPPO pi_t).
        needs_values: a critic trained alongside the policy (PPO).
        pair_loss: (PairInputs, cfg) -> (per-pair loss [B], metrics); pair family only.
        sequence_loss: (SequenceInputs, cfg) -> (per-sequence loss [N], metrics); sequence family.
        advantage: advantage estimator of the sequence family (learner/advantages.py).
        target: what the per-sequence scalar is (sequence family).
        needs_rewards: the judges must give scalar rewards (pairwise-only judges are rejected).
        needs_self_judge: the manifest must contain a judge of kind "self" (OSP).
        fixed_opponents: overrides `mnpo.num_opponents` (INPO plays exactly one snapshot).
        default_judges: manifest used when the user gives none (None: the run config's default).
    """

    name: str
    description: str
    family: Family
    config_section: str
    needs_reference: bool
    needs_opponents: bool = False
    needs_old_logprobs: bool = False
    needs_values: bool = False
    pair_loss: Callable[[PairInputs, Any], tuple[Tensor, dict[str, float]]] | None = None
    sequence_loss: Callable[[SequenceInputs, Any], tuple[Tensor, dict[str, float]]] | None = None
    advantage: Advantage = "none"
    target: Target = "reward"
    needs_rewards: bool = False
    needs_self_judge: bool = False
    fixed_opponents: int | None = None
    default_judges: str | None = None

    def __post_init__(self) -> None:
        if (self.family == "pair") != (self.pair_loss is not None):
            raise ValueError(f"algorithm {self.name!r}: a pair-family spec needs pair_loss (and only those)")
        if (self.family == "sequence") != (self.sequence_loss is not None):
            raise ValueError(f"algorithm {self.name!r}: a sequence-family spec needs sequence_loss (and only those)")


def needed(value: Tensor | None, what: str, algo: str) -> Tensor:
    """`value`, or a ValueError naming the forward pass the learner did not run for `algo`."""
    if value is None:
        raise ValueError(f"{algo} needs {what}, got None (its SPEC must declare the pass)")
    return value
