"""Rule functions that misbehave, named by import path in judge specs of the tests (judge output
checks, failure policy, judge-swap trials). Each is `f(prompt, response)` like a real rule."""

from __future__ import annotations

from rollout.tasks import wordlist


def returns_none(prompt: str, response: str):
    return None


def returns_nan(prompt: str, response: str) -> float:
    return float("nan")


def returns_inf(prompt: str, response: str) -> float:
    return float("inf")


def returns_list(prompt: str, response: str):
    return [1.0, 2.0]


def returns_text(prompt: str, response: str):
    return "0.5"


def raises(prompt: str, response: str) -> float:
    raise ZeroDivisionError("the rule divided by zero")


def nan_for_cat(prompt: str, response: str) -> float:
    """The ground truth, but NaN for any response containing 'cat'."""
    return float("nan") if "cat" in response else wordlist.ground_truth(prompt, response)


def nan_for_three(prompt: str, response: str) -> float:
    """The ground truth, but NaN for every response to a prompt asking for 3 items (about 1 in 6)."""
    parsed = wordlist.parse_prompt(prompt)
    return float("nan") if parsed is not None and parsed[1] == 3 else wordlist.ground_truth(prompt, response)


def slow(prompt: str, response: str) -> float:
    """The ground truth, after 30 s per rollout: a judge too slow for its trial."""
    import time

    time.sleep(30)
    return wordlist.ground_truth(prompt, response)


def hangs(prompt: str, response: str) -> float:
    """Never answers (a judge stuck on a dead connection): what reliability.judge_timeout_s is for."""
    import time

    time.sleep(3600)
    return 0.0
