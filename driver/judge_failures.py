"""Missing verdicts at the driver: counted per judge, capped, and kept out of training.

A judge with `on_failure: skip` answers a batch even when some verdicts are missing: its
Judgement marks them (`failed`, `unjudged`, `failure`; rollout/judges/base.py). A judge with
`on_failure: fail` raises instead, and the run stops at that step with its error. Every step,
`JudgeFailures.apply` (driver/run.py `train_step`):

1. adds each judgement's missing and asked verdicts to its judge's totals over the run. Once a
   judge's missing / asked exceeds its `max_skipped_fraction`, the run stops (JudgeFailureError,
   naming the judge, the counts, the cap and the last reason);
2. drops from each batch every prompt group holding a rollout some judge left without a verdict:
   the whole group, with every judge's verdicts on it, so that a group is trained on with the
   same judges as the others and keeps its K samples. Judgements are re-indexed to the smaller
   batch; a batch left empty is dropped; a step left with nothing to train on stops the run;
3. reports the totals as the cumulative metrics `judges/<name>/failures` (verdicts missing) and
   `judges/<name>/skipped` (rollouts dropped from training because of them).

The totals start from zero when a run is resumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

from protocols import BatchSummary, Judgement, JudgeSpec, PairPreference, RolloutBatch, summarize

logger = logging.getLogger("driver")


def ray_get(refs: Sequence[Any]) -> list[RolloutBatch]:
    """The batches behind `refs` (done already: their summaries were read)."""
    return ray.get(list(refs))


class JudgeFailureError(RuntimeError):
    """A judge missed more verdicts than its `max_skipped_fraction` allows, or a step has nothing left."""


class JudgeFailures:
    def __init__(self) -> None:
        self.specs: dict[str, JudgeSpec] = {}
        self.failed: dict[str, int] = {}
        self.asked: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def apply(
        self,
        step: int,
        summaries: list[BatchSummary],
        judgements: list[list[Judgement]],
        refs: Sequence[Any],
        specs: Mapping[str, JudgeSpec],
        fetch: Callable[[Sequence[Any]], list[RolloutBatch]] = ray_get,
    ) -> tuple[list[BatchSummary], list[list[Judgement]], list[Any]]:
        """(summaries, judgements, what the learner gets) of one step, without the unjudged groups.

        `refs`: the batches' ObjectRefs, passed on to the learner as they are when nothing is dropped;
        else the batches are fetched (`fetch`, only then) and the learner gets the smaller ones
        themselves. `specs`: the current judges' specs (those of judges retired by a swap are remembered).
        """
        self.specs.update(specs)
        for name in specs:
            for totals in (self.failed, self.asked, self.skipped):
                totals.setdefault(name, 0)
        last_reason: dict[str, str] = {}
        for per_batch in judgements:
            for j in per_batch:
                self.failed[j.judge] = self.failed.get(j.judge, 0) + j.failed
                self.asked[j.judge] = self.asked.get(j.judge, 0) + j.asked
                self.skipped.setdefault(j.judge, 0)
                if j.failure:
                    last_reason[j.judge] = j.failure
        for name, reason in last_reason.items():
            self._check_cap(step, name, reason)
        if not last_reason:
            return summaries, judgements, list(refs)
        batches = fetch(refs)

        kept_batches, kept_judgements, dropped_groups, total_groups = [], [], 0, 0
        for batch, per_batch in zip(batches, judgements, strict=True):
            k = batch.samples_per_prompt
            groups = len(batch.rollouts) // k
            total_groups += groups
            bad: dict[int, list[str]] = {}  # group -> judges that left it without a verdict
            for j in per_batch:
                for g in sorted({i // k for i in j.unjudged}):
                    bad.setdefault(g, []).append(j.judge)
            for names in bad.values():
                for name in names:
                    self.skipped[name] = self.skipped.get(name, 0) + k
            dropped_groups += len(bad)
            keep = [g for g in range(groups) if g not in bad]
            if not keep:
                continue
            kept_batches.append(_subset(batch, keep))
            kept_judgements.append([_reindexed(j, keep, k) for j in per_batch])
        shares = ", ".join(
            f"judge {name!r}: {self.failed[name]} of {self.asked[name]} verdicts missing so far "
            f"(cap {_cap(self.specs.get(name)):.0%}; last: {reason})"
            for name, reason in last_reason.items()
        )
        logger.warning(
            "step %d: %d of %d prompt groups dropped from training for missing verdicts; %s",
            step,
            dropped_groups,
            total_groups,
            shares,
        )
        if not kept_batches:
            raise JudgeFailureError(
                f"step {step}: every prompt group lacks a verdict from some judge, so there is nothing to train on; {shares}"
            )
        return [summarize(b) for b in kept_batches], kept_judgements, kept_batches

    def _check_cap(self, step: int, name: str, reason: str) -> None:
        spec = self.specs.get(name)
        cap = _cap(spec)
        failed, asked = self.failed[name], self.asked[name]
        if asked and failed / asked > cap:
            kind = f" (kind {spec.kind})" if spec is not None else ""
            raise JudgeFailureError(
                f"judge {name!r}{kind} gave no verdict for {failed} of the {asked} verdicts asked of it so far "
                f"({failed / asked:.1%}), more than its max_skipped_fraction {cap:g}; stopping at step {step}. "
                f"Last: {reason}"
            )

    def metrics(self) -> dict[str, float]:
        """Cumulative `judges/<name>/failures` and `judges/<name>/skipped` of every judge seen."""
        out = {}
        for name in self.asked:
            out[f"judges/{name}/failures"] = float(self.failed.get(name, 0))
            out[f"judges/{name}/skipped"] = float(self.skipped.get(name, 0))
        return out


def _cap(spec: JudgeSpec | None) -> float:
    return spec.max_skipped_fraction if spec is not None and spec.on_failure == "skip" else 0.0


def _subset(batch: RolloutBatch, groups: list[int]) -> RolloutBatch:
    k = batch.samples_per_prompt
    rollouts = tuple(r for g in groups for r in batch.rollouts[g * k : (g + 1) * k])
    return batch.model_copy(update={"rollouts": rollouts})


def _reindexed(j: Judgement, groups: list[int], k: int) -> Judgement:
    """`j` on the rollouts of `groups` only, indices renumbered; no missing verdict left in it."""
    new = {g * k + a: n * k + a for n, g in enumerate(groups) for a in range(k)}
    rewards = None if j.rewards is None else tuple(j.rewards[old] for old in sorted(new))
    preferences = (
        None
        if j.preferences is None
        else tuple(
            PairPreference(first=new[p.first], second=new[p.second], probability=p.probability)
            for p in j.preferences
            if p.first in new
        )
    )
    return Judgement(judge=j.judge, rewards=rewards, preferences=preferences, seconds=j.seconds)
