"""Run metrics for the Ray dashboard / Prometheus (`ray.util.metrics`).

Every numeric key the driver logs (`learner/loss`, `rollout/tokens_per_s`, ...) is also a gauge
named `online_rlhf_<key with / and - as _>` (Prometheus shows it as `ray_online_rlhf_...`), tagged
with the run name, so the dashboard's Metrics view and any Prometheus scraper see the same values
as metrics.jsonl. Actors add what only they see: judge latency (histogram) and judged rollouts
(counter), generated tokens (counter), weight-sync time (histogram).
"""

from __future__ import annotations

import re

from ray.util.metrics import Counter, Gauge, Histogram

PREFIX = "online_rlhf_"
_gauges: dict[str, Gauge] = {}


def metric_name(key: str) -> str:
    """'judge/ground-truth/mean' -> 'online_rlhf_judge_ground_truth_mean'."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", key)


def publish(record: dict[str, float], run: str) -> None:
    """Set one gauge per numeric key of a metrics record (driver side)."""
    for key, value in record.items():
        if key == "step" or not isinstance(value, int | float):
            continue
        name = metric_name(key)
        if name not in _gauges:
            _gauges[name] = Gauge(name, description=f"{key} (see README: Progress and metrics)", tag_keys=("run",))
        _gauges[name].set(float(value), tags={"run": run})


class JudgeTelemetry:
    def __init__(self, judge: str):
        self.tags = {"judge": judge}
        self.latency = Histogram(
            metric_name("judge/latency_seconds"),
            description="Seconds per judged batch",
            boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 30],
            tag_keys=("judge",),
        )
        self.judged = Counter(metric_name("judge/rollouts_total"), description="Rollouts judged", tag_keys=("judge",))

    def observe(self, seconds: float, rollouts: int) -> None:
        self.latency.observe(seconds, tags=self.tags)
        self.judged.inc(rollouts, tags=self.tags)


class RolloutTelemetry:
    def __init__(self, worker: str):
        self.tags = {"worker": worker}
        self.tokens = Counter(metric_name("rollout/tokens_total"), description="Response tokens generated", tag_keys=("worker",))
        self.sync = Histogram(
            metric_name("sync/load_seconds"),
            description="Seconds to load and verify new weights",
            boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 30],
            tag_keys=("worker",),
        )

    def generated(self, tokens: int) -> None:
        self.tokens.inc(tokens, tags=self.tags)

    def synced(self, seconds: float) -> None:
        self.sync.observe(seconds, tags=self.tags)
