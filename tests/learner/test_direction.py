"""One learner step moves the policy the right way, by the amount a first-order expansion predicts.

The other engine tests compare the learner with itself (micro-batching, ZeRO stages); a consistent
chosen/rejected swap or a sign error would pass them. Here the expected update is derived by hand
from each loss, computed on an independent copy of the HF model, and compared with what
`PolicyLearner.train_step` actually did.

Batch: two prompts of the built-in task, K = 2 responses each, judged so that the preferred
response is index 1 in the first group and index 0 in the second (an index mix-up cannot pass).

Derivation. At the first step the policy equals the reference, every opponent snapshot and the
"old" policy, so each loss reduces to a linear function of the sequence logprobs to first order:
the gradient of the learner's loss is g = grad G with the surrogate

    G = sum_{s,t} W[s, t] * logp_pi(y_s,t | prefix)        (W constant, derived per algorithm below)

Pair family (loss = mean over the P pairs of l(h), h = lp(chosen) - lp(rejected), lp with the
algorithm's reduction; dl/dh at the first step, where h_pi = h_ref = h_opponents):
    DPO   l = -log sigma(beta (h - h_ref))                   dl/dh = -beta sigma(0)  = -beta / 2
    rDPO  l = [-(1-e) log sigma(beta dh) + e log sigma(-beta dh)] / (1 - 2e)
                                                             dl/dh = -beta / (2 (1 - 2e))
    IPO   l = (h - h_ref - 1/(2 beta))^2                     dl/dh = -1 / beta
    MNPO  l = (h - r h_ref - (1-r) sum lambda_j h_j - 1/(2 eta))^2
                                                             dl/dh = -2 / (2 eta)     = -1 / eta
          (INPO: the same with one opponent)
    OSP   l = -(p log sigma(beta dh) + (1-p) log sigma(-beta dh))
                                                             dl/dh = -beta (p - 1/2),
          p = sigma((r_chosen - r_rejected) / T) (ranked pairing, a reward judge of temperature T)
Sequence family (loss = mean over the N sequences; ratio = 1 and KL = 0 at the first step, and the
gradients of PPO-clip's max(), of GRPO's k3 and of the KL penalties vanish or coincide there):
    GRPO  l_s = -A_s mean_t ratio_t,   A_s = (r_s - mean_g r) / (std_g r + std_eps)  (unbiased std)
    RLOO  l_s = -A_s mean_t ratio_t,   A_s = r_s - mean of the others' r
    SPPO  l_s = (lp_s - lp_old,s - eta (P_s - 1/2))^2,  dl/dlp_s = -2 eta (P_s - 1/2),
          P_s = sigma((r_s - r_other) / T)
    PPO   l_s = -mean_t A_st ratio_t, A = whiten(GAE(rewards, V)), rewards = the score on the last
          token (the k1 KL penalty is 0), V the critic's values before the step

AdamW's first step (bias-corrected m = g, v = g^2, weight decay 0) moves each parameter by
    d theta_i = -lr * c g_i / (|c g_i| + eps),   c = the gradient-clip factor min(1, clip / (|g| + 1e-6))
(sign descent, up to eps = 1e-8). So any margin m (lp(preferred) - lp(other) of a group) changes by
    d m = grad m . d theta + O(lr^2)
which is positive for the margins the loss pushes. The test asserts: the learner's gradient norm
is |g|, the parameter update is d theta, and each group's margin rose by d m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from learner.algorithms.grpo import GRPOConfig
from learner.algorithms.ppo import PPOConfig
from learner.algorithms.rloo import RLOOConfig
from learner.algorithms.sppo import SPPOConfig
from protocols import JudgedBatch, Judgement, Rollout, RolloutBatch
from tests.learner.engine_helpers import make_learner

LR = 2e-6  # small enough that the second-order term stays under ~1% of the first-order change
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which the learner uses
GROUPS = (  # (prompt, [(response, reward), ...]): the preferred response is index 1, then index 0
    ("list 3 fruits:", [(" cat dog red", 0.2), (" apple pear plum", 0.9)]),
    ("name 2 animals:", [(" cat dog", 0.8), (" hammer saw drill wrench", 0.3)]),  # unequal gaps: pair weights differ
)
TEMPERATURE = 0.5  # the judge's Bradley-Terry temperature (OSP's and SPPO's probabilities)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class Sequences:
    """The batch as the test sees it: token ids, rewards, groups."""

    prompts: list[list[int]]  # per sequence, in batch order
    responses: list[list[int]]
    rewards: list[float]
    batch: JudgedBatch

    def groups(self) -> list[tuple[int, int]]:
        """(preferred, other) sequence index of each group of two."""
        out = []
        for a in range(0, len(self.rewards), 2):
            out.append((a, a + 1) if self.rewards[a] > self.rewards[a + 1] else (a + 1, a))
        return out


@pytest.fixture(scope="module")
def sequences(builtin_models) -> Sequences:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builtin_models.policy)
    prompts, responses, rewards, rollouts = [], [], [], []
    for g, (prompt, answers) in enumerate(GROUPS):
        prompt_ids = tok(prompt)["input_ids"]
        for text, reward in answers:
            response_ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            prompts.append(prompt_ids)
            responses.append(response_ids)
            rewards.append(reward)
            rollouts.append(
                Rollout(
                    prompt_id=f"p{g}",
                    prompt_text=prompt,
                    prompt_token_ids=tuple(prompt_ids),
                    response_text=text,
                    response_token_ids=tuple(response_ids),
                    logprobs=(-1.0,) * len(response_ids),
                    policy_version=0,
                    finish_reason="stop",
                )
            )
    batch = RolloutBatch(step=0, policy_version=0, samples_per_prompt=2, rollouts=tuple(rollouts))
    judged = JudgedBatch(batch=batch, judgements=(Judgement(judge="gt", rewards=tuple(rewards)),))
    return Sequences(prompts=prompts, responses=responses, rewards=rewards, batch=judged)


def token_logprobs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """[len(response)] logp of each response token given its prefix (one unpadded sequence)."""
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return logp[torch.arange(len(targets)), targets][len(prompt) - 1 :]


def reduce(tokens: torch.Tensor, reduction: str) -> torch.Tensor:
    return tokens.sum() if reduction == "sum" else tokens.mean()


# ------------------------------------------------------------------ the hand-derived surrogates
# Each returns G (a differentiable scalar whose gradient is the learner loss's gradient at the
# first step) from the per-sequence token logprobs `lp` of the batch, in batch order.


def pair_surrogate(dl_dh):
    """Pair family: G = (1/P) sum_pairs dl/dh * (lp(chosen) - lp(rejected))."""

    def surrogate(seqs: Sequences, lp: list[torch.Tensor], reduction: str, learner) -> torch.Tensor:
        pairs = seqs.groups()
        return sum(
            dl_dh(seqs.rewards[c], seqs.rewards[r]) * (reduce(lp[c], reduction) - reduce(lp[r], reduction)) for c, r in pairs
        ) / len(pairs)

    return surrogate


def grpo_surrogate(seqs, lp, reduction, learner):
    eps = learner.algo_cfg.std_eps
    total = 0.0
    for c, r in seqs.groups():
        mean = (seqs.rewards[c] + seqs.rewards[r]) / 2
        std = abs(seqs.rewards[c] - seqs.rewards[r]) / math.sqrt(2)  # unbiased std of two values
        for s in (c, r):
            total = total - (seqs.rewards[s] - mean) / (std + eps) * lp[s].mean()
    return total / len(lp)


def rloo_surrogate(seqs, lp, reduction, learner):
    total = 0.0
    for c, r in seqs.groups():
        total = total - (seqs.rewards[c] - seqs.rewards[r]) * lp[c].mean() - (seqs.rewards[r] - seqs.rewards[c]) * lp[r].mean()
    return total / len(lp)


def sppo_surrogate(seqs, lp, reduction, learner):
    eta = learner.algo_cfg.eta
    total = 0.0
    for c, r in seqs.groups():
        for s, o in ((c, r), (r, c)):
            p = sigmoid((seqs.rewards[s] - seqs.rewards[o]) / TEMPERATURE)
            total = total - 2 * eta * (p - 0.5) * reduce(lp[s], reduction)
    return total / len(lp)


def ppo_surrogate(seqs, lp, reduction, learner):
    """GAE on the critic's values (read from the learner's critic before the step), whitened."""
    cfg = learner.algo_cfg
    advantages = []
    with torch.no_grad():
        for s, (prompt, response) in enumerate(zip(seqs.prompts, seqs.responses)):
            ids = torch.tensor([prompt + response])
            values = learner.critic.engine.module(input_ids=ids).logits[0, :-1, 0].float()[len(prompt) - 1 :]
            rewards = torch.zeros(len(response))
            rewards[-1] = max(-cfg.reward_clip, min(cfg.reward_clip, seqs.rewards[s]))  # KL penalty: 0 here
            a, following, running = torch.zeros(len(response)), 0.0, 0.0
            for t in reversed(range(len(response))):  # delta_t = r_t + gamma V_{t+1} - V_t, V after the end = 0
                running = rewards[t] + cfg.gamma * following - values[t] + cfg.gamma * cfg.gae_lambda * running
                a[t], following = running, values[t]
            advantages.append(a)
    flat = torch.cat(advantages)
    mean, var = flat.mean(), flat.var(unbiased=False)
    total = 0.0
    for s, a in enumerate(advantages):
        total = total - ((a - mean) / torch.sqrt(var + 1e-8) * lp[s]).mean()
    return total / len(lp)


@dataclass(frozen=True)
class Case:
    algo: str
    surrogate: object
    reduction: str  # of the margins checked (the loss's own sequence logprob)
    sections: dict = field(default_factory=dict)


CASES = [
    Case("dpo", pair_surrogate(lambda rc, rr: -0.1 / 2), "sum"),  # beta = 0.1 (default)
    Case("rdpo", pair_surrogate(lambda rc, rr: -0.1 / (2 * (1 - 2 * 0.1))), "sum"),  # flip rate e = 0.1
    Case("ipo", pair_surrogate(lambda rc, rr: -1 / 0.1), "sum"),
    Case("mnpo", pair_surrogate(lambda rc, rr: -1 / 0.5), "mean"),  # eta = 0.5 (default)
    Case("inpo", pair_surrogate(lambda rc, rr: -1 / 0.5), "mean"),
    Case("osp", pair_surrogate(lambda rc, rr: -0.1 * (sigmoid((rc - rr) / TEMPERATURE) - 0.5)), "sum"),
    Case("grpo", grpo_surrogate, "mean", {"grpo": GRPOConfig()}),
    Case("rloo", rloo_surrogate, "mean", {"rloo": RLOOConfig()}),
    Case("sppo", sppo_surrogate, "sum", {"sppo": SPPOConfig()}),
    Case("ppo", ppo_surrogate, "mean", {"ppo": PPOConfig(epochs=1, minibatches=1)}),  # one optimizer step
]


@pytest.mark.parametrize("case", CASES, ids=[c.algo for c in CASES])
def test_one_step_raises_the_preferred_margin_by_the_first_order_amount(builtin_models, sequences, case):
    from transformers import AutoModelForCausalLM

    learner = make_learner(builtin_models.policy, case.algo, case.sections, lr=LR)
    model = AutoModelForCausalLM.from_pretrained(builtin_models.policy, dtype=torch.float32)
    params = dict(model.named_parameters())

    lp = [token_logprobs(model, p, r) for p, r in zip(sequences.prompts, sequences.responses)]
    surrogate = case.surrogate(sequences, lp, case.reduction, learner)
    g = dict(zip(params, torch.autograd.grad(surrogate, list(params.values()), retain_graph=True)))
    norm = math.sqrt(sum(float((x.double() ** 2).sum()) for x in g.values()))
    clip = learner.cfg.grad_clip / (norm + 1e-6)
    scale = min(1.0, clip)
    update = {k: -LR * scale * x / ((scale * x).abs() + ADAM_EPS) for k, x in g.items()}
    margins, predicted = [], []
    for c, r in sequences.groups():
        m = reduce(lp[c], case.reduction) - reduce(lp[r], case.reduction)
        grad_m = torch.autograd.grad(m, list(params.values()), retain_graph=True)
        margins.append(float(m.detach()))
        predicted.append(sum(float((gm.double() * update[k].double()).sum()) for k, gm in zip(params, grad_m)))

    result = learner.train_step([sequences.batch], 0, {"gt": 1.0}, {"gt": TEMPERATURE})

    # the engine's gradient is the hand-derived one: same norm, and AdamW's sign step on it
    assert result.metrics["learner/grad_norm"] == pytest.approx(norm, rel=1e-4)
    after = learner.state_dict()
    moved = {k: after[k] - model.state_dict()[k] for k in params}
    l1 = sum(float(x.abs().sum()) for x in update.values())
    off = sum(float((moved[k] - update[k]).abs().sum()) for k in params)
    assert off < 1e-3 * l1, (off, l1)
    # coordinate by coordinate, up to gradients at rounding level (|g| ~ eps)
    wrong = sum(int(((moved[k] - update[k]).abs() > 0.1 * LR).sum()) for k in params)
    assert wrong <= 1e-5 * sum(x.numel() for x in g.values()), wrong

    # every group's preferred-over-other margin rose by the first-order amount
    model.load_state_dict(after)
    with torch.no_grad():
        new = [token_logprobs(model, p, r) for p, r in zip(sequences.prompts, sequences.responses)]
    for (c, r), before, expected in zip(sequences.groups(), margins, predicted, strict=True):
        change = float(reduce(new[c], case.reduction) - reduce(new[r], case.reduction)) - before
        assert expected > 0.0
        assert change == pytest.approx(expected, rel=0.02), (case.algo, c, r, change, expected)
