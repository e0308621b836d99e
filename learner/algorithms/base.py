"""What an algorithm declares about itself, and the tensors the learner hands its loss.

Each module under learner/algorithms/ defines its hyperparameters (a pydantic model, e.g.
`DPOConfig`; ipo/rdpo reuse it, inpo reuses `MNPOConfig`), its loss and one
`SPEC = AlgorithmSpec(...)`; the literal dict in learner/algorithms/__init__.py registers it by
name. The spec is data: no base class for losses to inherit from.

Two families share the learner:
- "pair" (learner/pair_step.py): the judged samples become (chosen, rejected) pairs
  (learner/pairing.py, rule named by the config's `pairing`); sequence logprobs of both halves
  under the policy (with grad) and, as declared, the reference and the opponent snapshots go to
  `SPEC.pair_loss(PairInputs, cfg) -> (per-pair loss [B], metrics)`.
- "sequence" (learner/sequence_step.py): every sample is trained on by itself with a per-sample
  scalar (the combined judged reward, or its win probability for SPPO); advantages come from the
  estimator the spec names (learner/advantages.py `ESTIMATORS`), then for `epochs` x `minibatches`
  `SPEC.sequence_loss(SequenceInputs, cfg) -> (per-sequence loss [N], metrics)`; with a
  `critic_loss` a value model is trained alongside (PPO).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field
from torch import Tensor

from learner.advantages import ESTIMATORS
from learner.pairing import PAIRINGS

Family = Literal["pair", "sequence"]
Target = Literal["reward", "win_probability"]
Reduction = Literal["sum", "mean"]
C = TypeVar("C", bound=BaseModel)


def _known_pairing(name: str) -> str:
    if name not in PAIRINGS:
        raise ValueError(f"unknown pairing {name!r}; valid: {', '.join(PAIRINGS)}")
    return name


# The `pairing` field of a pair-family config: a name registered in learner/pairing.py's PAIRINGS.
PairingName = Annotated[str, AfterValidator(_known_pairing)]


def pairing_field(default: str) -> Any:
    return Field(
        default=default,
        description="How K judged samples become (chosen, rejected) pairs: "
        + "; ".join(f"{name}: {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in PAIRINGS.items()),
    )


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
        ref_logprobs: [N, T] under pi_ref (no grad); None unless `AlgorithmSpec.reads_reference(cfg)`
            (not with a zero KL weight).
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
class CriticInputs:
    """Token-level tensors of one micro-batch for the critic's loss, aligned with `mask`.

    Attributes:
        values: [N, T] the critic's values (require grad).
        old_values: [N, T] its values before this step's updates (no grad).
        returns: [N, T] targets from the advantage estimator (no grad).
        mask: [N, T] bool response mask.
    """

    values: Tensor
    old_values: Tensor | None
    returns: Tensor | None
    mask: Tensor


@dataclass(frozen=True)
class AlgorithmSpec(Generic[C]):
    """Declaration of one algorithm.

    Attributes:
        name: registry key, also `RunConfig.algo`.
        description: one line for `--list-algos`.
        family: "pair" or "sequence" (module docstring above).
        config: the pydantic model of its hyperparameters (frozen, no unknown fields).
        config_section: the run-config section that holds them (e.g. "dpo"; IPO and rDPO read "dpo" too).
        needs_reference: the loss or its estimator can read pi_ref (a frozen reference forward pass).
        kl_weight: cfg -> the weight of the KL to pi_ref (sequence family); at 0 pi_ref is not read.
            None: read whenever declared. Only `reads_reference` interprets it.
        needs_opponents: an opponent ring of frozen past-policy snapshots (pair family).
        needs_old_logprobs: logprobs of the policy before the step's updates (PPO ratio, SPPO pi_t).
        pair_loss: (PairInputs, cfg) -> (per-pair loss [B], metrics); pair family only.
        sequence_loss: (SequenceInputs, cfg) -> (per-sequence loss [N], metrics); sequence family.
        critic_loss: (CriticInputs, cfg) -> (per-sequence loss [N], metrics): a value model is
            trained alongside the policy on its own engine (PPO); the config needs `critic_lr`.
        advantage: name of the sequence family's estimator in learner/advantages.py ESTIMATORS
            (None: the loss uses no advantages).
        target: what the per-sequence scalar is (sequence family).
        needs_rewards: the judges must give scalar rewards (pairwise-only judges are rejected).
        needs_self_judge: the manifest must contain a judge of kind "self" (OSP).
        fixed_opponents: overrides the config's `num_opponents` (INPO plays exactly one snapshot).
        default_judges: manifest used when the user gives none (None: the run config's default).
    """

    name: str
    description: str
    family: Family
    config: type[C]
    config_section: str
    needs_reference: bool
    kl_weight: Callable[[C], float] | None = None
    needs_opponents: bool = False
    needs_old_logprobs: bool = False
    pair_loss: Callable[[PairInputs, C], tuple[Tensor, dict[str, float]]] | None = None
    sequence_loss: Callable[[SequenceInputs, C], tuple[Tensor, dict[str, float]]] | None = None
    critic_loss: Callable[[CriticInputs, C], tuple[Tensor, dict[str, float]]] | None = None
    advantage: str | None = None
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
        if self.advantage is not None and self.advantage not in ESTIMATORS:
            raise ValueError(
                f"algorithm {self.name!r}: unknown advantage estimator {self.advantage!r}; valid: {', '.join(ESTIMATORS)}"
            )
        if self.family == "pair" and "pairing" not in self.config.model_fields:
            raise ValueError(f"algorithm {self.name!r}: a pair-family config needs a `pairing` field")
        if self.kl_weight is not None and (self.family != "sequence" or not self.needs_reference):
            raise ValueError(
                f"algorithm {self.name!r}: kl_weight is for a sequence-family spec that declares needs_reference "
                "(a pair loss reads pi_ref whatever its beta)"
            )

    def reads_reference(self, cfg: C) -> bool:
        """Whether a step under `cfg` reads pi_ref: the one place the learner decides to build the
        reference model and run its no-grad pass (learner/engine.py), so that a run that would
        multiply the reference by 0 pays neither its memory nor its forward pass.

        - not `needs_reference` (SPPO): never;
        - the sequence family (PPO, GRPO, RLOO): only when `kl_weight(cfg) > 0`; at 0 the KL term
          vanishes from the loss (GRPO) or the reward (PPO, RLOO), the estimators and losses take
          ref_logprobs=None, and `learner/kl_to_reference` is not reported;
        - the pair family (DPO, IPO, rDPO, OSP, MNPO, INPO): always; pi_ref sits inside the loss
          (its log-ratios, scaled by beta > 0, which the configs enforce), so there is no weight to
          turn it off.
        """
        if not self.needs_reference:
            return False
        return self.kl_weight is None or self.kl_weight(cfg) > 0

    @property
    def needs_values(self) -> bool:
        """A critic is trained alongside the policy."""
        return self.critic_loss is not None


def needed(value: Tensor | None, what: str, algo: str) -> Tensor:
    """`value`, or a ValueError naming the forward pass the learner did not run for `algo`."""
    if value is None:
        raise ValueError(f"{algo} needs {what}, got None (its SPEC must declare the pass)")
    return value
