"""PromptStream: shuffled epochs, chunking invariance and resuming from a position."""

import pytest

from protocols import Prompt
from rollout.prompts import PromptStream

PROMPTS = [Prompt(prompt_id=f"p{i}", text=f"prompt {i}") for i in range(7)]


def test_chunking_does_not_change_the_sequence():
    a, b = PromptStream(PROMPTS, seed=1), PromptStream(PROMPTS, seed=1)
    assert a.next(3) + a.next(5) + a.next(0) + a.next(9) == b.next(17)
    assert a.position == b.position == 17


def test_each_epoch_is_a_fresh_permutation():
    stream = PromptStream(PROMPTS, seed=0)
    epochs = [stream.next(len(PROMPTS)) for _ in range(4)]
    for epoch in epochs:
        assert sorted(p.prompt_id for p in epoch) == sorted(p.prompt_id for p in PROMPTS)
    assert len({tuple(p.prompt_id for p in e) for e in epochs}) > 1  # not the same order every time
    assert stream.epoch == 4


def test_resume_from_position_continues_identically():
    stream = PromptStream(PROMPTS, seed=7)
    stream.next(13)  # stops mid-epoch (13 = 7 + 6)
    continuation = stream.next(20)
    resumed = PromptStream(PROMPTS, seed=7, position=13)
    assert resumed.position == 13
    assert resumed.next(20) == continuation


def test_seed_changes_the_order():
    orders = {tuple(p.prompt_id for p in PromptStream(PROMPTS, seed=s).next(7)) for s in range(5)}
    assert len(orders) > 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least one prompt"):
        PromptStream([], seed=0)
    with pytest.raises(ValueError, match="position"):
        PromptStream(PROMPTS, seed=0, position=-1)
    with pytest.raises(ValueError, match="n must be"):
        PromptStream(PROMPTS, seed=0).next(-1)
