"""Shared by the learner tests: a random judged batch, a learner on the tiny model, ragged masks."""

from __future__ import annotations

import random

import torch

from learner.algorithms.mnpo import MNPOConfig
from protocols import JudgedBatch, Judgement, LearnerConfig, Rollout, RolloutBatch, RunConfig


def judged_batch(vocab: int, eos: int, seed: int = 0, prompts: int = 6, k: int = 4) -> JudgedBatch:
    rng = random.Random(seed)
    rollouts, rewards = [], []
    for p in range(prompts):
        prompt = tuple(rng.randrange(3, vocab) for _ in range(rng.randint(3, 6)))
        for _ in range(k):
            n = rng.randint(1, 9)
            response = tuple(rng.randrange(3, vocab) for _ in range(n - 1)) + (eos,)
            rollouts.append(
                Rollout(
                    prompt_id=f"p{p}",
                    prompt_text="x",
                    prompt_token_ids=prompt,
                    response_text="y",
                    response_token_ids=response,
                    logprobs=(-1.0,) * n,
                    policy_version=0,
                    finish_reason="stop",
                )
            )
            rewards.append(rng.random())
    batch = RolloutBatch(step=0, policy_version=0, samples_per_prompt=k, rollouts=tuple(rollouts))
    return JudgedBatch(batch=batch, judgements=(Judgement(judge="gt", rewards=tuple(rewards)),))


def make_learner(path, algo: str = "mnpo", sections: dict | None = None, **learner_overrides):
    from learner.algorithms import get_algorithm
    from learner.engine import PolicyLearner

    defaults = {"mnpo": MNPOConfig(snapshot_every=2)} if get_algorithm(algo).config_section == "mnpo" else {}
    cfg = RunConfig(
        algo=algo,
        learner=LearnerConfig(**{"warmup_steps": 0, **learner_overrides}),
        **{**defaults, **(sections or {})},
    )
    return PolicyLearner(str(path), cfg)


def ragged_mask(n, t, seed):
    """[n, t] bool: row i masks one contiguous run (prompt before, padding after); row 0 is empty."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, t, dtype=torch.bool)
    for i in range(1, n):
        start = int(torch.randint(0, t, (1,), generator=g))
        length = int(torch.randint(1, t - start + 1, (1,), generator=g))
        mask[i, start : start + length] = True
    return mask
