"""HTTP judge: an LLM behind an OpenAI-compatible `/v1/completions` endpoint (vLLM, hosted APIs).

Built from an `HttpJudgeSpec` (protocols/judges.py). No Ray, no vLLM here: httpx and the stdlib.

Verdict of one request. The judge prompt is `spec.template` with {prompt}, {first}, {second}
filled in (base.fill_template); it is sent with max_tokens=1, temperature=0, logprobs=`top_logprobs` (20). Then
  1. top logprobs of the first generated token, if the response has them:
         p = P(choices[0]) / (P(choices[0]) + P(choices[1]))
     where P(c) sums exp(logprob) over the tokens equal to c or to " " + c; a choice absent from
     the top-k counts as 0. If both are absent, go on to 2.
  2. the generated text (leading whitespace ignored): starts with choices[0] -> 1.0, with
     choices[1] -> 0.0; anything else is no verdict (base.NoVerdict, never a made-up 0.5),
     counted in `self.unparsed` and logged once per call. A pair without a verdict in either
     order has none; the judge's `on_failure` decides what then (base.judgement).
Sign convention (base.py): p > 0.5 means the response shown first (`first`) is preferred. Both
presentation orders are asked and averaged to cancel position bias (base.both_orders):
    compare(...)[i] = 0.5 * [p(first_i, second_i) + 1 - p(second_i, first_i)]
so compare(a, b) + compare(b, a) == 1.

Transport: httpx, one `httpx.Client` per judge, created on first use and kept (connections are
reused, keep-alive), closed by `close()` (or `with judge:`, or when the judge is garbage
collected). At most `spec.max_concurrency` requests in flight (a thread pool per call, the 2N
requests of a call submitted at once, and as many pooled connections), `spec.timeout_s` per request
(connect, and each read or write). HTTP 429, 5xx, network errors and timeouts are retried
`spec.retries` times; the wait before retry k (0-based) is
  - on 429 / 503 with a `Retry-After` header (seconds, or an HTTP-date): what it asks, capped by
    what is left of the request's time budget, the longest its retry schedule allows:
        budget_s = (retries + 1) * timeout_s + backoff_s * (2**retries - 1)
    counted from its first attempt;
  - otherwise exponential backoff with full jitter: uniform(0, backoff_s * 2**k).
Other 4xx (and 3xx: redirects are not followed, so the key never goes to another host) fail at
once. A request that still fails raises HttpJudgeError: a batch is never silently scored 0.5. TLS
certificates are checked against the system's trust store (as `ssl.create_default_context()`);
proxies come from the usual environment variables. The API key is read once from the environment
variable `spec.api_key_env` and sent as a bearer token; it is never logged and never appears in an
error message or repr. httpx's own INFO line per request (with the full URL) is turned off: the
`httpx` logger is set to WARNING unless its level was set before this module is imported.

Tests: `python -m pytest -q tests/rollout/test_http_judge.py` (a real `vllm` server on the tiny
built-in policy, and scripted stdlib HTTP servers for the transport and retry paths).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from urllib.parse import urlsplit

import httpx

from protocols import HttpJudgeSpec
from rollout.judges.base import NoVerdict, Verdict, both_orders, fill_template

logger = logging.getLogger(__name__)
if logging.getLogger("httpx").level == logging.NOTSET:  # its INFO line per request names the full URL
    logging.getLogger("httpx").setLevel(logging.WARNING)

ERROR_CHARS = 200  # how much of a server's error message goes into an exception
ERROR_BODY_BYTES = 1 << 16  # how much of a failed response's body is read for its message
RETRY_AFTER_STATUSES = (429, 503)  # the statuses whose Retry-After header is honoured


class HttpJudgeError(RuntimeError):
    """A judge request failed for good (non-retryable status, retries exhausted, bad response)."""


class _Retryable(Exception):
    """A failure worth retrying (429, 5xx, network, timeout); the message names the cause."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s  # what the server's Retry-After header asked, if it did


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """The wait a Retry-After header asks for (RFC 9110, 10.2.3), in seconds; None if absent or unreadable.

    Either delay-seconds ("120"; a decimal is accepted too) or an HTTP-date
    ("Wed, 21 Oct 2015 07:28:00 GMT"), counted from `now` (seconds since the epoch); a date in the
    past asks for 0.
    """
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            date = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if date.tzinfo is None:  # "-0000": UTC, as HTTP-dates are
            date = date.replace(tzinfo=UTC)
        return max(0.0, date.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0.0 else None


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception behind `err`: httpx wraps httpcore's, which wraps the socket's (httpcore's
    connection pool re-raises it `from None`, so the chain goes on through the context)."""
    seen = {id(err)}
    while (inner := err.__cause__ or err.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        err = inner
    return err


def verdict_from_top_logprobs(top: Mapping[str, float] | None, choices: tuple[str, str]) -> float | None:
    """P(choices[0]) / (P(choices[0]) + P(choices[1])) over the top-k tokens; None if neither is there."""
    if not top:
        return None
    mass = [sum(math.exp(lp) for token, lp in top.items() if token in (c, " " + c)) for c in choices]
    total = mass[0] + mass[1]
    return mass[0] / total if total > 0.0 else None


def verdict_from_text(text: str, choices: tuple[str, str]) -> float | None:
    """1.0 if the text starts with choices[0], 0.0 with choices[1], None otherwise."""
    stripped = text.lstrip()
    # the longer choice first, so that a choice that is a prefix of the other ("A", "AB") cannot shadow it
    for index in sorted((0, 1), key=lambda i: -len(choices[i])):
        if stripped.startswith(choices[index]):
            return 1.0 - index
    return None


class HttpJudge:
    """Pairwise judge: `compare(prompts, first, second)` -> P(first preferred) per triple.

    `sleep`, `rng`, `clock` and `wall_clock` are the waits between retries, the jitter's random
    numbers, the monotonic clock of the time budget and the epoch clock of HTTP-date Retry-After
    headers (tests inject them; `build_judge` takes the defaults: time.sleep, an unseeded
    random.Random, time.monotonic, time.time).
    """

    def __init__(
        self,
        spec: HttpJudgeSpec,
        *,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
    ):
        self.name = spec.name
        self.model = spec.model
        self.template = spec.template
        self.choices = spec.choices
        self.top_logprobs = spec.top_logprobs  # 0: no logprobs asked, the verdict is read from the text
        self.url = spec.base_url.rstrip("/") + "/completions"
        self.path = urlsplit(self.url).path  # what error messages name: no host credentials or query
        self.max_concurrency = spec.max_concurrency
        self.timeout_s = spec.timeout_s
        self.retries = spec.retries
        self.backoff_s = spec.backoff_s
        # the longest the retry schedule allows: every attempt its timeout, every wait its backoff ceiling
        self.budget_s = (self.retries + 1) * self.timeout_s + self.backoff_s * (2**self.retries - 1)
        self.unparsed = 0  # answers naming neither choice (no verdict), since construction
        self._sleep = sleep if sleep is not None else time.sleep
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock if clock is not None else time.monotonic
        self._wall_clock = wall_clock if wall_clock is not None else time.time
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._secret: str | None = None
        if spec.api_key_env is not None:
            key = os.environ.get(spec.api_key_env)
            if not key:
                state = "is not set" if key is None else "is empty"
                raise ValueError(
                    f"judge {spec.name!r}: the environment variable named by 'api_key_env' ({spec.api_key_env}) {state}"
                )
            self._secret = key
            self._headers["Authorization"] = f"Bearer {key}"
        self._client: httpx.Client | None = None  # created on first use (_http), one per judge
        self._closer: weakref.finalize | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpJudge(name={self.name!r}, url={self.url!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the client and its connections; a later call opens a new one."""
        with self._client_lock:
            closer, self._client, self._closer = self._closer, None, None
        if closer is not None:
            closer()  # client.close(), once

    def __enter__(self) -> HttpJudge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ judging
    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[Verdict]:
        """P(first[i] preferred over second[i]), both orders averaged (base.both_orders); in [0, 1]
        (NoVerdict where an answer named neither choice)."""
        return both_orders(self.one_order, prompts, first, second)

    def one_order(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[Verdict]:
        """p(first[i] preferred) with first[i] shown first; all requests issued concurrently."""
        texts = [fill_template(self.template, p, a, b) for p, a, b in zip(prompts, first, second, strict=True)]
        if not texts:
            return []
        workers = min(self.max_concurrency, len(texts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"judge-{self.name}") as pool:
            futures = [pool.submit(self._judge_one, text) for text in texts]
            try:
                verdicts = [f.result() for f in futures]
            except BaseException:
                for f in futures:  # don't start what is still queued; running requests end by their timeout
                    f.cancel()
                raise
        unparsed = [text for p, text in verdicts if p is None]
        if unparsed:  # one line per call (compare makes one call for both orders)
            self.unparsed += len(unparsed)
            logger.warning(
                "judge %r: %d of %d verdicts named neither choice %r (top logprobs or text); no verdict for them. "
                "First generated text: %r",
                self.name,
                len(unparsed),
                len(texts),
                self.choices,
                unparsed[0][:80],
            )
        return [
            p
            if p is not None
            else NoVerdict(
                f"answered without a verdict: neither {self.choices[0]!r} nor {self.choices[1]!r} in the top "
                f"logprobs or the text (generated {self._redact(text)[:40]!r})"
            )
            for p, text in verdicts
        ]

    def _judge_one(self, prompt: str) -> tuple[float | None, str]:
        """(verdict or None, generated text) of one judge prompt."""
        request = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}
        if self.top_logprobs:
            request["logprobs"] = self.top_logprobs
        body = self._post(request)
        try:
            choice = body["choices"][0]
            text = choice.get("text") or ""
            top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
            verdict = verdict_from_top_logprobs(top, self.choices)
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise HttpJudgeError(
                f"judge {self.name!r}: POST {self.path} returned an unexpected body ({type(err).__name__}: {err}): "
                f"{self._redact(json.dumps(body))[:ERROR_CHARS]}"
            ) from None
        if verdict is None:
            verdict = verdict_from_text(text, self.choices)
        return verdict, text

    # ------------------------------------------------------------------ transport
    def _http(self) -> httpx.Client:
        """This judge's client, created on first use: its connections are kept and reused."""
        with self._client_lock:
            if self._client is None:
                client = httpx.Client(
                    headers=self._headers,
                    timeout=httpx.Timeout(self.timeout_s, pool=None),  # a pooled connection is waited for
                    limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
                    follow_redirects=False,  # a redirect would take the Authorization header elsewhere
                    verify=ssl.create_default_context(),  # the system's trust store, as urllib's
                )
                self._client = client
                self._closer = weakref.finalize(self, client.close)  # also closed when the judge is collected
            return self._client

    def _post(self, payload: dict) -> dict:
        """POST with retries on 429 / 5xx / network errors; the one retry loop of this judge."""
        data = json.dumps(payload).encode()
        deadline = self._clock() + self.budget_s
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(data)
            except _Retryable as err:
                cause = str(err)
                if attempt == self.retries:
                    break
                if err.retry_after_s is not None:  # the server said when: as asked, within the budget
                    delay = min(err.retry_after_s, max(0.0, deadline - self._clock()))
                    capped = ", capped by the request's time budget" if delay < err.retry_after_s else ""
                    why = f" (Retry-After {err.retry_after_s:g}s{capped})"
                else:  # full jitter: clients that failed together do not retry together
                    delay = self._rng.uniform(0.0, self.backoff_s * 2**attempt)
                    why = ""
                logger.warning(
                    "judge %r: POST %s failed (%s); retry %d/%d in %.2fs%s",
                    self.name,
                    self.path,
                    cause,
                    attempt + 1,
                    self.retries,
                    delay,
                    why,
                )
                self._sleep(delay)
        raise HttpJudgeError(
            f"judge {self.name!r}: POST {self.path} failed after {self.retries + 1} attempts "
            f"(timeout {self.timeout_s}s each); last error: {cause}"
        )

    def _post_once(self, data: bytes) -> dict:
        try:
            with self._http().stream("POST", self.url, content=data) as response:
                if not 200 <= response.status_code < 300:
                    status, message = response.status_code, self._server_message(response)
                    if status == 429 or status >= 500:
                        wait = None
                        if status in RETRY_AFTER_STATUSES:
                            wait = retry_after_seconds(response.headers.get("Retry-After"), self._wall_clock())
                        raise _Retryable(f"HTTP {status}: {message}", wait)
                    raise HttpJudgeError(f"judge {self.name!r}: POST {self.path} returned HTTP {status}: {message}")
                raw = response.read()
        except httpx.RequestError as err:  # connect, read, write, timeouts, protocol errors
            root = _root_cause(err)  # the socket's error, named as before: TimeoutError, ConnectionRefusedError, ...
            raise _Retryable(f"{type(root).__name__}: {root}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpJudgeError(
                f"judge {self.name!r}: POST {self.path} returned a body that is not JSON: "
                f"{self._redact(raw.decode(errors='replace'))[:ERROR_CHARS]!r}"
            ) from None

    def _server_message(self, response: httpx.Response) -> str:
        """The error message of a failed response (OpenAI / vLLM JSON or plain text), truncated."""
        body = bytearray()
        try:
            for chunk in response.iter_bytes():  # whole (JSON) body up to ERROR_BODY_BYTES, truncated after redaction
                body += chunk
                if len(body) >= ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            body.clear()
        raw = bytes(body[:ERROR_BODY_BYTES]).decode(errors="replace")
        message = raw
        try:
            error = json.loads(raw).get("error", raw)
            message = error.get("message", raw) if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            pass
        message = " ".join(self._redact(message).split())  # one line
        return message[:ERROR_CHARS] or response.reason_phrase or "(no message)"

    def _redact(self, text: str) -> str:
        """Servers rarely echo the key back, but an error message must never carry it."""
        return text.replace(self._secret, "***") if self._secret else text
