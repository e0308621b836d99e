"""Self judge: the policy judging its own samples with its current weights.

Built from the run's starting policy checkpoint. After every learner update the driver's
`publish_weights` (driver/cluster.py) sends it the state dict the rollout workers get;
`load_weights` loads it with `strict=True` and checks the learner's probe within `sync_tolerance`
(rollout/sync.py), otherwise WeightSyncError stops the run (the weights are not rolled back).
The verdict itself is rollout/judges/verdict.py's.

Online Self-Preferring (OSP) uses this judge by default: deploy/judges/self.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial

import torch

from common.tensors import probe_logprobs
from protocols import SelfJudgeSpec, SyncReport, WeightVersion
from rollout.judges.verdict import VerdictScorer, load_causal_lm
from rollout.sync import load_verified

logger = logging.getLogger(__name__)

DEFAULT_SYNC_TOLERANCE = 1e-3  # RolloutConfig.sync_tolerance's default; the driver passes the run's


class SelfJudge:
    def __init__(
        self,
        spec: SelfJudgeSpec,
        policy_path: str,
        *,
        dtype: str = "float32",
        sync_tolerance: float = DEFAULT_SYNC_TOLERANCE,
    ):
        self.name = spec.name
        self.sync_tolerance = sync_tolerance
        self.policy_version = 0  # the starting policy, as on the rollout workers
        self.model, tokenizer = load_causal_lm(policy_path, dtype)
        self.scorer = VerdictScorer.from_spec(spec, self.model, tokenizer)
        logger.info("self judge %r loaded the policy from %s (%s)", self.name, policy_path, dtype)

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """P(first[i] preferred over second[i]) by the current policy, both orders averaged."""
        return self.scorer.compare(prompts, first, second)

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: WeightVersion) -> SyncReport:
        """Load the learner's full HF-named state dict (strict) and verify it on the version's probe."""

        def load() -> None:
            self.model.load_state_dict(dict(weights), strict=True)  # copies into the existing parameters

        report = load_verified(
            version,
            self.policy_version,
            load,
            partial(probe_logprobs, self.model),
            self.sync_tolerance,
            who=f"judge {self.name!r}",
            worker=f"judge-{self.name}",
        )
        self.policy_version = version.version
        return report
