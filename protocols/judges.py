"""Schema of the judge manifest (`deploy/judges/*.yaml`).

A manifest lists the judges that label training batches (`judges`, combined by `weight`) and,
optionally, the judge used for evaluation (`eval`, default: the task's ground truth). Each judge
kind has its own spec; `kind` selects it, and a module under rollout/judges/ implements it.

Kinds: rule and reward_model are pointwise (scalar rewards, higher is better); pairwise, self and
http compare two responses and give P(first preferred over second) (> 0.5 favours the first);
population combines members of any other kind. The evaluation judge must be pointwise.

Example:
    judges:
      - name: ground-truth
        kind: rule
        function: rollout.tasks.wordlist:ground_truth
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, Field, field_validator

from protocols.batches import FROZEN
from protocols.config import CustomResources

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Common(BaseModel):
    model_config = FROZEN
    name: str = Field(pattern=NAME_PATTERN, description="Unique name; the actor is 'judge-<name>-<i>'.")
    weight: float = Field(default=1.0, gt=0.0, allow_inf_nan=False, description="Share of this judge in the combined reward.")
    replicas: int = Field(default=1, ge=1, description="Ray actors serving this judge.")
    num_cpus: float = Field(default=0.0, ge=0.0, description="Ray CPUs per replica.")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per replica.")
    resources: CustomResources = Field(
        default_factory=dict, description="Ray custom resources per replica, e.g. {rollout_node: 0.01} (docs/deploy.md)."
    )
    temperature: float = Field(
        default=1.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Bradley-Terry temperature turning rewards into P(a > b); 0 = hard comparison.",
    )
    on_failure: Literal["fail", "skip"] = Field(
        default="fail",
        description="A verdict the judge cannot give (it raised, returned NaN/None/a wrong shape, an answer naming "
        "neither choice): 'fail' stops the run with an error naming the judge; 'skip' drops the prompt "
        "groups without it from training and counts them.",
    )
    max_skipped_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="on_failure 'skip': the run stops once more than this fraction of the verdicts asked of the "
        "judge so far had none (ignored with 'fail').",
    )


class RuleJudgeSpec(_Common):
    """A Python function `f(prompt: str, response: str) -> float` named by import path."""

    kind: Literal["rule"]
    function: str = Field(description="'package.module:function'")
    args: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Keyword arguments bound to the function: f(prompt, response, **args)."
    )

    @field_validator("function")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is not of the form 'package.module:function'")
        return value


class RewardModelJudgeSpec(_Common):
    """An HF sequence-classification model scoring (prompt + response)."""

    kind: Literal["reward_model"]
    path: str = Field(description="Local checkpoint dir, or 'builtin:reward-model' for the task's RM.")
    batch_size: int = Field(default=64, ge=1, description="Sequences per forward pass.")


DEFAULT_PAIRWISE_TEMPLATE = (
    "Prompt: {prompt}\nResponse A: {first}\nResponse B: {second}\nWhich response is better? Answer A or B: "
)


class _PairwiseCommon(_Common):
    """A judge reading (prompt, A, B) and giving P(A preferred over B); both orders are averaged."""

    template: str = Field(
        default=DEFAULT_PAIRWISE_TEMPLATE,
        description="Judge prompt with the placeholders {prompt}, {first} and {second}.",
    )
    choices: tuple[str, str] = Field(
        default=("A", "B"), description="Verdict strings for 'first is better' and 'second is better'."
    )
    comparisons: Literal["all_pairs", "adjacent"] = Field(
        default="all_pairs",
        description="Which samples of a prompt are compared: every pair, or each with the next (K-1 pairs).",
    )
    chat_template: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Causal-LM judges: the judge prompt goes through the judge tokenizer's chat template (auto: if it has one).",
    )

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        missing = [k for k in ("{prompt}", "{first}", "{second}") if k not in value]
        if missing:
            raise ValueError(f"template lacks the placeholders {missing}")
        return value

    @field_validator("choices")
    @classmethod
    def _distinct_choices(cls, value: tuple[str, str]) -> tuple[str, str]:
        if value[0] == value[1] or not all(value):
            raise ValueError(f"choices must be two different non-empty strings, got {value}")
        return value


class _LMVerdict(_PairwiseCommon):
    verdict_temperature: float = Field(
        default=1.0,
        gt=0.0,
        allow_inf_nan=False,
        description="p = sigmoid((l_A - l_B) / T) per order: T < 1 sharpens a weak judge's near-0.5 verdicts.",
    )
    orders: Literal["average", "logit_difference"] = Field(
        default="average",
        description="How both presentation orders combine: 'average' = mean of the two orders' probabilities; "
        "'logit_difference' = sigmoid((gap_ab - gap_ba) / (2 T)), which cancels a position bias before "
        "sharpening (use it with a small verdict_temperature).",
    )


class PairwiseJudgeSpec(_LMVerdict):
    """A fixed causal LM judging pairs by the probability of its verdict tokens."""

    kind: Literal["pairwise"]
    path: str = Field(description="Local checkpoint dir (or 'builtin:policy', the task's starting policy).")
    batch_size: int = Field(default=64, ge=1, description="Judge prompts per forward pass.")


class SelfJudgeSpec(_LMVerdict):
    """The policy judging its own samples with its current weights (synced like rollout workers)."""

    kind: Literal["self"]
    batch_size: int = Field(default=64, ge=1, description="Judge prompts per forward pass.")


class HttpJudgeSpec(_PairwiseCommon):
    """An LLM judge behind an OpenAI-compatible completions endpoint (vLLM, hosted APIs)."""

    kind: Literal["http"]
    base_url: str = Field(pattern=r"^https?://", description="API root, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(min_length=1, description="Model name sent with each request.")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the API key (sent as a bearer token, never logged).",
    )
    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(default=30.0, gt=0.0, description="Timeout of one request (seconds).")
    retries: int = Field(default=3, ge=0, description="Retries of a failed request (429, 5xx, network).")
    backoff_s: float = Field(
        default=0.5,
        ge=0.0,
        description="Ceiling of the first retry's wait, doubling each retry; the wait is drawn uniformly below it "
        "(full jitter), unless a 429 / 503 says how long in Retry-After.",
    )
    top_logprobs: int = Field(
        default=20,
        ge=0,
        le=20,
        description="Top logprobs asked for the verdict token (vLLM allows 20, some hosted APIs 5; 0 = read the text).",
    )


MemberSpec = Annotated[
    Union[RuleJudgeSpec, RewardModelJudgeSpec, PairwiseJudgeSpec, SelfJudgeSpec, HttpJudgeSpec],
    Field(discriminator="kind"),
]


class PopulationJudgeSpec(_Common):
    """Heterogeneous annotators: each pair is labelled by one member drawn by weight, or by a vote."""

    kind: Literal["population"]
    members: tuple[MemberSpec, ...] = Field(min_length=1, description="The annotators; `weight` is each one's share.")
    mode: Literal["draw", "vote"] = Field(
        default="draw", description="'draw': one member per pair, by weight; 'vote': weighted mean of P."
    )
    seed: int = Field(default=0, description="Seeds the draws (with the prompt and the unordered pair).")

    @field_validator("members")
    @classmethod
    def _unique_members(cls, members: tuple[MemberSpec, ...]) -> tuple[MemberSpec, ...]:
        # A field validator (not a model one) so that errors are located at 'members'.
        names = [m.name for m in members]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"member names must be unique; repeated: {dupes}")
        for i, m in enumerate(members):
            if m.kind == "self":  # the one place this rule is stated
                raise ValueError(
                    f"members[{i}] ({m.name!r}): member {m.name!r} is of kind 'self', which a population cannot hold "
                    f"(only top-level self judges receive the policy's weights); list it as its own judge"
                )
            own = [f for f in ("on_failure", "max_skipped_fraction") if getattr(m, f) != _Common.model_fields[f].default]
            if own:
                raise ValueError(
                    f"members[{i}] ({m.name!r}): {' and '.join(own)} is the population's (a member's missing "
                    f"verdict is the population's); set it on the population judge"
                )
        return members


JudgeSpec = Annotated[
    Union[RuleJudgeSpec, RewardModelJudgeSpec, PairwiseJudgeSpec, SelfJudgeSpec, HttpJudgeSpec, PopulationJudgeSpec],
    Field(discriminator="kind"),
]
JUDGE_KINDS: tuple[str, ...] = tuple(  # every `kind` tag, in the union's order
    get_args(spec.model_fields["kind"].annotation)[0] for spec in get_args(get_args(JudgeSpec)[0])
)
POINTWISE_KINDS = ("rule", "reward_model")  # give scalar rewards; every other kind gives preferences


class JudgeManifest(BaseModel):
    model_config = FROZEN
    judges: tuple[JudgeSpec, ...] = Field(min_length=1, description="Judges labelling training batches.")
    eval: JudgeSpec | None = Field(default=None, description="Evaluation judge (default: task ground truth).")

    # Field validators (not a model one) so that errors are located at 'judges' / 'eval'.
    @field_validator("judges")
    @classmethod
    def _unique(cls, judges: tuple[JudgeSpec, ...]) -> tuple[JudgeSpec, ...]:
        names = [j.name for j in judges]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate judge names {dupes}")
        return judges

    @field_validator("eval")
    @classmethod
    def _pointwise_eval(cls, spec: JudgeSpec | None) -> JudgeSpec | None:
        if spec is not None and spec.kind not in POINTWISE_KINDS:
            raise ValueError(
                f"eval judge {spec.name!r} is of kind {spec.kind!r}; evaluation needs a pointwise "
                f"judge (one of {', '.join(POINTWISE_KINDS)})"
            )
        if spec is not None and spec.on_failure != "fail":
            raise ValueError(
                f"eval judge {spec.name!r} has on_failure {spec.on_failure!r}; a win rate needs every held-out "
                f"sample scored, so the eval judge always fails on a missing verdict"
            )
        return spec
