"""Prompt sources: a deterministic, resumable stream of training prompts.

Sits at the very top of the data flow: the driver asks `PromptStream.next(n)` for the prompts of
each step and puts them in a `protocols.PromptBatch`. The stream walks shuffled epochs of a fixed
prompt list; epoch `e` is shuffled by an RNG seeded with `(seed, e)` only, so the integer
`position` (prompts served so far) fully determines what comes next. Checkpointing the stream is
therefore saving one int, and resuming is `PromptStream(prompts, seed, position=saved)`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from protocols import Prompt


def _epoch_order(seed: int, epoch: int, size: int) -> list[int]:
    """Permutation of range(size) for one epoch; a string seed is hashed with SHA-512 by `random`,
    so the order is the same in every process and Python version (unlike `hash()`)."""
    order = list(range(size))
    random.Random(f"prompt-stream:{seed}:{epoch}").shuffle(order)
    return order


class PromptStream:
    """Endless shuffled epochs over `prompts`, resumable from an integer position.

    Contract: for the same `prompts` (same order) and `seed`, the sequence of prompts returned by
    successive `next` calls depends only on the starting `position`, not on how it is chunked:
    `next(3) + next(5)` equals `next(8)`, and a stream built with `position=p` continues exactly
    where a stream that has served `p` prompts would.
    """

    def __init__(self, prompts: Sequence[Prompt], seed: int, position: int = 0) -> None:
        if not prompts:
            raise ValueError("PromptStream needs at least one prompt")
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        self._prompts = tuple(prompts)
        self._seed = seed
        self._position = position
        self._epoch = -1
        self._order: list[int] = []

    @property
    def position(self) -> int:
        """Number of prompts served since epoch 0 started (save this to resume)."""
        return self._position

    @property
    def epoch(self) -> int:
        """Index of the epoch the next prompt comes from."""
        return self._position // len(self._prompts)

    def next(self, n: int) -> list[Prompt]:
        """The next `n` prompts, crossing epoch boundaries as needed."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        size = len(self._prompts)
        out: list[Prompt] = []
        for _ in range(n):
            epoch, offset = divmod(self._position, size)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, _epoch_order(self._seed, epoch, size)
            out.append(self._prompts[self._order[offset]])
            self._position += 1
        return out
