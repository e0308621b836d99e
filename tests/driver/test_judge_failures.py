"""driver/judge_failures.py: missing verdicts (on_failure: skip) are counted per judge, their prompt
groups are dropped from what the learner gets (judgements re-indexed), the run stops once a judge
misses more than its max_skipped_fraction, or when a step has nothing left. No Ray."""

from __future__ import annotations

import logging
import math

import pytest

from driver.judge_failures import JudgeFailureError, JudgeFailures
from protocols import JudgedBatch, Judgement, PairPreference, RuleJudgeSpec, summarize
from tests.actors.test_judge_actor import find_prompt, make_batch

SKIP = RuleJudgeSpec(name="flaky", kind="rule", function="a.b:c", on_failure="skip", max_skipped_fraction=0.3)
GT = RuleJudgeSpec(name="gt", kind="rule", function="a.b:c")
PREFS = RuleJudgeSpec(name="prefs", kind="rule", function="a.b:c", on_failure="skip", max_skipped_fraction=0.5)
SPECS = {s.name: s for s in (SKIP, GT, PREFS)}


@pytest.fixture(scope="module")
def batch():
    """Three prompt groups of two samples: rollouts 0-1, 2-3, 4-5."""
    fruits, animals, birds = find_prompt("list 3 fruits:"), find_prompt("name 2 animals:"), find_prompt("give 6 birds:")
    return make_batch(
        [(fruits, " apple"), (fruits, " pear"), (animals, " cat"), (animals, " dog"), (birds, " robin"), (birds, " crow")],
        samples_per_prompt=2,
    )


def fetched(batches: dict):
    """`fetch` for JudgeFailures.apply: ObjectRef names -> batches; records what was fetched."""

    def fetch(refs):
        fetch.calls.append(list(refs))
        return [batches[r] for r in refs]

    fetch.calls = []
    return fetch


def rewards(name: str, values, unjudged=()) -> Judgement:
    return Judgement(
        judge=name,
        rewards=tuple(values),
        failed=len(unjudged),
        unjudged=tuple(unjudged),
        failure="rollout ...: returned nan" if unjudged else None,
    )


def test_nothing_missing_passes_everything_through_untouched(batch):
    failures = JudgeFailures()
    judgements = [[rewards("gt", [0.1] * 6), rewards("flaky", [0.2] * 6)]]
    fetch = fetched({"ref": batch})
    out = failures.apply(0, [summarize(batch)], judgements, ["ref"], SPECS, fetch)
    assert out == ([summarize(batch)], judgements, ["ref"])  # the learner gets the ObjectRefs as before
    assert fetch.calls == []  # the driver never fetched the batch
    assert failures.metrics() == {f"judges/{n}/{m}": 0.0 for n in ("flaky", "gt", "prefs") for m in ("failures", "skipped")}


def test_groups_without_a_verdict_are_dropped_counted_and_reindexed(batch, caplog):
    failures = JudgeFailures()
    nan = math.nan
    prefs = Judgement(
        judge="prefs",
        preferences=(PairPreference(first=0, second=1, probability=0.9), PairPreference(first=4, second=5, probability=0.2)),
        failed=1,
        unjudged=(2, 3),
        failure="pair (2, 3): answered without a verdict",
    )
    judgements = [[rewards("gt", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]), rewards("flaky", [1.0, nan, 1.2, 1.3, 1.4, 1.5], [1]), prefs]]
    with caplog.at_level(logging.WARNING, logger="driver"):
        summaries, judged, trained = failures.apply(4, [summarize(batch)], judgements, ["ref"], SPECS, fetched({"ref": batch}))
    # group 0 (flaky's rollout 1) and group 1 (prefs' pair (2, 3)) go; group 2 stays, as rollouts 0-1
    (kept,) = trained
    assert [r.response_text for r in kept.rollouts] == [" robin", " crow"] and summaries == [summarize(kept)]
    gt, flaky, pr = judged[0]
    assert gt.rewards == (0.4, 0.5) and flaky.rewards == (1.4, 1.5) and not flaky.unjudged and flaky.failed == 0
    assert pr.preferences == (PairPreference(first=0, second=1, probability=0.2),)
    JudgedBatch(batch=kept, judgements=tuple(judged[0]))  # what the learner builds: accepted
    assert failures.metrics() == {
        "judges/flaky/failures": 1.0,
        "judges/flaky/skipped": 2.0,
        "judges/gt/failures": 0.0,
        "judges/gt/skipped": 0.0,
        "judges/prefs/failures": 1.0,
        "judges/prefs/skipped": 2.0,
    }
    assert "step 4: 2 of 3 prompt groups dropped from training for missing verdicts" in caplog.text
    assert "judge 'flaky': 1 of 6 verdicts missing so far (cap 30%" in caplog.text


def test_a_judge_above_its_cap_stops_the_run_with_the_counts_and_the_reason(batch):
    failures = JudgeFailures()
    for step in range(3):  # 1 of 6 each step: 17% <= 30%
        failures.apply(
            step, [summarize(batch)], [[rewards("flaky", [0.5] * 5 + [math.nan], [5])]], ["ref"], SPECS, fetched({"ref": batch})
        )
    assert failures.metrics()["judges/flaky/failures"] == 3.0 and failures.metrics()["judges/flaky/skipped"] == 6.0
    with pytest.raises(JudgeFailureError) as info:  # 3 more: 6 of 24 = 25%, then 9 of 30 = 30%, then ...
        for step in range(3, 6):
            failures.apply(
                step,
                [summarize(batch)],
                [[rewards("flaky", [0.5, 0.5, 0.5] + [math.nan] * 3, [3, 4, 5])]],
                ["ref"],
                SPECS,
                fetched({"ref": batch}),
            )
    message = str(info.value)
    assert message.startswith(
        "judge 'flaky' (kind rule) gave no verdict for 12 of the 36 verdicts asked of it so far "
        "(33.3%), more than its max_skipped_fraction 0.3; stopping at step 5"
    ), message
    assert "returned nan" in message


def test_a_step_with_nothing_left_to_train_on_stops_the_run(batch):
    failures = JudgeFailures()
    specs = {"flaky": SKIP.model_copy(update={"max_skipped_fraction": 0.9})}
    with pytest.raises(JudgeFailureError, match="step 2: every prompt group lacks a verdict from some judge"):
        failures.apply(
            2,
            [summarize(batch)],
            [[rewards("flaky", [0.1, math.nan, 0.1, math.nan, math.nan, 0.1], [1, 3, 4])]],
            ["ref"],
            specs,
            fetched({"ref": batch}),
        )


def test_an_emptied_batch_is_dropped_and_the_others_train(batch):
    failures = JudgeFailures()
    specs = {"flaky": SKIP.model_copy(update={"max_skipped_fraction": 0.9})}
    bad = rewards("flaky", [math.nan] * 6, range(6))
    good = rewards("flaky", [0.5] * 6)
    fetch = fetched({"r0": batch, "r1": batch})
    summaries, judged, trained = failures.apply(0, [summarize(batch)] * 2, [[bad], [good]], ["r0", "r1"], specs, fetch)
    assert summaries == [summarize(batch)] and trained == [batch] and judged == [[good]]
    assert fetch.calls == [["r0", "r1"]]  # fetched once, only because something was dropped


def test_retired_judges_keep_their_policy(batch):
    """A batch judged before a swap (max_staleness > 0) by a judge no longer in the current specs."""
    failures = JudgeFailures()
    failures.apply(0, [summarize(batch)], [[rewards("flaky", [0.5] * 6)]], ["ref"], SPECS, fetched({"ref": batch}))
    failures.apply(
        1, [summarize(batch)], [[rewards("flaky", [0.5] * 5 + [math.nan], [5])]], ["ref"], {"gt": GT}, fetched({"ref": batch})
    )
    assert failures.metrics()["judges/flaky/failures"] == 1.0  # 1 of 12: under the 0.3 it was started with
