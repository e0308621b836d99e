"""The algorithms end to end: `python -m driver --algo X --steps 3` on the embedded default.

Real Ray, vLLM and DeepSpeed as a user runs them; each run must train (its own loss ran, the
policy moved, vLLM serves the trained weights) and evaluate. One run per way the driver wires an
algorithm differently: DPO (the pair family on a reward judge), GRPO (the sequence family), OSP
(its default manifest, deploy/judges/self.yaml: the policy judges its own samples);
HT-MNPO and PPO with its critic on two ZeRO-3 ranks below; MNPO in test_resume.py. The other
algorithms share those paths; each one's learner step is checked in-process against hand-derived
values (tests/learner/test_direction.py, and its first loss in
tests/learner/test_engine.py::test_every_algorithm_s_first_loss_is_its_hand_value), which costs a
second where a run costs half a minute.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.e2e.driver_runs import read_metrics, run_driver

# The first step trains the starting policy, which is also the reference and every opponent
# snapshot: each pair's margin against them is 0, so the loss is known by hand (defaults: DPO's
# beta 0.1, MNPO's eta 0.5) whatever the samples. GRPO's and RLOO's advantages sum to 0 in every
# group, and their single update sees ratio 1 and KL 0, so their loss is 0.
FIRST_LOSS = {  # (also tests/learner/test_engine.py's, in-process, for every algorithm)
    "inpo": 1.0,  # (0 - 1 / (2 eta))^2
    "dpo": math.log(2),
    "rdpo": math.log(2),
    "osp": math.log(2),  # -log sigma(0), label noise or soft p alike
    "ipo": 25.0,  # (0 - 1 / (2 beta))^2
    "grpo": 0.0,
    "rloo": 0.0,
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dpo", "grpo", "osp"])
def test_three_steps_end_to_end(builtin_models, tmp_path, algo):
    out = tmp_path / algo
    plots = ("tracking.plots=true",) if algo == "dpo" else ()  # (the one e2e run that draws them)
    log = run_driver(out, "eval.every=0", *plots, algo=algo).stderr
    assert "step 3/3 | " in log and "win rate vs starting policy" in log
    assert (out / "plots" / "overview.png").is_file() == bool(plots) and (out / "summary.md").is_file() == bool(plots)

    steps, final = read_metrics(out)
    assert [r["learner/policy_version"] for r in steps] == [1.0, 2.0, 3.0]
    assert all(r[f"learner/{algo}/loss"] == pytest.approx(r["learner/loss"], rel=1e-5, abs=1e-7) for r in steps)
    if algo in FIRST_LOSS:  # (SPPO's and PPO's first loss depends on the samples)
        assert steps[0]["learner/loss"] == pytest.approx(FIRST_LOSS[algo], rel=1e-5, abs=1e-6)
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)  # vLLM serves what DeepSpeed trained
    assert any(r.get("learner/grad_norm", 0.0) > 0.0 for r in steps)  # the policy was pushed somewhere
    summary = json.loads((out / "summary.json").read_text())["final_eval"]["vs_start"]
    assert (summary["win_rate"], summary["ci_low"], summary["ci_high"], summary["num_prompts"]) == (
        final["eval/win_rate"],
        final["eval/win_rate_ci_low"],
        final["eval/win_rate_ci_high"],
        8,
    )
    config = (out / "config.yaml").read_text()
    assert f"algo: {algo}" in config
    if algo == "osp":
        assert "judges: deploy/judges/self.yaml" in config
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 3


@pytest.mark.slow
def test_ht_mnpo_each_prompt_labelled_by_one_annotator_group(builtin_models, tmp_path):
    """HT-MNPO: three annotator-group judges, prompt group g labelled by judge g mod 3 alone."""
    out = tmp_path / "ht"
    run_driver(out, "eval.every=0", "mnpo.pairing=per_judge", flags=("--judges", "deploy/judges/groups.yaml"))
    steps, _ = read_metrics(out)
    assert [r["learner/policy_version"] for r in steps] == [1.0, 2.0, 3.0]
    assert {"judge/topical/mean", "judge/exact-count/mean", "judge/varied/mean"} <= set(steps[0])
    assert all(0 < r["learner/pairs"] <= 8 for r in steps)  # one pair per prompt at most
    assert "pairing: per_judge" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_ppo_on_two_zero3_ranks_checkpoints_its_critic(builtin_models, tmp_path):
    """PPO's critic on its own ZeRO-3 engine across 2 ranks (advantage whitening all-reduced)."""
    out = tmp_path / "ppo2"
    log = run_driver(
        out, "eval.every=0", "learner.num_workers=2", "learner.zero_stage=3", "checkpoint.every=2", algo="ppo"
    ).stderr
    assert "learner rank 1/2" in log and "| updates 4 |" in log  # 2 epochs x 2 minibatches
    steps, _ = read_metrics(out)
    assert all(r["sync/max_probe_gap"] < 1e-3 for r in steps)
    # the critic trains on both ranks' returns: a gradient every step, and a value loss that
    # differs from step to step (the returns and the critic change)
    assert all(r["learner/critic_grad_norm"] > 0.0 for r in steps)
    assert len({r["learner/ppo/value_loss"] for r in steps}) == len(steps)
    critic = list((out / "checkpoints").glob("*/critic"))
    assert len(critic) == 1 and any(critic[0].iterdir())  # both ranks' critic shards under tag 'critic'
