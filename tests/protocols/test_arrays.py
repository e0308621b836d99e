"""Token data as arrays in the contracts: dtypes, validation, sharing, JSON and pickle round trips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from learner.pairing import Pair
from protocols import Rollout, RolloutBatch
from protocols.arrays import fields_equal, logprobs, prompt_token_ids, token_ids


def rollout(**overrides) -> Rollout:
    fields = dict(
        prompt_id="p",
        prompt_text="q",
        prompt_token_ids=(5, 6, 7),
        response_text="a",
        response_token_ids=(8, 9),
        logprobs=(-0.5, -1.25),
        policy_version=0,
        finish_reason="stop",
    )
    return Rollout(**{**fields, **overrides})


@pytest.mark.parametrize("given", [(3, 4), [3, 4], np.array([3, 4], dtype=np.int64), np.array([3, 4], dtype=np.uint16)])
def test_token_ids_of_any_integer_sequence_become_read_only_int32(given):
    array = token_ids(given)
    assert array.dtype == np.int32 and array.tolist() == [3, 4]
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 1


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ((1, 2.5), "must be integers, got dtype float64"),
        ((True, False), "must be integers, got dtype bool"),
        ((1, -2), "must be >= 0, got -2"),
        ((1, 2**31), r"must be < 2\*\*31"),
        (((1, 2), (3, 4)), r"must be 1-D, got shape \(2, 2\)"),
        ((9, "x"), "item 1 is 'x'"),
        ("12", "must be a sequence of numbers, got str"),
    ],
)
def test_bad_token_ids_are_refused_saying_why(given, message):
    with pytest.raises(ValueError, match=message):
        token_ids(given)


def test_an_empty_prompt_is_refused_and_an_empty_response_is_not():
    assert token_ids(()).shape == (0,) and token_ids(()).dtype == np.int32
    with pytest.raises(ValueError, match="at least one token"):
        prompt_token_ids([])


def test_logprobs_are_float32_at_most_zero_and_not_nan():
    array = logprobs([-0.5, 0.0, 5e-7])
    assert array.dtype == np.float32 and array.tolist() == pytest.approx([-0.5, 0.0, 5e-7])
    for bad, shown in (([-0.5, 0.25], "0.25"), ([np.nan], "nan")):
        with pytest.raises(ValueError, match=f"must be <= 0 and not NaN, got \\[{shown}\\]"):
            logprobs(bad)


def test_a_writable_array_is_copied_and_a_read_only_one_shared():
    mine = np.array([5, 6, 7], dtype=np.int32)
    first = rollout(prompt_token_ids=mine)
    mine[0] = 99  # the caller's buffer changes; the rollout's copy does not
    assert first.prompt_token_ids.tolist() == [5, 6, 7]
    mine.flags.writeable = False  # nobody can change it now: the K samples of a prompt share it
    a, b = rollout(prompt_token_ids=mine), rollout(prompt_token_ids=mine, response_token_ids=(1,), logprobs=(-1.0,))
    assert a.prompt_token_ids is mine and b.prompt_token_ids is mine


def test_rollouts_compare_by_value_and_are_not_hashable():
    assert rollout() == rollout(prompt_token_ids=np.array([5, 6, 7]))
    assert rollout() != rollout(response_token_ids=(8, 10))
    assert rollout() != rollout(logprobs=(-0.5, -1.0))
    assert rollout() != rollout(prompt_token_ids=(5, 6))  # a different length is unequal, not an error
    with pytest.raises(TypeError):
        hash(rollout())


def test_the_sequence_is_the_prompt_then_the_response():
    assert rollout().sequence_token_ids.tolist() == [5, 6, 7, 8, 9]


def test_json_writes_lists_and_reads_back_the_same_arrays():
    original = rollout()
    dumped = original.model_dump(mode="json")
    assert dumped["prompt_token_ids"] == [5, 6, 7] and dumped["logprobs"] == [-0.5, -1.25]
    again = Rollout.model_validate_json(original.model_dump_json())
    assert again == original and again.response_token_ids.dtype == np.int32
    schema = Rollout.model_json_schema()["properties"]
    assert schema["prompt_token_ids"]["type"] == "array" and schema["prompt_token_ids"]["minItems"] == 1


def test_a_pickled_batch_comes_back_equal_with_its_arrays():
    batch = RolloutBatch(step=0, policy_version=0, samples_per_prompt=2, rollouts=(rollout(), rollout(response_token_ids=(1, 2))))
    again = pickle.loads(pickle.dumps(batch, protocol=5))
    assert again.rollouts == batch.rollouts
    assert again.rollouts[1].response_token_ids.tolist() == [1, 2]


def test_a_batch_is_pickled_as_flat_arrays_and_comes_back_as_read_only_views():
    shared = token_ids((5, 6, 7))  # read-only: the two samples of prompt p share it
    first = rollout(prompt_token_ids=shared)
    second = rollout(prompt_token_ids=shared, response_token_ids=(), logprobs=(), finish_reason="length")
    other = rollout(prompt_id="o", prompt_token_ids=(1,), response_token_ids=(2, 3, 4), logprobs=(-1.0, -2.0, -3.0))
    batch = RolloutBatch(step=4, policy_version=0, samples_per_prompt=2, rollouts=(first, second, other, other))
    again = pickle.loads(pickle.dumps(batch, protocol=5))
    assert again.rollouts == batch.rollouts and (again.step, again.samples_per_prompt) == (4, 2)
    assert again.rollouts[2].response_token_ids.tolist() == [2, 3, 4] and again.rollouts[1].response_token_ids.size == 0
    assert again.rollouts[0].prompt_token_ids is again.rollouts[1].prompt_token_ids  # each distinct prompt sent once
    ids = again.rollouts[2].response_token_ids
    assert ids.base is not None and not ids.flags.writeable  # a view into one flat array, not a copy
    assert again.rollouts[3].logprobs.dtype == np.float32 and again.rollouts[3].logprobs.tolist() == [-1.0, -2.0, -3.0]


def test_a_batch_through_the_object_store_comes_back_equal(ray_cluster):
    import ray

    batch = RolloutBatch(step=0, policy_version=0, samples_per_prompt=1, rollouts=(rollout(), rollout(prompt_id="o")))
    again = ray.get(ray.put(batch))
    assert again.rollouts == batch.rollouts
    assert not again.rollouts[1].prompt_token_ids.flags.writeable


def test_pairs_compare_their_token_arrays_by_value():
    def pair(rejected):
        return Pair(np.array([1]), np.array([2, 3]), np.array(rejected), 1.0, 0.0, 1.0, 0)

    assert pair([4]) == pair([4]) and pair([4]) != pair([5]) and pair([4]) != pair([4, 4])


def test_fields_equal_treats_arrays_and_tuples_of_the_same_ids_alike():
    assert fields_equal({"ids": np.array([1, 2], dtype=np.int32)}, {"ids": (1, 2)})
    assert not fields_equal({"ids": np.array([1, 2])}, {"ids": (1, 2), "extra": 0})


def test_a_bad_rollout_field_is_named_in_the_validation_error():
    with pytest.raises(ValidationError) as excinfo:
        rollout(response_token_ids=(8, -1))
    assert excinfo.value.errors()[0]["loc"] == ("response_token_ids",)
