"""Self judge: the policy judging its own samples with its current weights.

Where it sits: built by `build_judge` for `kind: self` specs from the run's policy path (the same
starting checkpoint as the rollout workers and the learner), wrapped by actors/judge.py. After
every learner update the driver's `publish_weights` (driver/cluster.py) sends it the same HF-named
state dict the rollout workers get; `load_weights` loads it with `strict=True` and, like
rollout/sampler.py, proves it now computes the learner's probe logprobs within `sync_tolerance`,
otherwise WeightSyncError stops the run. After a failed check the loaded weights are not rolled
back (the run stops anyway). The verdict itself is rollout/judges/verdict.py's.

Online Self-Preferring (OSP) uses this judge by default: deploy/judges/self.yaml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import torch

from protocols import SelfJudgeSpec, SyncReport, WeightVersion
from rollout.judges.verdict import VerdictScorer, load_causal_lm
from rollout.sync import WeightSyncError, probe_gap

logger = logging.getLogger(__name__)

DEFAULT_SYNC_TOLERANCE = 1e-3  # RolloutConfig.sync_tolerance's default; the driver passes the run's


class SelfJudge:
    def __init__(
        self, spec: SelfJudgeSpec, policy_path: str, *, dtype: str = "float32",
        sync_tolerance: float = DEFAULT_SYNC_TOLERANCE,
    ):
        self.name = spec.name
        self.sync_tolerance = sync_tolerance
        self.policy_version = 0  # the starting policy, as on the rollout workers
        self.model, tokenizer = load_causal_lm(policy_path, dtype)
        self.scorer = VerdictScorer(spec.name, self.model, tokenizer, spec.template, spec.choices, spec.batch_size,
                                    spec.chat_template, spec.verdict_temperature)
        logger.info("self judge %r loaded the policy from %s (%s)", self.name, policy_path, dtype)

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """P(first[i] preferred over second[i]) by the current policy, both orders averaged."""
        return self.scorer.compare(prompts, first, second)

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: WeightVersion) -> SyncReport:
        """Load the learner's full HF-named state dict (strict) and verify it on the version's probe."""
        if version.version <= self.policy_version:
            raise WeightSyncError(f"judge {self.name!r}: got weight version {version.version}, already at {self.policy_version}")
        start = time.perf_counter()
        self.model.load_state_dict(dict(weights), strict=True)  # copies into the existing parameters
        gap = probe_gap(self.probe_logprobs(version.probe.token_ids), version.probe)
        seconds = time.perf_counter() - start
        if gap > self.sync_tolerance:
            raise WeightSyncError(
                f"judge {self.name!r}: loaded weights differ from learner version {version.version}: probe "
                f"logprob gap {gap:.2e} > sync_tolerance {self.sync_tolerance:.0e}"
            )
        self.policy_version = version.version
        return SyncReport(worker=f"judge-{self.name}", version=version.version, seconds=seconds, max_abs_logprob_diff=gap)

    @torch.no_grad()
    def probe_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """log p(seq[t+1] | seq[:t+1]) for every t, one unpadded sequence at a time (as the learner's probe)."""
        device = next(self.model.parameters()).device
        rows = []
        for seq in sequences:
            ids = torch.tensor([list(seq)], device=device)  # [1, T]
            logits = self.model(input_ids=ids).logits[0, :-1].float()  # [T-1, V]
            logprobs = logits.gather(-1, ids[0, 1:, None])[:, 0] - logits.logsumexp(-1)  # [T-1]
            rows.append(logprobs.tolist())
        return rows
