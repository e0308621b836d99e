"""Tests for learner/collate.py: padding layout and next-token logprob alignment."""

import math

import pytest
import torch

from learner.collate import PairTensors, collate_pairs, split_chosen_rejected, split_micro_batches
from learner.ops import gather_token_logprobs, sequence_logprobs
from learner.pairing import Pair


def pair(prompt, chosen, rejected, probability=1.0) -> Pair:
    return Pair(tuple(prompt), tuple(chosen), tuple(rejected), 1.0, 0.0, probability, 0)


def test_hand_made_layout():
    # prompt [5, 6], chosen [7, 8, 9], rejected [10]; T = 2 + 3 = 5; pad 0
    t = collate_pairs([pair([5, 6], [7, 8, 9], [10], probability=0.8)], pad_token_id=0)
    assert isinstance(t, PairTensors) and t.num_pairs == 1
    assert t.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 10, 0, 0]]
    assert t.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # labels[:, t] = input_ids[:, t + 1]
    assert t.labels.tolist() == [[6, 7, 8, 9], [6, 10, 0, 0]]
    # response tokens are scored at t = position - 1: chosen at t = 1, 2, 3; rejected at t = 1
    assert t.response_mask.tolist() == [[False, True, True, True], [False, True, False, False]]
    assert t.input_ids.dtype == torch.long and t.attention_mask.dtype == torch.long
    assert t.response_mask.dtype == torch.bool
    torch.testing.assert_close(t.probability, torch.tensor([0.8]))
    moved = t.to("cpu")
    assert isinstance(moved, PairTensors) and torch.equal(moved.response_mask, t.response_mask)
    assert moved.input_ids.device.type == "cpu" and torch.equal(moved.labels, t.labels)


def test_chosen_rows_first_then_rejected_and_masked_labels_are_the_responses():
    pairs = [pair([1], [2, 3], [4]), pair([5, 6, 7], [], [8, 9, 10, 11]), pair([12, 13], [14], [15, 16])]
    t = collate_pairs(pairs, pad_token_id=3)  # pad id deliberately equal to a real token
    assert t.input_ids.shape == (6, 7) and t.response_mask.shape == (6, 6)
    responses = [p.chosen_token_ids for p in pairs] + [p.rejected_token_ids for p in pairs]
    for row, response in enumerate(responses):
        assert t.labels[row][t.response_mask[row]].tolist() == list(response)
    chosen, rejected = split_chosen_rejected(t.input_ids)
    assert chosen[:, 0].tolist() == [1, 5, 12] and rejected[:, 0].tolist() == [1, 5, 12]
    assert chosen[1, :3].tolist() == [5, 6, 7] and not t.response_mask[1].any()  # empty chosen response


def test_logprob_alignment_with_a_bigram_model():
    # A "model" whose logits at position t depend only on input_ids[:, t] (a bigram table), so the
    # true log p(response | prompt) is a hand-computable sum over (previous token, token) pairs.
    vocab = 6
    table = torch.log_softmax(torch.arange(vocab * vocab, dtype=torch.float32).reshape(vocab, vocab).sin() * 3, -1)
    pairs = [pair([1, 2], [3, 4, 5], [0]), pair([4], [2], [5, 5, 1])]
    t = collate_pairs(pairs, pad_token_id=0)
    logits = table[t.input_ids]  # [2B, T, V]
    token_logprobs = gather_token_logprobs(logits[:, :-1], t.labels)
    got = sequence_logprobs(token_logprobs, t.response_mask, "sum")

    def by_hand(prompt, response):
        tokens = list(prompt) + list(response)
        return sum(table[tokens[i - 1], tokens[i]].item() for i in range(len(prompt), len(tokens)))

    # e.g. row 0: log p(3|2) + log p(4|3) + log p(5|4); row 2: log p(0|2)
    expected = [by_hand(p.prompt_token_ids, p.chosen_token_ids) for p in pairs]
    expected += [by_hand(p.prompt_token_ids, p.rejected_token_ids) for p in pairs]
    torch.testing.assert_close(got, torch.tensor(expected))
    chosen, rejected = split_chosen_rejected(sequence_logprobs(token_logprobs, t.response_mask, "mean"))
    torch.testing.assert_close(chosen, torch.tensor([expected[0] / 3, expected[1] / 1]))
    torch.testing.assert_close(rejected, torch.tensor([expected[2] / 1, expected[3] / 3]))
    assert all(math.isfinite(x) for x in got.tolist())


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one pair"):
        collate_pairs([], pad_token_id=0)
    with pytest.raises(ValueError, match="empty prompt"):
        collate_pairs([pair([], [1], [2])], pad_token_id=0)
    with pytest.raises(ValueError, match=r"even leading dimension.*\(3, 2\)"):
        split_chosen_rejected(torch.zeros(3, 2))


def test_split_micro_batches_keeps_order_and_pairs_whole():
    pairs = [pair([i], [i], [i]) for i in range(5)]
    chunks = split_micro_batches(pairs, 2)
    assert [[p.prompt_token_ids[0] for p in c] for c in chunks] == [[0, 1], [2, 3], [4]]
    assert split_micro_batches(pairs, 10) == [pairs]
    assert split_micro_batches([], 3) == []
    with pytest.raises(ValueError, match="pairs_per_micro_batch must be >= 1, got 0"):
        split_micro_batches(pairs, 0)


def test_sequence_logprobs_do_not_depend_on_padding_or_micro_batching():
    # the same pair collated alone or next to a much longer one must score identically
    vocab = 5
    table = torch.log_softmax(torch.arange(vocab * vocab, dtype=torch.float32).reshape(vocab, vocab).cos() * 2, -1)
    short, long = pair([1], [2, 3], [4]), pair([1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 0, 1, 2, 3, 4])

    def score(pairs):
        t = collate_pairs(pairs, pad_token_id=0)
        return sequence_logprobs(gather_token_logprobs(table[t.input_ids][:, :-1], t.labels), t.response_mask, "sum")

    together = score([short, long])  # rows: short chosen, long chosen, short rejected, long rejected
    apart = [score(chunk) for chunk in split_micro_batches([short, long], 1)]
    torch.testing.assert_close(together, torch.stack([apart[0][0], apart[1][0], apart[0][1], apart[1][1]]))


def test_sampler_logprobs_sit_at_the_response_positions():
    from learner.collate import collate_sequences, sampler_logprobs
    from protocols import Rollout

    rows = [
        Rollout(
            prompt_id="a",
            prompt_text="x",
            prompt_token_ids=(5, 6),
            response_text="y",
            response_token_ids=(7, 8, 2),
            logprobs=(-0.1, -0.2, -0.3),
            policy_version=0,
            finish_reason="stop",
        ),
        Rollout(
            prompt_id="b",
            prompt_text="x",
            prompt_token_ids=(5, 6, 9, 9),
            response_text="y",
            response_token_ids=(2,),
            logprobs=(-0.4,),
            policy_version=0,
            finish_reason="stop",
        ),
    ]
    t = collate_sequences(rows, pad_token_id=0)
    got = sampler_logprobs(rows, t.response_mask)
    # row 0: response tokens at positions 2, 3, 4, scored at t = 1, 2, 3; row 1: position 4, t = 3
    assert torch.allclose(got, torch.tensor([[0.0, -0.1, -0.2, -0.3], [0.0, 0.0, 0.0, -0.4]]))
