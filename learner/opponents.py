"""Frozen past-policy snapshots that MNPO plays against (a ring, newest first).

Opponent j = 1 is the newest snapshot (the policy as it was at the start of the current MNPO
iteration), j = m the oldest. At the start of training every slot holds the starting policy
(pi_0 = pi_ref), as in the paper's first iteration. `push` drops the oldest.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch


def snapshot_due(version: int, every: int) -> bool:
    """Whether policy version `version` is pushed into the ring (before the step that trains it
    further): every `every` versions, never the starting policy (the ring starts full of it). The
    learner pushes by it and the driver evaluates the coming snapshots by it: one schedule."""
    return version > 0 and version % every == 0


class OpponentRing:
    def __init__(self, template: torch.nn.Module, size: int):
        if size < 1:
            raise ValueError(f"an opponent ring needs size >= 1, got {size}")
        frozen = copy.deepcopy(template).eval().requires_grad_(False)
        # One module per slot; slots start identical. Models are tiny next to activations here;
        # large models should keep snapshots as state dicts on CPU and swap them in.
        self.models: list[torch.nn.Module] = [frozen] + [copy.deepcopy(frozen) for _ in range(size - 1)]
        self.versions: list[int] = [0] * size

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Freeze `state_dict` as the newest opponent; the oldest slot is recycled for it."""
        oldest = self.models.pop()
        self.versions.pop()
        oldest.load_state_dict(state_dict, strict=True)
        self.models.insert(0, oldest)
        self.versions.insert(0, version)

    def __len__(self) -> int:
        return len(self.models)
