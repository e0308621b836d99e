"""rollout/judges/verdict.py (and the shared helpers of base.py it uses) on the built-in policy:
the causal-LM verdict P(first preferred), both orders averaged, batching-invariant."""

from __future__ import annotations

import pytest
import torch

from protocols import PairwiseJudgeSpec
from protocols.judges import DEFAULT_PAIRWISE_TEMPLATE
from rollout.judges.base import both_orders, fill_template

PROMPTS = ["list 3 fruits:", "name 2 animals:", "give 6 birds:", "write 1 colors:", "list 4 tools:"]
FIRST = [" apple pear plum", " cat", " robin crow eagle owl sparrow hawk", " red", ""]
SECOND = [" cat dog dog dog dog", " cat dog", " robin", " red blue green", " hammer saw drill wrench"]


@pytest.fixture(scope="module")
def loaded(builtin_models):
    from rollout.judges.verdict import load_causal_lm

    return load_causal_lm(str(builtin_models.policy))


@pytest.fixture
def scorer(loaded):
    from rollout.judges.verdict import VerdictScorer

    model, tokenizer = loaded
    return VerdictScorer("judge", model, tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ("A", "B"), batch_size=64)


# --------------------------------------------------------------------------- shared helpers (no model)


def test_both_orders_hand_computed():
    seen = []

    def one_order(prompts, first, second):
        seen.append((list(prompts), list(first), list(second)))
        table = {("a", "b"): 0.8, ("b", "a"): 0.4, ("c", "d"): 0.5, ("d", "c"): 0.5}
        return [table[(x, y)] for x, y in zip(first, second)]

    # P = 0.5 * [0.8 + 1 - 0.4] = 0.7 ; P = 0.5 * [0.5 + 1 - 0.5] = 0.5
    assert both_orders(one_order, ["p", "q"], ["a", "c"], ["b", "d"]) == pytest.approx([0.7, 0.5])
    assert seen == [(["p", "q", "p", "q"], ["a", "c", "b", "d"], ["b", "d", "a", "c"])]  # one call, both orders
    with pytest.raises(ValueError, match="2 prompts, 1 first"):
        both_orders(one_order, ["p", "q"], ["a"], ["b", "d"])


def test_judge_rollouts_compares_adjacent_samples_or_every_pair():
    from rollout.judges.base import comparison_pairs, judge_rollouts
    from tests.actors.test_judge_actor import find_prompt, make_batch

    class Lengths:  # a pairwise judge preferring the longer response: P = 0.5 + (len a - len b) / 100
        name = "lengths"

        def compare(self, prompts, first, second):
            return [0.5 + (len(a) - len(b)) / 100 for a, b in zip(first, second)]

    fruits, animals = find_prompt("list 3 fruits:"), find_prompt("name 2 animals:")
    texts = [" apple", " apple pear", " a", " cat dog", " cat", " cat dog cow"]
    batch = make_batch([(fruits, t) for t in texts[:3]] + [(animals, t) for t in texts[3:]], samples_per_prompt=3)
    rewards, adjacent = judge_rollouts(Lengths(), batch, "adjacent")
    assert rewards is None
    assert [(p.first, p.second) for p in adjacent] == [(0, 1), (1, 2), (3, 4), (4, 5)]  # K - 1 per prompt
    assert [p.probability for p in adjacent] == pytest.approx([0.45, 0.59, 0.54, 0.42])  # lengths 6, 11, 2; 8, 4, 12
    _, every = judge_rollouts(Lengths(), batch, "all_pairs")
    assert [(p.first, p.second) for p in every] == [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]
    assert comparison_pairs(8, 4, "adjacent") == [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)]
    with pytest.raises(ValueError, match="7 rollouts is not a multiple of the group size 3"):
        comparison_pairs(7, 3, "adjacent")
    with pytest.raises(ValueError, match="unknown comparisons mode 'ring'"):
        comparison_pairs(6, 3, "ring")


def test_fill_template_substitutes_once_and_keeps_other_braces():
    template = 'JSON {"x": 1} P={prompt} A={first} B={second}'
    assert fill_template(template, "{second}", "{prompt}", "b") == 'JSON {"x": 1} P={second} A={prompt} B=b'


# --------------------------------------------------------------------------- the scorer


def naive_p(model, tokenizer, prompt: str, first: str, second: str) -> float:
    """p(first, second) = softmax(logits)[A] / (softmax[A] + softmax[B]) at the last token of the filled template."""
    a_id, b_id = (tokenizer.encode(c, add_special_tokens=False)[0] for c in ("A", "B"))
    text = DEFAULT_PAIRWISE_TEMPLATE.format(prompt=prompt, first=first, second=second)
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1)
    return float(probs[a_id] / (probs[a_id] + probs[b_id]))


def test_compare_averages_both_presentation_orders_of_the_model(scorer, loaded):
    """compare(a, b) = 0.5 [p(a, b) + 1 - p(b, a)] with p read off the model by hand, in both orders."""
    model, tokenizer = loaded
    expected = [
        0.5 * (naive_p(model, tokenizer, q, a, b) + 1 - naive_p(model, tokenizer, q, b, a))
        for q, a, b in zip(PROMPTS, FIRST, SECOND)
    ]
    assert scorer.compare(PROMPTS, FIRST, SECOND) == pytest.approx(expected, abs=1e-5)
    assert any(abs(p - 0.5) > 1e-3 for p in expected)  # the model has a preference: not a trivial check


def test_one_order_matches_a_naive_unpadded_forward(scorer, loaded):
    model, tokenizer = loaded
    expected = [naive_p(model, tokenizer, q, a, b) for q, a, b in zip(PROMPTS, FIRST, SECOND)]
    assert scorer.one_order(PROMPTS, FIRST, SECOND) == pytest.approx(expected, abs=1e-5)


def test_batching_does_not_change_the_numbers(scorer):
    reference = scorer.compare(PROMPTS, FIRST, SECOND)  # one left-padded batch of 10 judge prompts
    for batch_size in (1, 3):  # no padding at all; ragged batches (10 = 3 + 3 + 3 + 1)
        scorer.batch_size = batch_size
        assert scorer.compare(PROMPTS, FIRST, SECOND) == pytest.approx(reference, abs=1e-5)


def test_multi_token_choices_are_rejected(loaded):
    from rollout.judges.verdict import VerdictScorer

    model, tokenizer = loaded
    with pytest.raises(ValueError) as excinfo:
        VerdictScorer("my-judge", model, tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ("Yes", "No"), batch_size=4)
    message = str(excinfo.value)
    assert "judge 'my-judge'" in message and "field 'choices'" in message
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("Yes", add_special_tokens=False))
    assert f"'Yes' encodes to {len(pieces)} tokens {pieces}" in message


def test_pairwise_judge_reads_its_spec(builtin_models):
    from rollout.judges import build_judge
    from rollout.judges.pairwise import PairwiseJudge

    spec = PairwiseJudgeSpec(name="pj", kind="pairwise", path="builtin:policy", batch_size=2, choices=("B", "A"))
    judge = build_judge(spec, str(builtin_models.policy))
    assert isinstance(judge, PairwiseJudge) and judge.scorer.batch_size == 2
    swapped = judge.compare(PROMPTS, FIRST, SECOND)
    # choices swapped: "B" now means "first is better", so P' = 1 - P of the default choices
    default = build_judge(spec.model_copy(update={"choices": ("A", "B")}), str(builtin_models.policy))
    assert swapped == pytest.approx([1 - p for p in default.compare(PROMPTS, FIRST, SECOND)], abs=1e-6)
    with pytest.raises(ValueError, match="judge 'pj': a pairwise judge needs a resolved model path"):
        build_judge(spec)


def test_verdict_temperature_divides_the_logit_gap(loaded):
    from rollout.judges.verdict import VerdictScorer

    model, tokenizer = loaded
    plain = VerdictScorer("t1", model, tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ("A", "B"), batch_size=8)
    sharp = VerdictScorer("t4", model, tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ("A", "B"), batch_size=8, verdict_temperature=0.25)
    args = (["list 2 fruits:", "name 3 tools:"], [" apple pear", " saw"], [" cat", " drill axe rake"])
    gap = torch.logit(torch.tensor(plain.one_order(*args), dtype=torch.float64))
    sharp_gap = torch.logit(torch.tensor(sharp.one_order(*args), dtype=torch.float64))
    assert torch.allclose(sharp_gap, 4 * gap, rtol=1e-4, atol=1e-6) and gap.abs().min() > 1e-4
    # Both orders are still averaged: compare(a, b) + compare(b, a) == 1, and the verdict is further from 0.5.
    p, q = sharp.compare(*args), sharp.compare(args[0], args[2], args[1])
    assert all(abs(x + y - 1) < 1e-6 for x, y in zip(p, q))
    assert all(abs(s - 0.5) > abs(t - 0.5) for s, t in zip(p, plain.compare(*args)))


def test_logit_difference_cancels_a_position_bias_before_sharpening(loaded):
    """orders: logit_difference gives sigmoid((g(a, b) - g(b, a)) / 2T) from the model's own gaps.
    A judge that leans to the first position by a constant gap loses it exactly; averaging the
    sharpened probabilities of the two orders instead saturates both at 'first' and reads 0.5."""
    from rollout.judges.verdict import VerdictScorer

    model, tokenizer = loaded
    debiased = VerdictScorer(
        "d",
        model,
        tokenizer,
        DEFAULT_PAIRWISE_TEMPLATE,
        ("A", "B"),
        batch_size=8,
        verdict_temperature=0.05,
        orders="logit_difference",
    )
    args = (PROMPTS, FIRST, SECOND)
    forward = torch.tensor(
        [debiased.verdict_logit_gap([fill_template(DEFAULT_PAIRWISE_TEMPLATE, q, a, b)])[0].item() for q, a, b in zip(*args)],
        dtype=torch.float64,
    )
    backward = torch.tensor(
        [debiased.verdict_logit_gap([fill_template(DEFAULT_PAIRWISE_TEMPLATE, q, b, a)])[0].item() for q, a, b in zip(*args)],
        dtype=torch.float64,
    )
    expected = torch.sigmoid((forward - backward) / (2 * 0.05))
    assert (expected - 0.5).abs().max() > 0.01  # the model has a preference: not a trivial check
    assert debiased.compare(*args) == pytest.approx(expected.tolist(), abs=1e-4)
    # a constant lean of 3 nats to the first position, added to every gap
    biased = {
        "average": VerdictScorer(
            "avg", model, tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ("A", "B"), batch_size=8, verdict_temperature=0.05
        ),
        "logit_difference": debiased,
    }
    for scorer in biased.values():
        real = scorer.verdict_logit_gap
        scorer.verdict_logit_gap = lambda texts, real=real: real(texts) + 3.0  # type: ignore[method-assign]
    assert biased["average"].compare(*args) == pytest.approx([0.5] * len(PROMPTS), abs=1e-3)
    assert biased["logit_difference"].compare(*args) == pytest.approx(expected.tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="orders must be 'average' or 'logit_difference'"):
        VerdictScorer("x", model, tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ("A", "B"), batch_size=8, orders="max")
