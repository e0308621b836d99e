"""The check every receiver of the learner's weights makes (rollout workers, self judges).

After loading a published WeightVersion, a receiver recomputes the learner's probe logprobs with
its own engine and compares: a gap above the tolerance means it is not serving what the learner
trained, and `WeightSyncError` stops the run. No torch or vLLM here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from protocols import SyncProbe, SyncReport, WeightVersion

logger = logging.getLogger(__name__)
ServedLogprobs = Callable[[Sequence[Sequence[int]]], Sequence[Sequence[float]]]


class WeightSyncError(RuntimeError):
    """The served weights do not match the learner's after a sync."""


def probe_gap(served: Sequence[Sequence[float]], probe: SyncProbe) -> float:
    """Largest |served - learner| logprob over the probe tokens; `served` is shaped like probe.logprobs."""
    if len(served) != len(probe.logprobs) or any(len(s) != len(p) for s, p in zip(served, probe.logprobs)):
        raise ValueError("served logprobs are not shaped like the probe's")
    return max(abs(a - b) for row_s, row_l in zip(served, probe.logprobs) for a, b in zip(row_s, row_l))


def load_verified(
    version: WeightVersion,
    current: int,
    load: Callable[[], object],
    served_logprobs: ServedLogprobs,
    tolerance: float,
    *,
    who: str,
    worker: str,
) -> SyncReport:
    """Load a weight version with `load()` and prove it on the version's probe.

    Any version is taken, older ones included (`current` is only logged): after an actor died the
    driver gives its replacement, batch by batch, the weights each lost batch was launched with, and
    a learner restored from a checkpoint sends the checkpoint's version back to every receiver
    (driver/faults.py). What is served is proven by the probe, not by the number.

    WeightSyncError, its message starting with `who`, if `served_logprobs(probe sequences)` differs
    from the learner's by more than `tolerance`; the weights are then not rolled back. Otherwise
    `worker`'s SyncReport (seconds: load and check).
    """
    if version.version < current:
        logger.info("%s: loading weight version %d over %d (work redone after a fault)", who, version.version, current)
    start = time.perf_counter()
    load()
    gap = probe_gap(served_logprobs(version.probe.token_ids), version.probe)
    seconds = time.perf_counter() - start
    if gap > tolerance:
        raise WeightSyncError(
            f"{who}: loaded weights differ from learner version {version.version}: probe logprob gap "
            f"{gap:.2e} > sync_tolerance {tolerance:.0e}"
        )
    return SyncReport(worker=worker, version=version.version, seconds=seconds, max_abs_logprob_diff=gap)
