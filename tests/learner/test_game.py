"""Tests for learner/game.py (games, exact Nash measures) and learner/game_play.py (the adapter to the
registered losses, on-policy data, exact-mode equivalences). CPU, float64, a few seconds."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from learner.algorithms import ALGORITHMS
from learner.algorithms.dpo import DPOConfig
from learner.algorithms.mnpo import MNPOConfig
from learner.algorithms.sppo import SPPOConfig
from learner.game import (
    GAMES,
    Game,
    best_response_win,
    condorcet,
    condorcet_winners,
    duality_gap,
    get_game,
    kl,
    population_rate,
    regularised_best_response,
    regularised_nash,
    rock_paper_scissors,
    rotation_strengths,
)
from learner.game_play import (
    Method,
    exact_pairs,
    fit_bradley_terry,
    mnpo_population_step,
    pair_inputs,
    pair_objective,
    run,
    sample_pairs,
)

TWO = np.array([[0.5, 0.8], [0.2, 0.5]])  # response 0 beats response 1 with probability 0.8


def j_payoff(p, q, pref, ref, tau):
    """J(p, q) = p^T P q - tau KL(p || ref) + tau KL(q || ref) from the definition, row by row ([K, N] each)."""

    def kl_rows(x):
        return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0) / ref), 0.0).sum(-1)

    return (p * (q @ pref.T)).sum(-1) - tau * kl_rows(p) + tau * kl_rows(q)


def simplex_grid(steps: int) -> np.ndarray:
    """All points (a, b, c) / steps of the 3-simplex."""
    pts = [(a, b, steps - a - b) for a in range(steps + 1) for b in range(steps + 1 - a)]
    return np.array(pts, dtype=np.float64) / steps


# ---------------------------------------------------------------------------- games
def test_every_game_is_a_valid_preference_game():
    for name in GAMES:
        g = get_game(name)
        np.testing.assert_allclose(g.preference + g.preference.T, 1.0, atol=1e-12)
        np.testing.assert_allclose(np.diag(g.preference), 0.5)
        assert g.reference.min() > 0 and math.isclose(g.reference.sum(), 1.0)


def test_condorcet_matrix_by_hand():
    p = condorcet((0.40, 0.35, 0.25)).preference
    # A > B for groups 1 (A>B>C) and 3 (C>A>B): 0.40 + 0.25; B > C for groups 1, 2: 0.40 + 0.35;
    # C > A for groups 2 (B>C>A) and 3: 0.35 + 0.25. Every majority holds, and they cycle.
    assert p[0, 1] == pytest.approx(0.65) and p[1, 2] == pytest.approx(0.75) and p[2, 0] == pytest.approx(0.60)
    assert condorcet_winners(p) == []


def test_non_transitive_games_have_no_condorcet_winner_and_the_control_does():
    for name in ("hard_rps", "soft_rps", "condorcet", "random"):
        assert condorcet_winners(get_game(name).preference) == [], name
    assert condorcet_winners(get_game("bradley_terry").preference) == [0]


def test_invalid_preference_is_rejected():
    bad = np.array([[0.5, 0.7], [0.4, 0.5]])  # 0.7 + 0.4 != 1
    with pytest.raises(ValueError, match="P \\+ P\\^T"):
        Game("bad", bad, np.array([0.5, 0.5]), "")
    with pytest.raises(ValueError, match="full-support"):
        Game("bad", TWO, np.array([1.0, 0.0]), "")


# ---------------------------------------------------------------------------- exact measures
def test_duality_gap_hand_computed_two_actions():
    # pi = ref = (1/2, 1/2), tau = 1: P pi = (0.5*0.5 + 0.8*0.5, 0.2*0.5 + 0.5*0.5) = (0.65, 0.35);
    # V = log((e^0.65 + e^0.35) / 2) = log((1.915541 + 1.419068) / 2) = log(1.667304) = 0.511208;
    # KL(pi || ref) = 0, so gap = 2 (V - 1/2) = 0.022416.
    pi = np.array([0.5, 0.5])
    assert duality_gap(TWO, pi, pi, 1.0) == pytest.approx(0.0224161278, abs=1e-9)


def test_duality_gap_matches_brute_force_over_the_simplex():
    g = rock_paper_scissors(0.3, reference=(0.6, 0.3, 0.1))
    grid = simplex_grid(300)
    for pi, tau in ((np.array([0.2, 0.5, 0.3]), 0.1), (np.array([0.7, 0.2, 0.1]), 0.5)):
        same = np.broadcast_to(pi, grid.shape)
        best = j_payoff(grid, same, g.preference, g.reference, tau).max()  # max_p J(p, pi)
        worst = j_payoff(same, grid, g.preference, g.reference, tau).min()  # min_q J(pi, q)
        brute = best - worst
        # the grid misses the exact maximiser by at most O(1/300) in each coordinate
        assert duality_gap(g.preference, pi, g.reference, tau) == pytest.approx(brute, abs=2e-4)
        assert brute > 5e-3  # far above the tolerance: the comparison is not between two zeros


def test_gap_is_zero_at_the_symmetric_equilibrium():
    # hard rock-paper-scissors with a uniform reference: by symmetry the uniform policy is the
    # regularised equilibrium for every tau (P pi = 1/2 everywhere, so it is its own best response).
    g = rock_paper_scissors(0.5, reference=(1 / 3, 1 / 3, 1 / 3))
    uniform = np.full(3, 1 / 3)
    for tau in (0.01, 0.1, 1.0):
        assert abs(duality_gap(g.preference, uniform, g.reference, tau)) < 1e-12
    assert best_response_win(g.preference, uniform) == pytest.approx(0.5)


def test_gap_is_zero_at_the_two_action_equilibrium_derived_by_hand():
    # pi = (x, 1-x) is the equilibrium iff x = sigmoid(log(ref0/ref1) + ((P pi)_0 - (P pi)_1) / tau), and
    # (P pi)_0 - (P pi)_1 = (0.5x + 0.8(1-x)) - (0.2x + 0.5(1-x)) = 0.3 for every x. With ref = (1/4, 3/4)
    # and tau = 0.1: x = 1 / (1 + exp(-(log(1/3) + 3))) = 1 / (1 + 3 e^-3) = 1 / 1.149361 = 0.870049.
    ref, tau = np.array([0.25, 0.75]), 0.1
    x = 1 / (1 + 3 * math.exp(-3))
    assert x == pytest.approx(0.870049, abs=1e-6)
    star = np.array([x, 1 - x])
    assert abs(duality_gap(TWO, star, ref, tau)) < 1e-12
    np.testing.assert_allclose(regularised_nash(TWO, ref, tau), star, atol=1e-9)
    for d in (-0.05, -0.005, 0.005, 0.01):
        assert duality_gap(TWO, np.array([x + d, 1 - x - d]), ref, tau) > 1e-6


def test_gap_is_positive_away_from_the_equilibrium_and_zero_at_it():
    rng = np.random.default_rng(0)
    for name in ("hard_rps", "condorcet", "random", "bradley_terry"):
        g = get_game(name)
        star = regularised_nash(g.preference, g.reference, 0.1)
        assert abs(duality_gap(g.preference, star, g.reference, 0.1)) < 1e-10
        np.testing.assert_allclose(regularised_best_response(g.preference, star, g.reference, 0.1), star, atol=1e-9)
        others = rng.dirichlet(np.ones(g.size), size=200)
        gaps = duality_gap(g.preference, others, g.reference, 0.1)
        assert gaps.shape == (200,) and (gaps > 1e-6).all(), name


def test_best_response_win_and_kl_by_hand():
    p = get_game("hard_rps").preference  # rock > scissors > paper > rock, in index order 0 > 1 > 2 > 0
    assert best_response_win(p, np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)  # paper beats pure rock
    # pi = (0.5, 0.5, 0): P(y > pi) = (0.5*0.5 + 1*0.5, 0*0.5 + 0.5*0.5, 1*0.5 + 0*0.5) = (0.75, 0.25, 0.5)
    assert best_response_win(p, np.array([0.5, 0.5, 0.0])) == pytest.approx(0.75)
    # KL((1/2, 1/2, 0) || (1/4, 1/4, 1/2)) = 2 * 0.5 * log(0.5 / 0.25) = log 2
    assert kl(np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])) == pytest.approx(math.log(2))


# ---------------------------------------------------------------------------- the adapter
def test_adapter_gives_the_registered_loss_log_pi_of_each_response():
    # policy (0.5, 0.3, 0.2), reference (0.6, 0.3, 0.1), one opponent (0.4, 0.4, 0.2); pair 0 > 1:
    # h_pi = log(0.5/0.3) = 0.510826, h_ref = log 2 = 0.693147, h_opp = log 1 = 0;
    # r = 0.5, eta = 1: logits = 0.510826 - 0.5 * 0.693147 = 0.164252; loss = (0.164252 - 0.5)^2 = 0.112727
    logprobs = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).log().requires_grad_()
    ref = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).log()
    opp = torch.tensor([[[0.4, 0.4, 0.2]]], dtype=torch.float64).log()
    inputs = pair_inputs(logprobs, ref, opp, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    cfg = MNPOConfig(eta=1.0, ratio=0.5, num_opponents=1)
    for algo in ("mnpo", "inpo"):
        value = pair_objective(algo, cfg, inputs, torch.ones(1, dtype=torch.float64))
        assert value.item() == pytest.approx(0.1127266970, abs=1e-9)


def test_training_calls_the_loss_the_learner_looks_up(monkeypatch):
    seen = []
    for algo in ("mnpo", "sppo"):
        spec = ALGORITHMS[algo]
        if spec.family == "pair":

            def spy(inputs, cfg, real=spec.pair_loss, name=algo):
                seen.append((name, inputs, cfg))
                return real(inputs, cfg)

            monkeypatch.setitem(ALGORITHMS, algo, dataclasses.replace(spec, pair_loss=spy))
        else:

            def spy(inputs, cfg, real=spec.sequence_loss, name=algo):
                seen.append((name, inputs, cfg))
                return real(inputs, cfg)

            monkeypatch.setitem(ALGORITHMS, algo, dataclasses.replace(spec, sequence_loss=spy))
    g = get_game("soft_rps")
    mnpo_cfg = MNPOConfig(eta=0.5, ratio=0.2, num_opponents=2)
    run(g, Method("m", "mnpo", mnpo_cfg), tau=0.1, steps=1, queries_per_step=16, mode="exact")
    sppo_cfg = SPPOConfig(eta=1.0)
    run(g, Method("s", "sppo", sppo_cfg), tau=0.1, steps=1, queries_per_step=12, mode="exact")
    assert [name for name, _, _ in seen] == ["mnpo", "sppo"]
    (_, pair, cfg_a), (_, seq, cfg_b) = seen
    assert cfg_a is mnpo_cfg and cfg_b is sppo_cfg
    log_ref = np.log(g.reference)
    i, j, _ = exact_pairs(g.preference, g.reference)  # step 0 starts at pi_ref; both snapshots are pi_ref
    np.testing.assert_allclose(pair.policy_chosen.detach(), log_ref[i])
    np.testing.assert_allclose(pair.ref_rejected, log_ref[j])
    np.testing.assert_allclose(pair.opponent_chosen, np.stack([log_ref[i], log_ref[i]]))
    assert pair.policy_chosen.requires_grad
    np.testing.assert_allclose(seq.targets, g.preference @ g.reference)  # exact P(y > pi_t)
    np.testing.assert_allclose(seq.logprobs.detach()[:, 0], log_ref)
    np.testing.assert_allclose(seq.old_logprobs[:, 0], log_ref)


def test_sampled_pairs_follow_the_preference():
    rng = np.random.default_rng(0)
    pi = np.array([[0.5, 0.5]])
    rows, chosen, rejected = sample_pairs(rng, TWO, pi, 40_000)
    assert (chosen != rejected).all() and (rows == 0).all()
    # half the draws are ties (dropped); of the rest, response 0 is chosen with P = 0.8
    assert len(chosen) == pytest.approx(20_000, rel=0.03)
    assert (chosen == 0).mean() == pytest.approx(0.8, abs=0.01)


# ---------------------------------------------------------------------------- exact-mode equivalences
def minimise_exact_pair_loss(algo, cfg, game, sampling, opponents):
    """argmin over theta of the registered loss's expectation over on-policy pairs from `sampling`."""
    i, j, w = exact_pairs(game.preference, sampling)
    theta = torch.zeros(1, game.size, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor(np.log(game.reference))
    opp = None if opponents is None else torch.tensor(np.log(np.stack(opponents)))[:, None, :]
    rows = torch.zeros(len(i), dtype=torch.long)
    optimizer = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        inputs = pair_inputs(theta.log_softmax(-1), ref, opp, rows, torch.as_tensor(i), torch.as_tensor(j))
        loss = pair_objective(algo, cfg, inputs, torch.as_tensor(w))
        loss.backward()
        return loss

    optimizer.step(closure)
    return theta.detach().softmax(-1).numpy()[0]


def test_one_inpo_step_with_infinite_samples_is_a_mirror_descent_step():
    g = get_game("soft_rps")
    pi_t = np.array([0.5, 0.3, 0.2])
    eta, ratio = 0.5, 0.2  # INPO's step size 1/eta = 2 and KL strength tau = ratio * eta = 0.1
    got = minimise_exact_pair_loss("inpo", MNPOConfig(eta=eta, ratio=ratio), g, pi_t, [pi_t])
    # INPO's update written out (Zhang et al. 2024): pi_{t+1} ∝ pi_t^(1 - s tau) ref^(s tau) exp(s P(y > pi_t)),
    # step s = 1/eta = 2, tau = 0.1, so s tau = 0.2
    s, tau = 1 / eta, ratio * eta
    md = pi_t ** (1 - s * tau) * g.reference ** (s * tau) * np.exp(s * (g.preference @ pi_t))
    np.testing.assert_allclose(got, md / md.sum(), atol=1e-7)


def test_mnpo_exact_minimiser_is_the_multiplayer_mirror_step():
    g = get_game("random")
    rng = np.random.default_rng(1)
    pi_t, older = rng.dirichlet(np.ones(g.size)), rng.dirichlet(np.ones(g.size))
    cfg = MNPOConfig(eta=1.0, ratio=0.3, num_opponents=2, opponent_weights=(0.75, 0.25))
    got = minimise_exact_pair_loss("mnpo", cfg, g, pi_t, [pi_t, older])
    want = mnpo_population_step(g.preference, pi_t, g.reference, [pi_t, older], (0.75, 0.25), 0.3, 1.0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_dpo_exact_minimiser_on_a_bradley_terry_game_is_the_rlhf_optimum():
    # the DPO population loss on BT labels is minimised by pi ∝ ref exp(s / beta) (Rafailov et al. 2023)
    g = get_game("bradley_terry")
    s = np.array([1.0, 0.5, 0.0, -0.5, -1.0])
    got = minimise_exact_pair_loss("dpo", DPOConfig(beta=0.5), g, np.full(g.size, 1 / g.size), None)
    want = g.reference * np.exp(s / 0.5)
    np.testing.assert_allclose(got, want / want.sum(), atol=1e-6)


@pytest.mark.parametrize("mode", ["exact", "sampled"])
def test_mnpo_with_ratio_one_is_online_ipo(mode):
    g = get_game("random")
    common = {"tau": 0.1, "steps": 20, "queries_per_step": 24, "mode": mode, "seeds": (3, 4)}
    mnpo = run(g, Method("m", "mnpo", MNPOConfig(eta=0.3, ratio=1.0, num_opponents=2, snapshot_every=5), lr=0.1), **common)
    ipo = run(g, Method("i", "ipo", DPOConfig(beta=0.3), lr=0.1), **common)
    np.testing.assert_allclose(mnpo.final_policy, ipo.final_policy, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mnpo.gap_last, ipo.gap_last, rtol=0, atol=1e-12)
    assert abs(mnpo.final_policy - g.reference).max() > 0.05  # both moved


def test_mnpo_one_opponent_trains_exactly_like_inpo():
    g = get_game("condorcet")
    cfg = MNPOConfig(eta=0.5, ratio=0.2, num_opponents=1, snapshot_every=3)
    a = run(g, Method("m", "mnpo", cfg, lr=0.1), tau=0.1, steps=20, queries_per_step=16, seeds=(0,))
    b = run(g, Method("i", "inpo", cfg, lr=0.1), tau=0.1, steps=20, queries_per_step=16, seeds=(0,))
    np.testing.assert_array_equal(a.final_policy, b.final_policy)


# ---------------------------------------------------------------------------- convergence of the population update
def test_rotation_of_hard_rps_at_uniform_by_hand():
    # J = (I - 11^T/3) / 3, J^1/2 = (I - 11^T/3) / sqrt(3); (P - P^T)/2 = A/2 with A the cyclic +-1 matrix,
    # whose eigenvalues are 0, +-i sqrt(3), and A 1 = 0; so the operator is A/6: omega = sqrt(3)/6 = 0.288675
    omega = rotation_strengths(get_game("hard_rps").preference, np.full(3, 1 / 3))
    np.testing.assert_allclose(np.sort(omega), [0.0, math.sqrt(3) / 6, math.sqrt(3) / 6], atol=1e-12)


def test_population_rate_one_opponent_by_hand():
    # hard RPS with a uniform reference: pi* = uniform for every tau. eta = 0.5, r = 0.2:
    # sqrt((1 - r)^2 + omega^2 / eta^2) = sqrt(0.64 + (1/12) / 0.25) = sqrt(0.973333) = 0.986577
    g = rock_paper_scissors(0.5, reference=(1 / 3, 1 / 3, 1 / 3))
    assert population_rate(g.preference, np.full(3, 1 / 3), 0.5, 0.2, (1.0,)) == pytest.approx(0.986577, abs=1e-6)


def population_errors(game, eta, ratio, weights, tau, iterations):
    star = regularised_nash(game.preference, game.reference, tau)
    history = [game.reference] * len(weights)
    errors = []
    for _ in range(iterations):
        new = mnpo_population_step(game.preference, history[0], game.reference, history, weights, ratio, eta)
        history = [new] + history[:-1]
        errors.append(np.abs(np.log(new) - np.log(star)).max())
    return np.array(errors), star


@pytest.mark.parametrize(("name", "eta", "m"), [("condorcet", 0.5, 2), ("random", 0.25, 1), ("hard_rps", 0.5, 3)])
def test_population_rate_predicts_the_exact_update(name, eta, m):
    g = get_game(name)
    errors, star = population_errors(g, eta, 0.1 / eta, (1 / m,) * m, 0.1, 60)
    empirical = (errors[59] / errors[39]) ** (1 / 20)  # per-iteration factor once the linear regime holds
    assert empirical == pytest.approx(population_rate(g.preference, star, eta, 0.1 / eta, (1 / m,) * m), abs=0.015)


def test_online_ipo_converges_only_when_rotation_is_below_tau():
    # r = 1 (online IPO, beta = eta = tau): the factor is omega / tau. The transitive control rotates
    # little (omega = 0.007 < 0.1) and converges; hard RPS (omega = 0.27 > 0.1) keeps cycling.
    for name, converges in (("bradley_terry", True), ("hard_rps", False)):
        g = get_game(name)
        star = regularised_nash(g.preference, g.reference, 0.1)
        assert (population_rate(g.preference, star, 0.1, 1.0, (1.0,)) < 1) == converges
        errors, _ = population_errors(g, 0.1, 1.0, (1.0,), 0.1, 300)
        assert (errors[-1] < 1e-8) == converges, name


# ---------------------------------------------------------------------------- runs and BT-RLHF
def test_trace_shapes_queries_and_average_iterate():
    g = get_game("hard_rps")
    t = run(g, Method("s", "sppo", SPPOConfig(eta=1.0), lr=0.1), tau=0.1, steps=5, queries_per_step=13, seeds=(0, 1, 2))
    assert t.gap_last.shape == (6, 3) and t.final_policy.shape == (3, 3)
    assert list(t.queries) == [0, 12, 24, 36, 48, 60]  # 2 groups of K = 4 (6 labels each) per step
    np.testing.assert_allclose(t.gap_last[0], duality_gap(g.preference, g.reference, g.reference, 0.1))
    np.testing.assert_allclose(t.gap_avg[1], t.gap_last[1])  # after one step the average is that step's policy
    assert not np.allclose(t.final_policy[0], t.final_policy[1])  # seeds are independent runs
    sparse = run(
        g,
        Method("s", "sppo", SPPOConfig(eta=1.0), lr=0.1),
        tau=0.1,
        steps=5,
        queries_per_step=13,
        seeds=(0, 1, 2),
        record_every=2,
    )
    assert list(sparse.queries) == [0, 24, 48, 60]  # steps 2, 4 and the last
    np.testing.assert_allclose(sparse.gap_avg[-1], t.gap_avg[-1])  # the average still counts every step


def test_batched_seeds_are_independent_runs():
    # an exact-mode run of two copies equals one run: rows do not interact (per-run gradient clipping)
    g = get_game("soft_rps")
    m = Method("m", "mnpo", MNPOConfig(eta=0.5, ratio=0.2, num_opponents=2, snapshot_every=4), lr=0.3)
    one = run(g, m, tau=0.1, steps=15, queries_per_step=8, mode="exact", seeds=(0,))
    two = run(g, m, tau=0.1, steps=15, queries_per_step=8, mode="exact", seeds=(0, 1))
    np.testing.assert_allclose(two.final_policy, np.vstack([one.final_policy] * 2), atol=1e-14)


def test_bradley_terry_fit_recovers_the_scores_from_infinite_data():
    g = get_game("bradley_terry")
    i, j, w = exact_pairs(g.preference, g.reference)
    wins = np.zeros((g.size, g.size))
    np.add.at(wins, (i, j), w)
    np.testing.assert_allclose(fit_bradley_terry(wins, prior=0.0), [1.0, 0.5, 0.0, -0.5, -1.0], atol=1e-8)


def test_bt_rlhf_exact_plays_the_closed_form_optimum():
    g = get_game("bradley_terry")
    t = run(g, Method("bt", "bt_rlhf", bt_beta=0.5), tau=0.1, steps=2, queries_per_step=10, mode="exact")
    want = g.reference * np.exp(np.array([1.0, 0.5, 0.0, -0.5, -1.0]) / 0.5)
    np.testing.assert_allclose(t.final_policy[0], want / want.sum(), atol=1e-7)


def test_wrong_config_section_is_refused():
    with pytest.raises(TypeError, match="mnpo"):
        run(get_game("hard_rps"), Method("x", "mnpo", DPOConfig()), tau=0.1, steps=1, queries_per_step=4)


def test_unknown_game_lists_the_valid_ones():
    with pytest.raises(ValueError, match="hard_rps"):
        get_game("chess")


def test_all_pairs_helper_covers_every_ordered_pair():
    i, j, w = exact_pairs(TWO, np.array([0.25, 0.75]))
    # ordered pairs (0 > 1) and (1 > 0): 2 * 0.25 * 0.75 * 0.8 = 0.3 and 2 * 0.75 * 0.25 * 0.2 = 0.075,
    # normalised by 1 - (0.25^2 + 0.75^2) = 0.375: 0.8 and 0.2
    assert sorted(zip(i.tolist(), j.tolist(), np.round(w, 12).tolist())) == [(0, 1, 0.8), (1, 0, 0.2)]
    assert list(itertools.chain(i, j)) == [0, 1, 1, 0]
