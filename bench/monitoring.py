"""Monitoring a run as a user sees it: the embedded default under `ray job submit` (README,
"Running on a Ray cluster"), scraped by Prometheus with deploy/monitoring/prometheus.yml, and the
Ray dashboard in headless Chromium, the token pasted into the dashboard's dialog.

    python bench/monitoring.py                       # a few minutes on 2 cores; writes runs/bench-monitoring/
    python bench/monitoring.py --steps 400 --out OUT

Checks, in this order, while the run goes (the first that fails ends the bench with exit status 1):
- Jobs page: the job RUNNING, with its entrypoint;
- Actors page: rollout-0, learner-0, judge-ground-truth-0 and eval-judge-ground-truth-0 ALIVE,
  each with the Repr Ray recorded for it (`name | role ...`, actors/status.py);
- the actors' live repr, listed as docs/monitoring.md shows (its Python snippet, run as written);
- Prometheus: every metric of deploy/monitoring/grafana-dashboard.json is among the series it
  scraped from the run, and every dashboard query returns data;
- the job SUCCEEDED.
The Metrics page is loaded too and what it says is recorded. Everything found (page texts,
Prometheus answers, live reprs) goes to OUT/results.json, screenshots to OUT/*.png.

Needs `prometheus` and `chromium` (Debian: apt-get install prometheus chromium). Everything binds
to 127.0.0.1 except what Ray itself opens. Not a test: a run's start alone takes minutes here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import psutil
import yaml

os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is imported: its clients then send the cluster's token (README)
from ray.job_submission import JobSubmissionClient  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
ACTORS = {  # name -> the start of the Repr Ray records for it
    "rollout-0": "rollout-0 | rollout worker, vLLM ",
    "learner-0": "learner-0 | learner rank 0/1",
    "judge-ground-truth-0": "judge-ground-truth-0 | judge ground-truth, kind rule",
    "eval-judge-ground-truth-0": "eval-judge-ground-truth-0 | eval judge ground-truth, kind rule",
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]
log = logging.getLogger("bench.monitoring")


class CheckFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout_s: float, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except OSError:
        return False


def http_json(url: str, timeout_s: float = 10.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except OSError:
        return None


# ----------------------------------------------------------------------------- processes
class Processes:
    """What the bench started, stopped by process group (and Ray's daemons by their GCS port)."""

    def __init__(self):
        self.groups: list[subprocess.Popen] = []
        self.gcs_port: int | None = None

    def start(self, args: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.groups):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if self.gcs_port:  # Ray's daemons do not all stay in `ray start`'s group
            marker = f":{self.gcs_port}"
            for process in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(process.info["cmdline"] or ())
                if process.pid != os.getpid() and (marker in cmdline or f"port={self.gcs_port}" in cmdline):
                    try:
                        process.kill()
                    except psutil.NoSuchProcess:
                        pass


# ----------------------------------------------------------------------------- Chromium
class Browser:
    """Headless Chromium over the DevTools protocol (aiohttp's websocket client)."""

    def __init__(self, websocket):
        self.ws, self.next_id = websocket, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), 60)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise CheckFailed(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def text(self) -> str:
        return await self.evaluate("document.body ? document.body.innerText : ''") or ""

    async def wait_text(self, what: str, predicate, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = await self.text()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise CheckFailed(f"timed out after {timeout_s:.0f}s waiting for {what}; the page says:\n{text[:3000]}")
            await asyncio.sleep(1.0)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


async def browse_dashboard(dashboard: str, token: str, entrypoint: str, out: Path, debug_port: int) -> dict:
    targets = wait_for("Chromium's DevTools endpoint", lambda: http_json(f"http://127.0.0.1:{debug_port}/json/list"), 60)
    page = next(t for t in targets if t["type"] == "page")
    found: dict = {}
    async with aiohttp.ClientSession() as session, session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        browser = Browser(ws)
        await browser.call("Page.enable")
        await browser.call("Page.navigate", url=f"{dashboard}/")
        # The dashboard asks for the token: paste it into its field and press Enter, as a user does.
        await browser.wait_text("the token dialog", lambda t: "Authentication Token Required" in t, 90)
        field = "document.querySelector('input[placeholder=\"Enter your authentication token\"]')"
        if not await browser.evaluate(f"(() => {{ const f = {field}; if (!f) return false; f.focus(); return true; }})()"):
            raise CheckFailed("the token dialog has no token field")
        await browser.call("Input.insertText", text=token)
        for kind in ("keyDown", "keyUp"):
            await browser.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                text="\r" if kind == "keyDown" else "",
            )
        await browser.wait_text(
            "the dashboard after the token", lambda t: t and "Authentication Token Required" not in t and "Cluster" in t, 60
        )

        await browser.call("Page.navigate", url=f"{dashboard}/#/jobs")
        jobs = await browser.wait_text("the job RUNNING on the Jobs page", lambda t: "RUNNING" in t and entrypoint in t, 90)
        await browser.screenshot(out / "jobs.png")
        found["jobs_page"] = jobs

        await browser.call("Page.navigate", url=f"{dashboard}/#/actors")
        actors = await browser.wait_text(
            "the run's actors and their repr on the Actors page",
            lambda t: all(name in t for name in ACTORS) and all(r in t for r in ACTORS.values()) and "ALIVE" in t,
            90,
        )
        await browser.screenshot(out / "actors.png")
        found["actors_page"] = actors
        found["actors_repr"] = {
            name: re.search(re.escape(start) + r"[^\t\n]*", actors).group(0) for name, start in ACTORS.items()
        }

        await browser.call("Page.navigate", url=f"{dashboard}/#/metrics")
        metrics = await browser.wait_text("the Metrics page", lambda t: "Metrics" in t, 60)
        await asyncio.sleep(3)  # its health checks answer after the first render
        found["metrics_page"] = await browser.text() or metrics
        await browser.screenshot(out / "metrics.png")
    return found


# ----------------------------------------------------------------------------- Prometheus
def prometheus_query(url: str, expr: str) -> list[dict]:
    body = http_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    return body["data"]["result"] if body and body.get("status") == "success" else []


def dashboard_queries(run: str) -> list[tuple[str, str, str]]:
    panels = json.loads((REPO / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())["panels"]
    return [
        (p["title"], t["legendFormat"], t["expr"].replace("$run", run).replace("$__rate_interval", "1m"))
        for p in panels
        for t in p["targets"]
    ]


def check_prometheus(url: str, run: str) -> dict:
    wanted = {name for _, _, expr in dashboard_queries(run) for name in re.findall(r"\bray_[A-Za-z0-9_]+", expr)}

    def all_scraped():
        body = http_json(f"{url}/api/v1/label/__name__/values")
        names = set(body["data"]) if body else set()
        return names if wanted <= names else None

    names = wait_for(
        "Prometheus to hold every metric the dashboard uses (eval_* after the first evaluation)", all_scraped, 300, 5
    )

    def answers():
        got = {}
        for title, legend, expr in dashboard_queries(run):
            values = [float(s["value"][1]) for s in prometheus_query(url, expr)]
            if not values or not all(math.isfinite(v) for v in values):
                return None
            got[f"{title} / {legend}"] = values
        return got

    panels = wait_for("every dashboard query to return data", answers, 120, 5)
    gauges = {
        s["metric"]["__name__"]: float(s["value"][1])
        for s in prometheus_query(url, f'{{__name__=~"ray_online_rlhf_.+", run="{run}"}}')
    }
    return {
        "dashboard_metrics": sorted(wanted),
        "run_series": sorted(n for n in names if n.startswith("ray_online_rlhf_")),
        "panels": panels,
        "gauges": gauges,
    }


# ----------------------------------------------------------------------------- the run
def live_reprs(env: dict) -> list[str]:
    """The snippet of docs/monitoring.md ("Live state of every actor"), run as written."""
    doc = (REPO / "docs" / "monitoring.md").read_text()
    section = doc.split("### Live state of every actor", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise CheckFailed(f"the docs' live-repr snippet failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()


def job_status(client: JobSubmissionClient, job: str) -> str:
    return str(client.get_job_status(job).value)


def dashboard_health(dashboard: str, token: str) -> dict[str, str]:
    """What the dashboard's own checks say of Prometheus and Grafana (the Metrics view's condition)."""
    found = {}
    for service in ("prometheus", "grafana"):
        request = urllib.request.Request(f"{dashboard}/api/{service}_health", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                found[service] = f"{response.status} {response.read().decode()[:300]}"
        except urllib.error.HTTPError as err:
            found[service] = f"{err.code} {err.read().decode()[:300]}"
        except OSError as err:
            found[service] = f"unreachable: {err}"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of the run (it must outlast the checks)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--out", default="runs/bench-monitoring", help="results.json and screenshots go here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what it started on `kill` too
    for binary in ("prometheus", "chromium"):
        if not shutil.which(binary):
            sys.exit(f"bench/monitoring.py needs `{binary}` (Debian: apt-get install {binary})")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="rlhf-bench-", dir="/tmp"))  # short: Ray's sockets live under it
    procs = Processes()
    results: dict = {"steps": args.steps}
    started = time.monotonic()
    try:
        # A head node as the README starts it, with the dashboard told where Prometheus is.
        gcs, dashboard_port, metrics_port, agent_port, prom_port = (free_port() for _ in range(5))
        dashboard, prometheus = f"http://127.0.0.1:{dashboard_port}", f"http://127.0.0.1:{prom_port}"
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_PROMETHEUS_HOST": prometheus,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }  # as activated
        env.pop("RAY_ADDRESS", None)
        procs.gcs_port = gcs
        procs.start(
            [
                RAY,
                "start",
                "--head",
                "--block",
                "--port",
                str(gcs),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(dashboard_port),
                "--metrics-export-port",
                str(metrics_port),
                "--dashboard-agent-listen-port",
                str(agent_port),
                "--temp-dir",
                str(temp_dir),
            ],
            out / "head.log",
            env,
        )
        wait_for("the dashboard", lambda: reachable(dashboard), 120)
        discovery = temp_dir / "prom_metrics_service_discovery.json"
        wait_for(
            "Ray's metrics discovery file to list the node",
            lambda: discovery.exists() and f':{metrics_port}"' in discovery.read_text(),
            120,
        )

        # Prometheus with the project's config; only the discovery file's directory differs.
        config = yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheus.yml").read_text())
        config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(discovery)]
        (out / "prometheus.yml").write_text(yaml.safe_dump(config))
        procs.start(
            [
                "prometheus",
                f"--config.file={out / 'prometheus.yml'}",
                f"--storage.tsdb.path={temp_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            out / "prometheus.log",
        )
        wait_for("Prometheus", lambda: http_json(f"{prometheus}/api/v1/status/runtimeinfo"), 60)

        # The run, submitted as the README says.
        run_dir = temp_dir / "mnpo-monitoring-bench"
        entrypoint = f"python -m driver --algo mnpo --steps {args.steps} --output {run_dir} --set eval.every={args.eval_every}"
        submit = None
        for _ in range(60):  # the dashboard answers before its job agent is registered
            submit = subprocess.run(
                [
                    RAY,
                    "job",
                    "submit",
                    "--address",
                    dashboard,
                    "--working-dir",
                    str(REPO),
                    "--no-wait",
                    "--",
                    *entrypoint.split(),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if "No available agent to submit job" not in submit.stdout + submit.stderr:
                break
            time.sleep(2)
        match = re.search(r"(raysubmit_\w+)", submit.stdout + submit.stderr)
        if submit.returncode != 0 or not match:
            raise CheckFailed(f"ray job submit failed:\n{submit.stdout[-2000:]}{submit.stderr[-2000:]}")
        job = match.group(1)
        results["job"], results["entrypoint"] = job, entrypoint
        metrics_file = run_dir / "metrics.jsonl"
        client = JobSubmissionClient(dashboard)

        def training() -> bool:
            status = job_status(client, job)
            if status in ("FAILED", "STOPPED", "SUCCEEDED"):
                raise CheckFailed(f"the job ended ({status}) before the checks")
            return metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 3

        wait_for("the run's first steps", training, 900, 5)
        results["seconds_to_first_steps"] = round(time.monotonic() - started, 1)
        log.info("the run is training (%.0fs after start); loading the dashboard in Chromium", time.monotonic() - started)

        token = subprocess.run([RAY, "get-auth-token"], env=env, capture_output=True, text=True, timeout=60).stdout.strip()
        debug_port = free_port()
        procs.start(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={temp_dir / 'chromium'}",
                f"--remote-debugging-port={debug_port}",
                "--remote-debugging-address=127.0.0.1",
                "about:blank",
            ],
            out / "chromium.log",
        )
        results["browser"] = asyncio.run(browse_dashboard(dashboard, token, entrypoint, out, debug_port))
        log.info("Jobs and Actors pages checked; the Actors table's Repr: %s", results["browser"]["actors_repr"])

        results["live_reprs"] = live_reprs({**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"})
        for name in ACTORS:
            if not any(line.startswith(name + " | ") and "| step " in line for line in results["live_reprs"]):
                raise CheckFailed(f"no live repr with a step for {name}: {results['live_reprs']}")
        log.info("live reprs: %s", results["live_reprs"])

        results["prometheus"] = check_prometheus(prometheus, run_dir.name)
        log.info(
            "Prometheus holds the %d metrics the dashboard uses; every panel query answered",
            len(results["prometheus"]["dashboard_metrics"]),
        )

        results["dashboard_health"] = dashboard_health(dashboard, token)
        final = wait_for(
            "the job to end", lambda: (s := job_status(client, job)) in ("SUCCEEDED", "FAILED", "STOPPED") and s, 1800, 10
        )
        results["job_status"] = final
        if final != "SUCCEEDED":
            raise CheckFailed(f"the job ended {final}")
        results["ok"] = True
    except CheckFailed as err:
        results["ok"], results["failed"] = False, str(err)
        log.error("check failed: %s", err)
    finally:
        results["seconds"] = round(time.monotonic() - started, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        procs.stop()
        if (temp_dir / "mnpo-monitoring-bench" / "metrics.jsonl").exists():
            shutil.copy(temp_dir / "mnpo-monitoring-bench" / "metrics.jsonl", out / "metrics.jsonl")
        shutil.rmtree(temp_dir, ignore_errors=True)
    log.info(
        "%s in %.0fs; details in %s", "all checks passed" if results["ok"] else "FAILED", results["seconds"], out / "results.json"
    )
    sys.exit(0 if results["ok"] else 1)


if __name__ == "__main__":
    main()
