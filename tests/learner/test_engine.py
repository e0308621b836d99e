"""The DeepSpeed learner on the built-in tiny model (CPU, gloo, world size 1).

Invariances that catch silent bugs: micro-batching does not change the update, ZeRO-2 and ZeRO-3
agree on the first step, the exported weights are the HF weights, the opponent ring advances.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.e2e.test_algorithms import FIRST_LOSS
from tests.learner.engine_helpers import judged_batch, make_learner


@pytest.fixture(scope="module")
def batch(builtin_models):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(builtin_models.policy)
    return judged_batch(config.vocab_size, config.eos_token_id)


@pytest.mark.parametrize("algo", ["mnpo", "inpo", "dpo", "osp"])
def test_micro_batching_does_not_change_the_update(builtin_models, batch, algo):
    whole = make_learner(builtin_models.policy, algo, micro_batch_size=64)
    pieces = make_learner(builtin_models.policy, algo, micro_batch_size=2)  # one pair per micro-batch
    a = whole.train_step([batch], 0, {"gt": 1.0})
    b = pieces.train_step([batch], 0, {"gt": 1.0})
    pairs = 12 if algo == "osp" else 6  # ranked pairing: 2 pairs per prompt of 4; best vs worst: 1
    assert a.metrics["learner/pairs"] == b.metrics["learner/pairs"] == pairs
    assert a.metrics["learner/loss"] == pytest.approx(b.metrics["learner/loss"], rel=1e-5)
    assert a.metrics["learner/grad_norm"] == pytest.approx(b.metrics["learner/grad_norm"], rel=1e-4)
    sa, sb = whole.state_dict(), pieces.state_dict()
    assert max((sa[k] - sb[k]).abs().max().item() for k in sa) < 1e-5
    moved = max((sa[k] - whole.reference.state_dict()[k]).abs().max().item() for k in sa)
    assert moved > 1e-4  # the step really changed the policy
    assert f"learner/{algo}/loss" in a.metrics


def test_inpo_keeps_one_snapshot_and_osp_uses_the_pair_probability(builtin_models, batch):
    inpo = make_learner(builtin_models.policy, "inpo")
    assert inpo.opponents.versions == [0]  # mnpo.num_opponents (2) is overridden
    # OSP with a temperature-1 reward judge: ranked pairs carry P = sigmoid(r_c - r_r) < 1
    osp = make_learner(builtin_models.policy, "osp")
    result = osp.train_step([batch], 0, {"gt": 1.0}, {"gt": 1.0})
    # ranked pairing per prompt of 4: best vs worst, second vs third, each with P = sigmoid(r_c - r_r)
    rewards, expected = batch.judgements[0].rewards, []
    for g in range(0, len(rewards), 4):
        r = sorted(rewards[g : g + 4], reverse=True)
        expected += [1 / (1 + math.exp(r[3] - r[0])), 1 / (1 + math.exp(r[2] - r[1]))]
    assert result.metrics["learner/osp/probability"] == pytest.approx(sum(expected) / len(expected), rel=1e-6)
    assert result.metrics["learner/pairs"] == 12  # ranked: K / 2 = 2 pairs per prompt, 6 prompts


def test_a_step_where_every_group_is_tied_backs_a_zero_gradient(builtin_models, batch):
    """No pair at all (every prompt's samples judged equal): the rank still steps, with a zero gradient
    (`zero_backward`, what a rank with an empty shard does to keep the collectives in step)."""
    k = batch.batch.samples_per_prompt
    flat = tuple(float(i // k) for i in range(len(batch.batch.rollouts)))  # equal within every group
    tied = batch.model_copy(update={"judgements": (batch.judgements[0].model_copy(update={"rewards": flat}),)})
    learner = make_learner(builtin_models.policy, "dpo")
    before = learner.state_dict()
    result = learner.train_step([tied], 0, {"gt": 1.0})
    assert result.metrics["learner/pairs"] == 0.0 and result.metrics["learner/tied_groups"] == 6.0
    assert result.metrics["learner/grad_norm"] == 0.0 and "learner/loss" not in result.metrics
    assert result.policy_version == 1
    after = learner.state_dict()
    assert all(torch.equal(after[name], before[name]) for name in before)
    moved = learner.train_step([batch], 1, {"gt": 1.0})  # and the next step trains normally
    assert moved.metrics["learner/pairs"] == 6.0 and moved.metrics["learner/grad_norm"] > 0.0


def test_zero2_and_zero3_agree_on_the_first_step(builtin_models, batch):
    two = make_learner(builtin_models.policy, zero_stage=2)
    three = make_learner(builtin_models.policy, zero_stage=3)
    a = two.train_step([batch], 0, {"gt": 1.0})
    b = three.train_step([batch], 0, {"gt": 1.0})
    assert a.metrics["learner/loss"] == pytest.approx(b.metrics["learner/loss"], rel=1e-5)
    sa, sb = two.state_dict(), three.state_dict()
    assert sa.keys() == sb.keys()
    assert max((sa[k] - sb[k]).abs().max().item() for k in sa) < 1e-5


def test_export_probe_and_opponent_ring(builtin_models, batch):
    from transformers import AutoModelForCausalLM

    learner = make_learner(builtin_models.policy)
    hf = AutoModelForCausalLM.from_pretrained(builtin_models.policy)
    assert learner.state_dict().keys() == hf.state_dict().keys()
    seq = batch.batch.rollouts[0].sequence_token_ids.tolist()
    with torch.no_grad():
        logp = torch.log_softmax(hf(input_ids=torch.tensor([seq])).logits[0, :-1], -1)
    expected = logp[torch.arange(len(seq) - 1), torch.tensor(seq[1:])]
    probe = learner.probe([seq])
    assert torch.allclose(torch.tensor(probe.logprobs[0]), expected, atol=1e-5)

    assert learner.opponents.versions == [0, 0]
    for step in range(3):
        result = learner.train_step([batch], step, {"gt": 1.0})
        assert result.policy_version == step + 1 and result.trained_on_version == 0
    # snapshot_every=2: at step 2 the policy after 2 updates became the newest opponent.
    assert learner.opponents.versions == [2, 0]
    newest = learner.opponents.models[0].state_dict()
    assert any((newest[k] - hf.state_dict()[k]).abs().max() > 1e-6 for k in newest)
    with pytest.raises(ValueError, match="one policy version"):
        other = batch.model_copy(update={"batch": batch.batch.model_copy(update={"policy_version": 1})})
        learner.train_step([batch, other], 3, {"gt": 1.0})


def test_logits_only_from_the_first_response_position_give_the_same_logprobs(builtin_models, batch):
    """`Models.token_logprobs` projects only positions from the earliest response token on
    (`logits_to_keep`); on every response position it equals the full forward pass."""
    from dataclasses import replace

    from learner.collate import collate_sequences
    from learner.models import first_response_position

    learner = make_learner(builtin_models.policy, "grpo")
    assert learner.models.logits_to_keep  # a Llama model takes it
    rollouts = batch.batch.rollouts[:8]
    t = collate_sequences(rollouts, learner.pad_token_id)
    start = first_response_position(t.response_mask)
    assert start == min(len(r.prompt_token_ids) for r in rollouts) - 1 > 0
    model = learner.engine.module.eval()
    with torch.no_grad():
        trimmed = learner.models.token_logprobs(model, t)
        full = replace(learner.models, logits_to_keep=False).token_logprobs(model, t)
    assert trimmed.shape == full.shape == t.response_mask.shape
    mask = t.response_mask
    assert torch.allclose(trimmed[mask], full[mask], atol=1e-5)
    assert (trimmed[:, :start] == 0).all() and not torch.allclose(full[:, :start], torch.zeros_like(full[:, :start]))


@pytest.mark.parametrize("algo", ["dpo", "grpo"])
def test_the_step_reports_where_its_time_went(builtin_models, batch, algo):
    """learner/time/*: forward, backward and optimizer seconds (and the sequence family's no-grad
    pass), each > 0 and together within the step's own learner/seconds."""
    metrics = make_learner(builtin_models.policy, algo).train_step([batch], 0, {"gt": 1.0}).metrics
    parts = ["forward", "backward", "optimizer"] + (["no_grad_pass"] if algo == "grpo" else [])
    assert sorted(k for k in metrics if k.startswith("learner/time/")) == sorted(f"learner/time/{p}" for p in parts)
    assert all(metrics[f"learner/time/{p}"] > 0 for p in parts)
    assert sum(metrics[f"learner/time/{p}"] for p in parts) <= metrics["learner/seconds"]


@pytest.mark.parametrize("algo", sorted(FIRST_LOSS))
def test_every_algorithm_s_first_loss_is_its_hand_value(builtin_models, batch, algo):
    """At the first step the policy is the reference, every opponent snapshot and the old policy:
    each pair's margin against them is 0, so the loss is known by hand whatever the samples (the
    values and their derivation: tests/e2e/test_algorithms.py FIRST_LOSS); the algorithm's own
    loss metric is the step's loss."""
    from learner.algorithms import get_algorithm
    from tests.learner.test_direction import CASES

    sections = next((c.sections for c in CASES if c.algo == algo), None) or {}
    learner = make_learner(builtin_models.policy, algo, sections)
    spec = get_algorithm(algo)
    result = (
        learner.train_step([batch], 0, {"gt": 1.0}, {"gt": 1.0})
        if spec.needs_self_judge
        else learner.train_step([batch], 0, {"gt": 1.0})
    )
    assert result.metrics["learner/loss"] == pytest.approx(FIRST_LOSS[algo], rel=1e-5, abs=1e-6)
    assert result.metrics[f"learner/{algo}/loss"] == pytest.approx(result.metrics["learner/loss"], rel=1e-5, abs=1e-7)
    assert result.metrics["learner/grad_norm"] > 0.0 and result.policy_version == 1


@pytest.mark.parametrize(("algo", "sections"), [("grpo", {"grpo": {"kl_coef": 0.0}}), ("sppo", {})])
def test_kl_to_reference_without_a_trained_reference_loads_it_for_the_call(builtin_models, batch, algo, sections):
    """A learner that trains without a reference (zero KL weight; SPPO) builds none, yet the
    evaluation's KL (`kl_to_reference`, what eval/kl_to_reference reports) is that of a learner that
    holds one: the starting weights are loaded for the call and not kept."""
    lean = make_learner(builtin_models.policy, algo, sections)
    assert lean.reference is None and lean.models.reference is None
    assert lean.kl_to_reference([batch.batch]) == 0.0  # nothing trained yet: the policy is the reference
    lean.train_step([batch], 0, {"gt": 1.0})
    held = make_learner(builtin_models.policy, "grpo")  # default kl_coef > 0: holds the reference
    assert held.reference is not None
    held.engine.module.load_state_dict(lean.state_dict())
    kl = lean.kl_to_reference([batch.batch])
    assert abs(kl) > 1e-4 and kl == pytest.approx(held.kl_to_reference([batch.batch]), rel=1e-5)
    assert lean.reference is None and lean.models.reference is None  # not kept for the next step
