"""HTTP judge: an LLM behind an OpenAI-compatible `/v1/completions` endpoint (vLLM, hosted APIs).

Built from an `HttpJudgeSpec` (protocols/judges.py). No Ray, no vLLM here: only the stdlib.

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

Transport: at most `spec.max_concurrency` requests in flight (a thread pool per call; the 2N
requests of a call are all submitted at once), `spec.timeout_s` per request. HTTP 429, 5xx,
network errors and timeouts are retried `spec.retries` times after `spec.backoff_s * 2**attempt`
seconds; other 4xx (and 3xx: redirects are not followed, so the key never goes to another host)
fail at once. A request that still fails raises HttpJudgeError: a batch is never silently scored
0.5. The API key is read once from the environment variable `spec.api_key_env` and sent as a
bearer token; it is never logged and never appears in an error message or repr.

Tests: `python -m pytest -q tests/rollout/test_http_judge.py` (a real `vllm` server on the tiny
built-in policy, and scripted stdlib HTTP servers for the retry paths).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from protocols import HttpJudgeSpec
from rollout.judges.base import NoVerdict, Verdict, both_orders, fill_template

logger = logging.getLogger(__name__)

ERROR_CHARS = 200  # how much of a server's error message goes into an exception


class HttpJudgeError(RuntimeError):
    """A judge request failed for good (non-retryable status, retries exhausted, bad response)."""


class _Retryable(Exception):
    """A failure worth retrying (429, 5xx, network, timeout); the message names the cause."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib would copy the Authorization header to wherever it points


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
    """Pairwise judge: `compare(prompts, first, second)` -> P(first preferred) per triple."""

    def __init__(self, spec: HttpJudgeSpec):
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
        self.unparsed = 0  # answers naming neither choice (no verdict), since construction
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
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"HttpJudge(name={self.name!r}, url={self.url!r}, model={self.model!r})"

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
    def _post(self, payload: dict) -> dict:
        """POST with retries on 429 / 5xx / network errors; the one retry loop of this judge."""
        data = json.dumps(payload).encode()
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(data)
            except _Retryable as err:
                cause = str(err)
                if attempt == self.retries:
                    break
                delay = self.backoff_s * 2**attempt
                logger.warning(
                    "judge %r: POST %s failed (%s); retry %d/%d in %.2fs",
                    self.name,
                    self.path,
                    cause,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                time.sleep(delay)
        raise HttpJudgeError(
            f"judge {self.name!r}: POST {self.path} failed after {self.retries + 1} attempts "
            f"(timeout {self.timeout_s}s each); last error: {cause}"
        )

    def _post_once(self, data: bytes) -> dict:
        request = urllib.request.Request(self.url, data=data, headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:  # before URLError: it is one
            message = self._server_message(err)
            if err.code == 429 or err.code >= 500:
                raise _Retryable(f"HTTP {err.code}: {message}") from None
            raise HttpJudgeError(f"judge {self.name!r}: POST {self.path} returned HTTP {err.code}: {message}") from None
        except urllib.error.URLError as err:
            raise _Retryable(f"{type(err.reason).__name__}: {err.reason}") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as err:  # raised while reading
            raise _Retryable(f"{type(err).__name__}: {err}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpJudgeError(
                f"judge {self.name!r}: POST {self.path} returned a body that is not JSON: "
                f"{self._redact(raw.decode(errors='replace'))[:ERROR_CHARS]!r}"
            ) from None

    def _server_message(self, err: urllib.error.HTTPError) -> str:
        """The error message of a failed response (OpenAI / vLLM JSON or plain text), truncated."""
        try:
            raw = err.read(1 << 16).decode(errors="replace")  # whole (JSON) body, truncated after redaction
        except (OSError, http.client.HTTPException):
            raw = ""
        finally:
            err.close()
        message = raw
        try:
            error = json.loads(raw).get("error", raw)
            message = error.get("message", raw) if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            pass
        message = " ".join(self._redact(message).split())  # one line
        return message[:ERROR_CHARS] or err.reason or "(no message)"

    def _redact(self, text: str) -> str:
        """Servers rarely echo the key back, but an error message must never carry it."""
        return text.replace(self._secret, "***") if self._secret else text
