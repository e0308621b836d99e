"""A real Prometheus, configured with deploy/monitoring/prometheus.yml (only the discovery file's
directory and the scrape interval changed), scrapes a `ray start --head` cluster that carries a
run's metrics; its HTTP query API must return them under the documented names
(`ray_online_rlhf_<key>`, tagged with the run) with the run's values, and every query of the
Grafana dashboard (deploy/monitoring/grafana-dashboard.json) must return data.

The run's metrics are those of a recorded run of the embedded default (run_metrics.jsonl:
`python -m driver --steps 20 --set eval.every=10 --set eval.num_prompts=8`), published by
run_publisher.py through the driver's own call, plus a judge actor and rollout telemetry at work:
starting vLLM and DeepSpeed alone takes longer than this test may. bench/monitoring.py does the
same against a live run, in a browser too.

Needs the `prometheus` binary (Debian: apt-get install prometheus): skipped without it, except in
CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from actors.telemetry import metric_name
from tests.e2e.ray_head import free_port

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = REPO / "deploy" / "monitoring" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "monitoring" / "grafana-dashboard.json"
RUN = "mnpo-monitoring-test"
ACTOR_SERIES = [
    "ray_online_rlhf_judge_latency_seconds_bucket",
    "ray_online_rlhf_judge_latency_seconds_count",
    "ray_online_rlhf_judge_rollouts_total",
    "ray_online_rlhf_rollout_tokens_total",
    "ray_online_rlhf_sync_load_seconds_bucket",
]


@pytest.fixture(scope="session")  # session scope: checked before the (session) cluster starts
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("the prometheus binary is not installed: .ci/run installs it (apt-get install prometheus)")
    pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus)")


def recorded_run() -> tuple[dict[str, float], dict[str, float]]:
    """(last training-step record, last evaluation record) of run_metrics.jsonl."""
    records = [json.loads(line) for line in (HERE / "run_metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "learner/policy_version" in r]
    evals = [r for r in records if "eval/win_rate" in r]
    return steps[-1], evals[-1]


def wait_for(what: str, check, timeout_s: float, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(interval_s)


class PrometheusAPI:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict | None:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.loads(response.read())
        except OSError:
            return None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if data else []


@pytest.fixture
def prometheus(prometheus_binary, monitored_head, tmp_path):
    """Prometheus on 127.0.0.1 with the project's config, pointed at this cluster's discovery file."""
    discovery = monitored_head.temp_dir / "prom_metrics_service_discovery.json"
    export_port = urllib.parse.urlparse(monitored_head.metrics).port
    # The discovery file lists the dashboard first, the node's metrics agent once it runs.
    wait_for(
        f"{discovery} to list the node's metrics port",
        lambda: discovery.exists() and f':{export_port}"' in discovery.read_text(),
        60,
    )

    config = yaml.safe_load(CONFIG.read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["file_sd_configs"]
    assert job["job_name"] == "ray" and sd["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    sd["files"] = [str(discovery)]
    config["global"]["scrape_interval"] = "1s"  # the cluster reports every second (tests/e2e/ray_head.py)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = free_port()
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = PrometheusAPI(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        return api.get("/api/v1/status/runtimeinfo") is not None

    try:
        wait_for("Prometheus to answer", ready, 60)
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def publishing_run(monitored_head, tmp_path):
    log = tmp_path / "publisher.log"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "run_publisher.py"), monitored_head.gcs, RUN],
        cwd=REPO,
        env=monitored_head.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    try:

        def started() -> list[str]:
            assert proc.poll() is None, log.read_text()[-3000:]
            return select_line(proc).split()

        judge_worker, publisher_worker = wait_for("the publisher's first judged batch", started, 120)
        yield {"judge": judge_worker, "rollout": publisher_worker}
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def select_line(proc: subprocess.Popen) -> str:
    import select

    readable, _, _ = select.select([proc.stdout], [], [], 0)
    return proc.stdout.readline() if readable else ""


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL with the dashboard's variables filled in) of every target."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (p["title"], t["legendFormat"], t["expr"].replace("$run", RUN).replace("$__rate_interval", "20s"))
        for p in panels
        for t in p["targets"]
    ]


def test_prometheus_scrapes_the_run_metrics_and_serves_the_dashboard_queries(prometheus, publishing_run):
    step, evaluation = recorded_run()
    expected = {
        "ray_" + metric_name(k): v for k, v in {**step, **evaluation}.items() if k != "step" and isinstance(v, int | float)
    }

    def gauges() -> dict[str, float] | None:
        found = {s["metric"]["__name__"]: s for s in prometheus.query(f'{{__name__=~"ray_online_rlhf_.+", run="{RUN}"}}')}
        return found if expected.keys() <= found.keys() else None

    series = wait_for("every gauge of the run", gauges, 90)
    # Every gauge under its documented name, tagged with the run, at the run's last value.
    for name, value in expected.items():
        got = float(series[name]["value"][1])
        assert math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-12), (name, got, value)
    assert float(series["ray_online_rlhf_learner_policy_version"]["value"][1]) == 20.0
    assert 0.0 < float(series["ray_online_rlhf_rollout_reward_mean"]["value"][1]) < 1.0
    assert series["ray_online_rlhf_eval_win_rate"]["metric"]["run"] == RUN

    # The actors' own metrics: judged rollouts (4 per batch) and latency per judge, tokens and
    # weight-sync times per worker.
    wait_for("the actors' metrics", lambda: set(ACTOR_SERIES) <= set(prometheus.get("/api/v1/label/__name__/values")), 60)
    workers = publishing_run  # other tests' actors on this cluster may carry the same judge and worker names
    (judged,) = prometheus.query(f'ray_online_rlhf_judge_rollouts_total{{judge="ground-truth", WorkerId="{workers["judge"]}"}}')
    assert float(judged["value"][1]) >= 4 and float(judged["value"][1]) % 4 == 0
    (tokens,) = prometheus.query(f'ray_online_rlhf_rollout_tokens_total{{worker="rollout-0", WorkerId="{workers["rollout"]}"}}')
    assert float(tokens["value"][1]) >= 128 and float(tokens["value"][1]) % 128 == 0

    # Every query of the Grafana dashboard returns finite data (rates need a few scrapes).
    def dashboard_answers() -> dict[str, list[float]] | None:
        answers = {}
        for title, legend, expr in dashboard_queries():
            values = [float(s["value"][1]) for s in prometheus.query(expr)]
            if not values or not all(math.isfinite(v) for v in values):
                return None
            answers[f"{title} / {legend}"] = values
        return answers

    answers = wait_for("every dashboard query to return data", dashboard_answers, 60, interval_s=1.0)
    samples_per_s = step["rollout/samples"] / step["time/step_seconds"]
    assert answers["Samples/s / {{run}}"] == pytest.approx([samples_per_s], rel=1e-6)
    mean, std = step["rollout/reward_mean"], step["rollout/reward_std"]
    assert answers["Reward / {{run}} mean - std"] == pytest.approx([mean - std], rel=1e-6)
    assert answers["Reward / {{run}} mean + std"] == pytest.approx([mean + std], rel=1e-6)
    (low,), (rate,), (high,) = (
        answers[f"Held-out win rate vs the starting policy (95% CI) / {{{{run}}}} {k}"] for k in ("CI low", "win rate", "CI high")
    )
    assert 0.0 <= low <= rate <= high <= 1.0 and rate == pytest.approx(evaluation["eval/win_rate"])
    (p95,) = answers["Judge latency / {{judge}} p95"]
    assert 0.0 < p95 <= 0.05  # a rule judge on 4 rollouts: inside the histogram's first buckets
    (judged_per_s,) = answers["Judged rollouts/s / {{judge}}"]
    assert judged_per_s > 0.0
    (tokens_per_s,) = answers["Tokens/s / {{worker}} generated"]
    assert tokens_per_s > 0.0
