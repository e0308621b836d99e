"""The check every receiver of the learner's weights makes (rollout workers, self judges).

After loading a published WeightVersion, a receiver recomputes the learner's probe logprobs with
its own engine and compares: a gap above the tolerance means it is not serving what the learner
trained, and `WeightSyncError` stops the run. No torch or vLLM here.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols import SyncProbe


class WeightSyncError(RuntimeError):
    """The served weights do not match the learner's after a sync."""


def probe_gap(served: Sequence[Sequence[float]], probe: SyncProbe) -> float:
    """Largest |served - learner| logprob over the probe tokens; `served` is shaped like probe.logprobs."""
    if len(served) != len(probe.logprobs) or any(len(s) != len(p) for s, p in zip(served, probe.logprobs)):
        raise ValueError("served logprobs are not shaped like the probe's")
    return max(abs(a - b) for row_s, row_l in zip(served, probe.logprobs) for a, b in zip(row_s, row_l))
