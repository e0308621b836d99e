"""The actor shells keep their repr line (actors/status.py) current as they work. The actor
classes are used without Ray here (the class under @ray.remote), with a stand-in for the vLLM
sampler; tests/monitoring/test_actor_repr.py checks the same lines through Ray's state API."""

from __future__ import annotations

import sys
import types

import ray

from actors.learner import LearnerActor
from actors.rollout import RolloutActor
from protocols import LearnerStepResult, Prompt, PromptBatch, Rollout, RolloutBatch, SyncReport


def plain(actor_class):
    """The class a @ray.remote actor class wraps."""
    return actor_class.__ray_metadata__.modified_class.__ray_actor_class__


class FakeSampler:
    """generate/load_weights as rollout.sampler.VLLMSampler: 3 response tokens per sample."""

    def __init__(self, model_path, cfg, *, dtype, seed, name, **kwargs):
        self.policy_version = 0

    def generate(self, batch: PromptBatch, *, seed=None, temperature=None) -> RolloutBatch:
        rollouts = tuple(
            Rollout(
                prompt_id=p.prompt_id,
                prompt_text=p.text,
                prompt_token_ids=(1, 2),
                response_text=" a b",
                response_token_ids=(5, 6, 2),
                logprobs=(-0.1, -0.2, -0.3),
                policy_version=self.policy_version,
                finish_reason="stop",
            )
            for p in batch.prompts
            for _ in range(batch.samples_per_prompt)
        )
        return RolloutBatch(
            step=batch.step, policy_version=self.policy_version, samples_per_prompt=batch.samples_per_prompt, rollouts=rollouts
        )

    def load_weights(self, weights, version) -> SyncReport:
        self.policy_version = version
        return SyncReport(worker="rollout-0", version=version, seconds=0.125, max_abs_logprob_diff=0.0)


def test_rollout_actor_repr_follows_batches_and_weight_syncs(monkeypatch):
    monkeypatch.setitem(sys.modules, "rollout.sampler", types.SimpleNamespace(VLLMSampler=FakeSampler))
    actor = plain(RolloutActor)("/cache/wordlist-4f20/policy", None, "float32", 0, "rollout-0")
    assert repr(actor) == "rollout-0 | rollout worker, vLLM wordlist-4f20/policy (float32)"  # what Ray records

    prompts = tuple(Prompt(prompt_id=f"p{i}", text="list 3 fruits:") for i in range(2))
    actor.generate(PromptBatch(step=4, prompts=prompts, samples_per_prompt=4), seed=1)
    text = repr(actor)
    assert text.startswith("rollout-0 | rollout worker, vLLM wordlist-4f20/policy (float32) | policy v0 | step 4 | ")
    assert text.endswith(" tok/s")
    assert float(text.split(" | ")[-1].split()[0]) > 0  # 24 tokens over the generate call's wall time

    actor.load_weights({}, 5)
    assert repr(actor).endswith("| policy v5 | step 4 | " + text.split(" | ")[-1] + " | synced v5 in 0.12s")


def test_learner_actor_repr_follows_updates():
    ray_was_up = ray.is_initialized()
    actor = plain(LearnerActor)(1, 2)
    assert repr(actor) == "learner-1 | learner rank 1/2"  # outside Ray: named as the driver names it
    assert ray.is_initialized() == ray_was_up  # asking for the actor's name did not start Ray
    actor._track(
        LearnerStepResult(
            step=11,
            policy_version=12,
            trained_on_version=11,
            metrics={"learner/pairs": 32.0, "learner/seconds": 0.25, "learner/loss": 0.75541},
        )
    )
    assert repr(actor) == "learner-1 | learner rank 1/2 | policy v12 | step 11 | 128 pairs/s | loss 0.7554"
    actor._track(
        LearnerStepResult(
            step=12,
            policy_version=13,
            trained_on_version=12,  # sequence family (PPO, GRPO)
            metrics={"learner/sequences": 64.0, "learner/seconds": 0.5, "learner/loss": -0.5},
        )
    )
    assert repr(actor) == "learner-1 | learner rank 1/2 | policy v13 | step 12 | 128 sequences/s | loss -0.5000"
