"""Data that crosses actor boundaries: prompts -> rollouts -> judgements -> learner.

Everything here is a frozen pydantic model with `extra="forbid"`, so a typo in a field name or a
value of the wrong type fails loudly at the boundary, with the field named in the error. Token
data travels as flat numpy arrays (protocols/arrays.py: int32 ids, float32 logprobs, validated a
whole array at a time); the learner collates them into padded tensors.

Sign convention for preferences (used everywhere in the project):
    `PairPreference.probability` = P(rollout `first` is preferred over rollout `second`);
    > 0.5 means `first` is better, 0.5 is a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.arrays import Logprobs, PromptTokenIds, TokenIds, fields_equal, pack_token_arrays, unpack_token_arrays

FROZEN = ConfigDict(frozen=True, extra="forbid")


class Prompt(BaseModel):
    """One prompt as sent to the rollout workers."""

    model_config = FROZEN
    prompt_id: str = Field(min_length=1, description="Stable id, unique within its split.")
    text: str = Field(min_length=1, description="Prompt text fed to the policy verbatim.")


class PromptBatch(BaseModel):
    """The prompts of one step; each is sampled `samples_per_prompt` times."""

    model_config = FROZEN
    step: int = Field(ge=0, description="Driver step that requested these prompts.")
    prompts: tuple[Prompt, ...] = Field(min_length=1)
    samples_per_prompt: int = Field(ge=1, description="Responses sampled per prompt (K).")


class Rollout(BaseModel):
    """One sampled response with the sampler's own per-token logprobs.

    The token fields take any 1-D sequence and hold read-only numpy arrays (int32 ids, float32
    logprobs); compare them with numpy, not with `==` against a tuple."""

    model_config = FROZEN
    prompt_id: str = Field(min_length=1)
    prompt_text: str
    prompt_token_ids: PromptTokenIds = Field(description="Token ids fed to the engine (chat template applied).")
    response_text: str
    response_token_ids: TokenIds = Field(description="Sampled tokens, including the EOS token when finish_reason is 'stop'.")
    logprobs: Logprobs = Field(description="Sampler logprob of each response token (same length as response_token_ids).")
    policy_version: int = Field(ge=0, description="Weight version that sampled this response.")
    finish_reason: Literal["stop", "length"]

    @model_validator(mode="after")
    def _check_lengths(self) -> Rollout:
        if len(self.logprobs) != len(self.response_token_ids):
            raise ValueError(
                f"logprobs has {len(self.logprobs)} entries but response_token_ids has "
                f"{len(self.response_token_ids)}; they must match one-to-one"
            )
        return self

    @property
    def sequence_token_ids(self) -> np.ndarray:
        """[P + R] the prompt's token ids followed by the response's (arrays add element-wise, so
        `prompt_token_ids + response_token_ids` is not this)."""
        return np.concatenate([self.prompt_token_ids, self.response_token_ids])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rollout):
            return NotImplemented
        return fields_equal(self.__dict__, other.__dict__)

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable; a Rollout is not a key


class RolloutBatch(BaseModel):
    """All rollouts of one step, grouped: the K samples of a prompt are contiguous."""

    model_config = FROZEN
    step: int = Field(ge=0)
    policy_version: int = Field(ge=0, description="Weight version that sampled every rollout.")
    samples_per_prompt: int = Field(ge=1)
    rollouts: tuple[Rollout, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_groups(self) -> RolloutBatch:
        k = self.samples_per_prompt
        if len(self.rollouts) % k:
            raise ValueError(f"{len(self.rollouts)} rollouts is not a multiple of samples_per_prompt={k}")
        for start in range(0, len(self.rollouts), k):
            ids = {r.prompt_id for r in self.rollouts[start : start + k]}
            if len(ids) != 1:
                raise ValueError(f"rollouts {start}..{start + k - 1} mix prompts {sorted(ids)}")
        versions = {r.policy_version for r in self.rollouts}
        if versions != {self.policy_version}:
            raise ValueError(f"rollouts carry policy_version {sorted(versions)}, batch says {self.policy_version}")
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (for the object store) as a few flat arrays: every response's ids, every
        logprob, each distinct prompt array once, with offsets; not one small array per rollout.
        The receiver's rollouts hold read-only views into them (`_unpacked_batch`)."""
        index: dict[int, int] = {}
        prompts: list[tuple[np.ndarray]] = []
        which = []
        for r in self.rollouts:
            if id(r.prompt_token_ids) not in index:
                index[id(r.prompt_token_ids)] = len(prompts)
                prompts.append((r.prompt_token_ids,))
            which.append(index[id(r.prompt_token_ids)])
        scalars = [(r.prompt_id, r.prompt_text, r.response_text, r.policy_version, r.finish_reason) for r in self.rollouts]
        head = (self.step, self.policy_version, self.samples_per_prompt)
        packed = (pack_token_arrays(prompts), pack_token_arrays([(r.response_token_ids, r.logprobs) for r in self.rollouts]))
        return _unpacked_batch, (head, scalars, which, packed)

    def groups(self) -> list[tuple[Rollout, ...]]:
        """The rollouts split into per-prompt groups of `samples_per_prompt`."""
        k = self.samples_per_prompt
        return [self.rollouts[i : i + k] for i in range(0, len(self.rollouts), k)]

    def part(self, index: int, parts: int) -> RolloutBatch:
        """Part `index` of `parts`: contiguous whole prompt groups, the first parts one group larger
        when they do not divide evenly (how judge replicas share a batch)."""
        start, stop = part_bounds(len(self.rollouts) // self.samples_per_prompt, index, parts)
        k = self.samples_per_prompt
        return self.model_copy(update={"rollouts": self.rollouts[start * k : stop * k]})


def _unpacked_batch(
    head: tuple[int, int, int],
    scalars: Sequence[tuple[str, str, str, int, str]],
    which: Sequence[int],
    packed: tuple[tuple[list[np.ndarray], np.ndarray], tuple[list[np.ndarray], np.ndarray]],
) -> RolloutBatch:
    """`RolloutBatch.__reduce__`'s inverse. Not validated again: the batch was validated when it
    was made, and the arrays come back as the same read-only values (as pydantic's own unpickling,
    which does not validate either)."""
    prompts = [row[0] for row in unpack_token_arrays(*packed[0])]
    tokens = unpack_token_arrays(*packed[1])
    rollouts = tuple(
        Rollout.model_construct(
            prompt_id=prompt_id,
            prompt_text=prompt_text,
            prompt_token_ids=prompts[w],
            response_text=response_text,
            response_token_ids=response,
            logprobs=logprobs,
            policy_version=version,
            finish_reason=finish_reason,
        )
        for (prompt_id, prompt_text, response_text, version, finish_reason), w, (response, logprobs) in zip(
            scalars, which, tokens, strict=True
        )
    )
    step, policy_version, samples_per_prompt = head
    return RolloutBatch.model_construct(
        step=step, policy_version=policy_version, samples_per_prompt=samples_per_prompt, rollouts=rollouts
    )


class SampleExample(BaseModel):
    """One rollout's text, for samples.jsonl."""

    model_config = FROZEN
    prompt: str
    response: str


class BatchSummary(BaseModel):
    """What the driver reads of a RolloutBatch: the statistics it logs and a few examples. The batch
    itself goes from the rollout worker to the judges and the learner by reference, never through
    the driver (`RolloutActor.sample` returns both)."""

    model_config = FROZEN
    policy_version: int = Field(ge=0)
    samples_per_prompt: int = Field(ge=1)
    rollouts: int = Field(ge=1, description="Number of rollouts in the batch.")
    response_tokens: int = Field(ge=0, description="Response tokens over all rollouts.")
    truncated: int = Field(ge=0, description="Rollouts that stopped at the length limit.")
    prompt_ids: tuple[str, ...] = Field(description="Each prompt group's prompt id, in order.")
    examples: tuple[SampleExample, ...] = Field(description="The first few rollouts' text.")


def summarize(batch: RolloutBatch, examples: int = 3) -> BatchSummary:
    """The BatchSummary of `batch` with its first `examples` rollouts' text."""
    return BatchSummary(
        policy_version=batch.policy_version,
        samples_per_prompt=batch.samples_per_prompt,
        rollouts=len(batch.rollouts),
        response_tokens=sum(len(r.response_token_ids) for r in batch.rollouts),
        truncated=sum(r.finish_reason == "length" for r in batch.rollouts),
        prompt_ids=tuple(group[0].prompt_id for group in batch.groups()),
        examples=tuple(SampleExample(prompt=r.prompt_text, response=r.response_text) for r in batch.rollouts[:examples]),
    )


def part_bounds(groups: int, index: int, parts: int) -> tuple[int, int]:
    """[start, stop) of part `index` of `groups` prompt groups cut into `parts` (none empty)."""
    if not 0 <= index < parts <= groups:
        raise ValueError(f"part {index} of {parts}: needs 0 <= index < parts <= {groups} (the prompt groups)")
    size, extra = divmod(groups, parts)
    start = index * size + min(index, extra)
    return start, start + size + (index < extra)


class PairPreference(BaseModel):
    """A judged comparison of two rollouts of the same prompt, by index into the batch."""

    model_config = FROZEN
    first: int = Field(ge=0)
    second: int = Field(ge=0)
    probability: float = Field(ge=0.0, le=1.0, description="P(first preferred over second); > 0.5 favours first.")

    @model_validator(mode="after")
    def _distinct(self) -> PairPreference:
        if self.first == self.second:
            raise ValueError(f"a rollout cannot be compared with itself (index {self.first})")
        return self


class Judgement(BaseModel):
    """What one judge said about a RolloutBatch: scalar rewards and/or pairwise preferences."""

    model_config = FROZEN
    judge: str = Field(min_length=1, description="Name of the judge in the manifest.")
    rewards: tuple[float, ...] | None = Field(
        default=None, description="One scalar per rollout, in batch order; higher is better."
    )
    preferences: tuple[PairPreference, ...] | None = None
    seconds: float | None = Field(default=None, ge=0.0, description="Time the judge spent on this batch.")
    failed: int = Field(
        default=0,
        ge=0,
        description="Verdicts asked of the judge that it could not give (only with on_failure: skip): rewards "
        "(NaN in `rewards`) or pair preferences (absent from `preferences`).",
    )
    unjudged: tuple[int, ...] = Field(
        default=(), description="Rollouts (batch indices, ascending) some verdict of this judge is missing for."
    )
    failure: str | None = Field(default=None, description="Why the first missing verdict is missing.")

    @model_validator(mode="after")
    def _something(self) -> Judgement:
        if self.rewards is None and self.preferences is None:
            raise ValueError("a judgement needs rewards, preferences or both")
        if (self.failed > 0) != bool(self.unjudged):
            raise ValueError(f"failed={self.failed} but unjudged={list(self.unjudged)}: both or neither")
        if list(self.unjudged) != sorted(set(self.unjudged)) or (self.unjudged and self.unjudged[0] < 0):
            raise ValueError(f"unjudged must be ascending distinct rollout indices, got {list(self.unjudged)}")
        if self.rewards is not None:
            missing = set(self.unjudged)
            if any(not math.isfinite(r) for i, r in enumerate(self.rewards) if i not in missing):
                raise ValueError("rewards must be finite numbers (NaN only for unjudged rollouts)")
        return self

    @property
    def asked(self) -> int:
        """Verdicts asked of the judge: one reward per rollout, or the pairs it compared (given or failed)."""
        if self.rewards is not None:
            return len(self.rewards)
        return len(self.preferences or ()) + self.failed


def merge_judgements(parts: Sequence[Judgement], sizes: Sequence[int]) -> Judgement:
    """One judgement of a batch from the judgements of its consecutive parts (`sizes`: rollouts in
    each): indices shifted to the whole batch; seconds the longest part's (they ran side by side)."""
    if len(parts) != len(sizes) or not parts:
        raise ValueError(f"{len(parts)} part judgements for {len(sizes)} parts")
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    kinds = {(p.rewards is None, p.preferences is None) for p in parts}
    if len(kinds) > 1:
        raise ValueError(f"the parts of judge {parts[0].judge!r}'s judgement disagree on giving rewards or preferences")
    rewards = preferences = None
    if parts[0].rewards is not None:
        rewards = tuple(r for p in parts for r in p.rewards or ())
    if parts[0].preferences is not None:
        preferences = tuple(
            q.model_copy(update={"first": q.first + o, "second": q.second + o})
            for p, o in zip(parts, offsets)
            for q in p.preferences or ()
        )
    failures = [f"part {i} (rollouts from {o}): {p.failure}" for i, (p, o) in enumerate(zip(parts, offsets)) if p.failure]
    seconds = [p.seconds for p in parts if p.seconds is not None]
    return Judgement(
        judge=parts[0].judge,
        rewards=rewards,
        preferences=preferences,
        seconds=max(seconds) if seconds else None,
        failed=sum(p.failed for p in parts),
        unjudged=tuple(i + o for p, o in zip(parts, offsets) for i in p.unjudged),
        failure=failures[0] if failures else None,
    )


class JudgedBatch(BaseModel):
    """A RolloutBatch with the judgements of every judge that saw it."""

    model_config = FROZEN
    batch: RolloutBatch
    judgements: tuple[Judgement, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _match(self) -> JudgedBatch:
        n = len(self.batch.rollouts)
        k = self.batch.samples_per_prompt
        names = [j.judge for j in self.judgements]
        if len(set(names)) != len(names):
            raise ValueError(f"judgements repeat a judge: {names}")
        for j in self.judgements:
            if j.unjudged:  # never trained on: the driver drops their prompt groups (driver/judge_failures.py)
                raise ValueError(
                    f"judge {j.judge!r} gave no verdict for rollouts {list(j.unjudged)[:8]}; their prompt groups "
                    f"must be dropped before training"
                )
        for j in self.judgements:
            if j.rewards is not None and len(j.rewards) != n:
                raise ValueError(f"judge {j.judge!r} gave {len(j.rewards)} rewards for {n} rollouts")
            for p in j.preferences or ():
                if max(p.first, p.second) >= n:
                    raise ValueError(f"judge {j.judge!r} compares index {max(p.first, p.second)} of {n} rollouts")
                if p.first // k != p.second // k:
                    raise ValueError(f"judge {j.judge!r} compares rollouts {p.first} and {p.second} of different prompts")
        return self
