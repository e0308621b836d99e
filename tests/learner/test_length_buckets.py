"""learner.length_buckets: micro-batches of similar lengths pad less and make the same update.

The order is checked by hand; on the DeepSpeed learner with the tiny model, a PPO step (old,
reference and critic passes plus the update) and a DPO step with small micro-batches compute
fewer padded token positions with buckets than in sampling order, and end at the same weights.
"""

from __future__ import annotations

import pytest
import torch

from learner.algorithms.dpo import DPOConfig
from learner.algorithms.ppo import PPOConfig
from learner.collate import by_length, pair_length
from learner.pairing import Pair
from tests.learner.engine_helpers import judged_batch, make_learner


def test_by_length_orders_shortest_first_and_keeps_ties_in_order():
    assert by_length([5, 2, 9, 2, 5]) == [1, 3, 0, 4, 2]
    assert by_length(torch.tensor([3, 1, 2])) == [1, 2, 0]
    assert by_length([]) == []


def test_pair_length_is_the_prompt_plus_the_longer_response():
    pair = Pair(
        prompt_token_ids=(1, 2, 3),
        chosen_token_ids=(4, 5),
        rejected_token_ids=(6, 7, 8, 9),
        chosen_reward=1.0,
        rejected_reward=0.0,
        probability=1.0,
        policy_version=0,
    )
    assert pair_length(pair) == 7


@pytest.fixture(scope="module")
def varied(builtin_models):
    """Rollouts whose lengths vary (prompts 3-6 tokens, responses 1-9), in no length order."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(builtin_models.policy)
    batch = judged_batch(config.vocab_size, config.eos_token_id, seed=3, prompts=16)
    lengths = [len(r.prompt_token_ids) + len(r.response_token_ids) for r in batch.batch.rollouts]
    assert lengths != sorted(lengths) and len(set(lengths)) > 4
    return batch


def positions_computed(learner, monkeypatch) -> list[int]:
    """Spy: rows x width of every forward pass the learner's step makes through `token_logprobs`."""
    seen: list[int] = []
    original = learner.models.token_logprobs

    def spy(model, t):
        seen.append(t.input_ids.numel())
        return original(model, t)

    monkeypatch.setattr(learner.models, "token_logprobs", spy)
    return seen


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    ("algo", "sections", "micro", "bound"),
    [
        # 64 sequences in 16 micro-batches: 0.79 of the positions in sampling order
        ("ppo", {"ppo": PPOConfig(epochs=1, minibatches=1)}, 4, 0.85),
        # 16 pairs (best vs worst of each prompt) in 8 micro-batches of 2: 0.91 (a pair is as wide as its
        # longer response, so pair widths vary less than sequence lengths)
        ("dpo", {"dpo": DPOConfig()}, 4, 0.95),
    ],
)
def test_buckets_pad_less_and_make_the_same_update(builtin_models, varied, monkeypatch, algo, sections, micro, bound):
    bucketed = make_learner(builtin_models.policy, algo, sections, micro_batch_size=micro, length_buckets=True)
    ordered = make_learner(builtin_models.policy, algo, sections, micro_batch_size=micro, length_buckets=False)
    with_buckets, in_order = positions_computed(bucketed, monkeypatch), positions_computed(ordered, monkeypatch)
    a = bucketed.train_step([varied], 0, {"gt": 1.0})
    b = ordered.train_step([varied], 0, {"gt": 1.0})
    assert len(with_buckets) == len(in_order) > 2  # the same passes, split into as many micro-batches
    assert sum(with_buckets) < bound * sum(in_order), (with_buckets, in_order)
    assert a.metrics["learner/loss"] == pytest.approx(b.metrics["learner/loss"], rel=1e-4, abs=1e-6)
    assert max_diff(bucketed.state_dict(), ordered.state_dict()) < 1e-5
    start = make_learner(builtin_models.policy, algo, sections).state_dict()
    assert max_diff(bucketed.state_dict(), start) > 1e-4  # the update is not trivially empty
