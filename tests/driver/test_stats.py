"""Per-step statistics (driver/stats.py) and the prompt sharding of driver/run.py, by hand."""

from __future__ import annotations

import math
import random

import pytest

from driver.cluster import shard
from driver.stats import rollout_stats, step_line
from protocols import Judgement, PairPreference, Prompt, Rollout, RolloutBatch, summarize


def rollout(prompt_id: str, n_tokens: int, finish: str, version: int = 3) -> Rollout:
    return Rollout(
        prompt_id=prompt_id,
        prompt_text=f"list 2 {prompt_id}:",
        prompt_token_ids=(5, 6, 7),
        response_text=" x" * n_tokens,
        response_token_ids=tuple(range(10, 10 + n_tokens)),
        logprobs=(-0.5,) * n_tokens,
        policy_version=version,
        finish_reason=finish,
    )


@pytest.fixture
def batches() -> list[RolloutBatch]:
    """Two rollout workers' batches of one step: 4 + 2 rollouts, K = 2, policy_version 3."""
    first = RolloutBatch(
        step=7,
        policy_version=3,
        samples_per_prompt=2,
        rollouts=(
            rollout("fruits", 3, "stop"),
            rollout("fruits", 5, "length"),
            rollout("birds", 2, "stop"),
            rollout("birds", 4, "stop"),
        ),
    )
    second = RolloutBatch(
        step=7,
        policy_version=3,
        samples_per_prompt=2,
        rollouts=(rollout("tools", 6, "length"), rollout("tools", 0, "stop")),
    )
    return [first, second]


@pytest.fixture
def judgements() -> list[list[Judgement]]:
    """Per batch: judge 'a' and judge 'b' score every rollout; 'pairs' only compares."""
    pairs = Judgement(judge="pairs", preferences=(PairPreference(first=0, second=1, probability=0.9),))
    return [
        [Judgement(judge="a", rewards=(1.0, 0.0, 0.5, 1.0)), Judgement(judge="b", rewards=(0.0, 0.0, 1.0, 1.0)), pairs],
        [Judgement(judge="b", rewards=(0.5, 0.0)), Judgement(judge="a", rewards=(0.25, 0.75)), pairs],
    ]


def test_rollout_stats_hand_computed(batches, judgements):
    stats = rollout_stats([summarize(b) for b in batches], judgements, {"a": 3.0, "b": 1.0, "pairs": 2.0})
    # response lengths 3, 5, 2, 4 | 6, 0 -> 20 tokens over 6 rollouts
    assert stats["rollout/samples"] == 6.0
    assert stats["rollout/response_tokens"] == 20.0
    assert stats["rollout/response_tokens_mean"] == pytest.approx(20 / 6)
    # finish 'length': rollouts 1 and 4 -> 2 of 6
    assert stats["rollout/truncated_frac"] == pytest.approx(1 / 3)
    assert stats["rollout/policy_version"] == 3.0
    # a = 1, 0, 0.5, 1, 0.25, 0.75 -> 3.5 / 6;  b = 0, 0, 1, 1, 0.5, 0 -> 2.5 / 6
    assert stats["judge/a/mean"] == pytest.approx(3.5 / 6)
    assert stats["judge/b/mean"] == pytest.approx(2.5 / 6)
    # 'pairs' has no rewards: no metric and no share of the weights (total = 3 + 1 = 4, not 6)
    assert "judge/pairs/mean" not in stats
    # combined = (3 a + 1 b) / 4 per rollout:
    #   (3 + 0) / 4 = 0.75, 0, (1.5 + 1) / 4 = 0.625, (3 + 1) / 4 = 1, (0.75 + 0.5) / 4 = 0.3125, 2.25 / 4 = 0.5625
    combined = [0.75, 0.0, 0.625, 1.0, 0.3125, 0.5625]
    # mean = 3.25 / 6 = 0.5416667
    assert stats["rollout/reward_mean"] == pytest.approx(3.25 / 6)
    # population std: deviations 0.2083333, -0.5416667, 0.0833333, 0.4583333, -0.2291667, 0.0208333
    #   squares 0.0434028 + 0.2934028 + 0.0069444 + 0.2100694 + 0.0525174 + 0.0004340 = 0.6067708
    #   / 6 = 0.1011285 -> sqrt = 0.3180070
    assert stats["rollout/reward_std"] == pytest.approx(0.3180070, abs=1e-7)
    mean = sum(combined) / 6
    assert stats["rollout/reward_std"] == pytest.approx(math.sqrt(sum((c - mean) ** 2 for c in combined) / 6))
    assert all(key.startswith(("rollout/", "judge/")) for key in stats)


def test_rollout_stats_with_one_judge_is_that_judges_reward(batches, judgements):
    stats = rollout_stats([summarize(b) for b in batches], judgements, {"b": 0.2})  # the weight's scale does not matter
    assert stats["rollout/reward_mean"] == pytest.approx(2.5 / 6)
    assert stats["judge/b/mean"] == stats["rollout/reward_mean"]
    assert "judge/a/mean" not in stats  # judges without a weight are not summarised


def test_rollout_stats_without_scalar_judges_has_no_reward(batches, judgements):
    stats = rollout_stats([summarize(b) for b in batches], judgements, {"pairs": 1.0})
    assert "rollout/reward_mean" not in stats and "rollout/reward_std" not in stats
    assert stats["rollout/samples"] == 6.0


def test_step_line_hand_formatted():
    record = {
        "step": 4,
        "rollout/reward_mean": 0.54166,
        "rollout/reward_std": 0.32208,
        "learner/loss": 0.123456,
        "learner/kl_to_reference": 0.0125,
        "learner/pairs": 12.0,
        "rollout/response_tokens_mean": 3.3333,
        "rollout/tokens_per_s": 812.6,
        "rollout/samples": 48.0,
        "time/step_seconds": 1.2345,
    }
    line = step_line(record, total_steps=10, eta=125.0)  # 125 s = 2 min 5 s
    assert line == (  # 48 samples / 1.2345 s = 38.9 samples/s
        "step 5/10 | reward 0.542±0.322 | loss 0.1235 | kl 0.013 | pairs 12 | len 3.3 | 39 samples/s | 813 tok/s"
        " | 1.23s/step | ETA 2m05s"
    )
    with_eval = step_line(record, total_steps=10, eta=125.0, latest_eval=0.71234)
    assert with_eval.endswith(" | 1.23s/step | eval win 0.712 | ETA 2m05s")


def test_step_line_without_reward_or_learner_metrics():
    record = {"step": 0, "rollout/response_tokens_mean": 2.0, "rollout/tokens_per_s": 10.0, "time/step_seconds": 0.5}
    line = step_line(record, total_steps=1, eta=59.9)
    assert line == "step 1/1 | loss nan | kl nan | len 2.0 | 0 samples/s | 10 tok/s | 0.50s/step | ETA 59s"
    line = step_line({**record, "learner/optimizer_steps": 4.0}, total_steps=1, eta=1.0)
    assert "| kl nan | updates 4 | len 2.0 |" in line  # the sequence family's optimizer steps


# --------------------------------------------------------------------------- shard


def prompts(n: int) -> list[Prompt]:
    return [Prompt(prompt_id=f"p{i}", text=f"list {i % 6 + 1} fruits:") for i in range(n)]


def test_shard_hand_computed():
    ids = [[p.prompt_id for p in part] for part in shard(prompts(7), 3)]
    # 7 = 3 * 2 + 1: the first chunk takes the extra prompt
    assert ids == [["p0", "p1", "p2"], ["p3", "p4"], ["p5", "p6"]]
    assert [len(part) for part in shard(prompts(6), 3)] == [2, 2, 2]
    assert shard(prompts(4), 1) == [prompts(4)]


@pytest.mark.parametrize("seed", range(4))
def test_shard_is_contiguous_nonempty_balanced_and_ordered(seed):
    rng = random.Random(seed)
    for _ in range(50):
        parts = rng.randint(1, 9)
        items = prompts(rng.randint(parts, 60))  # the plan guarantees prompts_per_step >= num_workers
        chunks = shard(items, parts)
        sizes = [len(c) for c in chunks]
        assert len(chunks) == parts
        assert min(sizes) >= 1
        assert max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)  # the larger chunks come first
        assert [p for c in chunks for p in c] == items  # contiguous, order preserved, nothing lost
