"""Nash benchmark: exact preference games, the registered losses, one query budget per run.

    python bench/nash.py                        # the full grid (~6 min of CPU time, one core)
    python bench/nash.py --quick                # a smaller grid and budget (< 1 min), for a smoke test
    python bench/nash.py --games hard_rps random --out runs/nash

A tabular policy over each game's responses (learner/game.py) is trained with the project's own
losses (learner/game_play.py: the learner's `SPEC.pair_loss` / `SPEC.sequence_loss`, its AdamW
settings), on-policy pairs labelled by Bernoulli(P), and measured exactly after every step.

Protocol (the constants below):
- KL strength of the measured game: TAU = 0.1; every run starts at pi_ref.
- Budget: STEPS x QUERIES labels per run (300 x 48 = 14,400). Pair methods draw 48 on-policy pairs
  a step (identical responses are ties, skipped, still counted); SPPO draws 8 groups of K = 4 and
  labels all 6 pairs of each group; BT-RLHF draws 48 pairs from its sampling policy.
- Grid (`grid()`): every loss-trained method gets 4 learning rates x its own scale parameter:
  MNPO/INPO 4 etas with r = TAU / eta (docs/nash.md), 10 steps between snapshots, uniform
  opponent weights; SPPO 6 etas; IPO and DPO 7 betas. BT-RLHF gets the 7 betas x 2 pair sources
  (no learning rate). The baselines' beta is tuned freely, MNPO's r is set by the theory.
- Tuning: each grid point on TUNE_SEEDS; the point with the lowest mean last-iterate duality gap
  at the end of the budget is kept. Report: the kept point on EVAL_SEEDS (fresh), and once in
  exact (infinite-sample) mode.
- Parameterisation check (exact mode): MNPO with r = TAU / eta against the project default
  r = 1/3, next to the gap of the equilibrium that r eta predicts.

Writes OUT/nash.md (tables), OUT/nash.png (curves) and OUT/nash.json; prints the markdown. Not a
test: it takes minutes. Results go in BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from learner.algorithms.dpo import DPOConfig
from learner.algorithms.mnpo import MNPOConfig
from learner.algorithms.sppo import SPPOConfig
from learner.game import (
    GAMES,
    best_response_win,
    duality_gap,
    get_game,
    kl,
    population_rate,
    regularised_nash,
    rotation_strengths,
)
from learner.game_play import Method, Trace, mnpo_population_step, run

TAU = 0.1
STEPS, QUERIES = 300, 48
TUNE_SEEDS = (0, 1, 2, 3)
EVAL_SEEDS = tuple(range(100, 110))
LRS = (0.003, 0.01, 0.03, 0.1)
MNPO_ETAS = (0.125, 0.25, 0.5, 1.0, 2.0)  # r = TAU / eta: 0.8, 0.4, 0.2, 0.1, 0.05
BETAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 1.0)  # DPO, IPO, BT-RLHF
SPPO_ETAS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
SNAPSHOT_EVERY = 10
BT_REF, BT_POLICY = "bt_rlhf (reference pairs)", "bt_rlhf (on-policy pairs)"
METHODS = ("mnpo m=2", "mnpo m=3", "inpo (m=1)", "sppo", "ipo", "dpo", BT_REF, BT_POLICY)
TD_MNPO = ("mnpo m=2", "mnpo m=3")
BT_BASELINES = ("dpo", BT_REF, BT_POLICY)
TARGET_GAMES = ("hard_rps", "soft_rps", "random")


def grid(quick: bool) -> dict[str, list[Method]]:
    """Every method's grid points (quick: one learning rate, two scale values)."""
    lrs = (0.03,) if quick else LRS
    pick = (lambda xs: xs[1:4:2]) if quick else (lambda xs: xs)
    out: dict[str, list[Method]] = {}
    for label, algo, m in (("mnpo m=2", "mnpo", 2), ("mnpo m=3", "mnpo", 3), ("inpo (m=1)", "inpo", 1)):
        out[label] = [
            Method(label, algo, MNPOConfig(eta=eta, ratio=TAU / eta, num_opponents=m, snapshot_every=SNAPSHOT_EVERY), lr=lr)
            for eta in pick(MNPO_ETAS)
            for lr in lrs
        ]
    out["sppo"] = [Method("sppo", "sppo", SPPOConfig(eta=eta), lr=lr) for eta in pick(SPPO_ETAS) for lr in lrs]
    for algo in ("ipo", "dpo"):
        out[algo] = [Method(algo, algo, DPOConfig(beta=b), lr=lr) for b in pick(BETAS) for lr in lrs]
    for label, source in ((BT_REF, "reference"), (BT_POLICY, "policy")):
        out[label] = [Method(label, "bt_rlhf", bt_beta=b, bt_sampling=source) for b in pick(BETAS)]
    return out


def describe(m: Method) -> str:
    """The grid coordinates of a method, for the tables."""
    c = m.config
    if m.algo == "bt_rlhf":
        return f"beta {m.bt_beta:g}"
    if isinstance(c, MNPOConfig):
        return f"eta {c.eta:g}, r {c.ratio:.3g}, lr {m.lr:g}"
    if isinstance(c, DPOConfig):
        return f"beta {c.beta:g}, lr {m.lr:g}"
    return f"eta {c.eta:g}, lr {m.lr:g}"


def tune(game_name: str, points: list[Method], steps: int, queries: int, seeds: tuple[int, ...]) -> tuple[Method, float]:
    game = get_game(game_name)
    scored = [
        (
            float(
                run(game, m, tau=TAU, steps=steps, queries_per_step=queries, seeds=seeds, record_every=steps).gap_last[-1].mean()
            ),
            i,
        )
        for i, m in enumerate(points)
    ]
    score, index = min(scored)
    return points[index], score


def summary(trace: Trace) -> dict[str, list[float]]:
    """Final values per seed, and the per-step mean curves for the plot."""
    return {
        "gap_last": trace.gap_last[-1].tolist(),
        "gap_avg": trace.gap_avg[-1].tolist(),
        "brw_last": trace.brw_last[-1].tolist(),
        "brw_avg": trace.brw_avg[-1].tolist(),
        "kl_last": trace.kl_last[-1].tolist(),
        "kl_avg": trace.kl_avg[-1].tolist(),
        "curve_queries": trace.queries.tolist(),
        "curve_gap_last": trace.gap_last.mean(1).tolist(),
        "curve_gap_avg": trace.gap_avg.mean(1).tolist(),
    }


def best_population_eta(game, star: np.ndarray) -> list[tuple[float, float]]:
    """For m = 1, 2, 3 (uniform weights, r = TAU / eta): the eta in [TAU, 4] minimising the linear
    convergence factor of the exact population update (`population_rate`), and that factor."""
    etas = np.geomspace(TAU, 4.0, 300)
    out = []
    for m in (1, 2, 3):
        rates = [population_rate(game.preference, star, eta, TAU / eta, (1 / m,) * m) for eta in etas]
        i = int(np.argmin(rates))
        out.append((float(etas[i]), float(rates[i])))
    return out


def population_mnpo(game_name: str, eta: float, ratio: float, iterations: int) -> float:
    """Gap after `iterations` of TD-MNPO's exact population update (m = 2, uniform weights): each
    iteration is the exact minimiser of the expected loss (`mnpo_population_step`, tested equal to
    minimising the registered loss)."""
    game = get_game(game_name)
    history = [game.reference, game.reference]  # newest first; both slots start as pi_ref
    for _ in range(iterations):
        new = mnpo_population_step(game.preference, history[0], game.reference, history, (0.5, 0.5), ratio, eta)
        history = [new, history[0]]
    return float(duality_gap(game.preference, history[0], game.reference, TAU))


def parameterisation(game_name: str, steps: int, queries: int) -> list[dict]:
    """MNPO (m = 2) with r = TAU / eta against the project default r = 1/3: the gap at TAU of the
    equilibrium the theory says it converges to (KL strength eta r), of the exact population
    recursion, and of exact-mode training (lr 0.1, the budget's steps)."""
    game = get_game(game_name)
    rows = []
    for eta in (0.25, 0.5, 1.0):
        for ratio in (TAU / eta, 1 / 3):
            target = eta * ratio  # the KL strength whose equilibrium is the fixed point (docs/nash.md)
            star = regularised_nash(game.preference, game.reference, target)
            predicted = max(float(duality_gap(game.preference, star, game.reference, TAU)), 0.0)
            cfg = MNPOConfig(eta=eta, ratio=ratio, num_opponents=2, snapshot_every=SNAPSHOT_EVERY)
            t = run(
                game,
                Method("mnpo", "mnpo", cfg, lr=0.1),
                tau=TAU,
                steps=steps,
                queries_per_step=queries,
                mode="exact",
                record_every=steps,
            )
            rows.append(
                {
                    "game": game_name,
                    "eta": eta,
                    "ratio": ratio,
                    "target_tau": target,
                    "predicted_gap": predicted,
                    "population_gap": max(population_mnpo(game_name, eta, ratio, 500), 0.0),
                    "gap_last": float(t.gap_last[-1, 0]),
                }
            )
    return rows


def fmt(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if len(a) > 1 else f"{a.mean():.4f}"


def verdict(results: dict, games: list[str]) -> list[str]:
    """Per target game: TD-MNPO's mean last-iterate gap against every Bradley-Terry baseline's.

    Sampled: met when below each baseline's mean by more than 2 standard errors of the difference.
    Exact mode (one deterministic run each, the sampled-tuned hyperparameters): met when below each.
    """
    head = (
        "| game | "
        + " | ".join(TD_MNPO + BT_BASELINES)
        + " | sampled: "
        + " / ".join(TD_MNPO)
        + " below all | exact mode: "
        + " / ".join(TD_MNPO)
        + " below all |"
    )
    lines = [head, "|---|" + "---|" * (len(TD_MNPO) + len(BT_BASELINES) + 2)]
    for g in games:
        if g not in TARGET_GAMES:
            continue
        r = results[g]["methods"]
        sampled = {m: np.asarray(r[m]["sampled"]["gap_last"]) for m in TD_MNPO + BT_BASELINES}
        exact = {m: r[m]["exact"]["gap_last"][0] for m in TD_MNPO + BT_BASELINES}
        verdicts_s, verdicts_e = [], []
        for m in TD_MNPO:
            a = sampled[m]
            ok = all(
                b.mean() - a.mean() > 2 * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
                for b in (sampled[x] for x in BT_BASELINES)
            )
            verdicts_s.append("met" if ok else "not met")
            verdicts_e.append("met" if all(exact[m] < exact[x] for x in BT_BASELINES) else "not met")
        cells = [f"{sampled[m].mean():.4f} (exact {exact[m]:.4f})" for m in TD_MNPO + BT_BASELINES]
        lines.append(f"| {g} | " + " | ".join(cells) + f" | {' / '.join(verdicts_s)} | {' / '.join(verdicts_e)} |")
    return lines


def markdown(results: dict, games: list[str], args: argparse.Namespace, wall: float) -> str:
    head = (
        f"Nash benchmark: tau {TAU}, {args.steps} steps x {args.queries} labels = {args.steps * args.queries} "
        f"labels per run, tuned on seeds {list(TUNE_SEEDS)}, reported on seeds {list(EVAL_SEEDS)}; {wall:.0f} s."
    )
    out = [
        head,
        "",
        (
            "| game | responses | gap of pi_ref | pi*: KL to ref, best-response win | rotation omega at pi* "
            "| population update, best eta (factor per iteration): m = 1; 2; 3 |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for g in games:
        e = results[g]["equilibrium"]
        best = "; ".join(f"{eta:.2f} ({rate:.3f})" for eta, rate in e["best_eta"])
        out.append(
            f"| {g} ({results[g]['description']}) | {results[g]['size']} | {e['gap_ref']:.4f} | "
            f"{e['kl']:.3f}, {e['brw']:.3f} | {e['omega']:.3f} | {best} |"
        )
    out += [
        "",
        "Last-iterate duality gap at the end of the budget (sampled, mean ± sd over the report seeds):",
        "",
        "| method | " + " | ".join(games) + " |",
        "|---|" + "---|" * len(games),
    ]
    for m in METHODS:
        out.append(f"| {m} | " + " | ".join(fmt(results[g]["methods"][m]["sampled"]["gap_last"]) for g in games) + " |")
    for g in games:
        out += [
            "",
            (
                f"**{g}**: hyperparameters kept by tuning, final measures (sampled: mean ± sd; exact: "
                "one infinite-sample run with the same hyperparameters)."
            ),
            "",
            (
                "| method | kept | gap last | gap average | best-response win last | KL last | exact gap last "
                "| exact gap average |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in METHODS:
            r = results[g]["methods"][m]
            s, e = r["sampled"], r["exact"]
            out.append(
                f"| {m} | {r['kept']} | {fmt(s['gap_last'])} | {fmt(s['gap_avg'])} | {fmt(s['brw_last'])} | "
                f"{fmt(s['kl_last'])} | {e['gap_last'][0]:.4f} | {e['gap_avg'][0]:.4f} |"
            )
    out += [
        "",
        (
            "Target: TD-MNPO's last-iterate gap below every Bradley-Terry baseline's (sampled mean over the "
            "report seeds, and the exact-mode run):"
        ),
        "",
    ] + verdict(results, games)
    out += [
        "",
        (
            f"MNPO parameterisation (m = 2): the fixed point is the equilibrium at KL strength eta r. Gap at "
            f"tau = {TAU} of that equilibrium, after 500 iterations of the exact population update, and after "
            f"exact-mode training (lr 0.1, {args.steps} steps, a snapshot every {SNAPSHOT_EVERY}):"
        ),
        "",
        "| game | eta | r | eta r | gap of pi*(eta r) | population update | exact-mode training |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["parameterisation"]:
        out.append(
            f"| {row['game']} | {row['eta']:g} | {row['ratio']:.3f} | {row['target_tau']:.3f} | "
            f"{row['predicted_gap']:.4f} | {row['population_gap']:.4f} | {row['gap_last']:.4f} |"
        )
    return "\n".join(out) + "\n"


def plot(results: dict, games: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(games), figsize=(3.6 * len(games), 6.4), squeeze=False, sharex=True)
    colours = dict(zip(METHODS, plt.get_cmap("tab10").colors))
    for col, g in enumerate(games):
        for row, key in enumerate(("curve_gap_last", "curve_gap_avg")):
            ax = axes[row][col]
            for m in METHODS:
                s = results[g]["methods"][m]["sampled"]
                ax.plot(s["curve_queries"], np.maximum(s[key], 1e-5), label=m, color=colours[m], lw=1.2)
            ax.set_yscale("log")
            ax.set_title(f"{g}: {'last' if row == 0 else 'average'} iterate", fontsize=9)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"duality gap (tau = {TAU})")
            if row == 1:
                ax.set_xlabel("preference labels")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="*", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "nash")
    parser.add_argument("--quick", action="store_true", help="1 learning rate, 2 scale values, 100 steps")
    parser.add_argument("--steps", type=int, default=None, help=f"steps per run (default {STEPS}; quick 100)")
    parser.add_argument("--queries", type=int, default=QUERIES, help="labels per step")
    args = parser.parse_args()
    args.steps = args.steps or (100 if args.quick else STEPS)
    torch.set_num_threads(1)
    start = time.perf_counter()
    points = grid(args.quick)
    results: dict = {"parameterisation": []}
    for g in args.games:
        game = get_game(g)
        star = regularised_nash(game.preference, game.reference, TAU)
        results[g] = {
            "description": game.description,
            "size": game.size,
            "methods": {},
            "equilibrium": {
                "policy": star.tolist(),
                "kl": kl(star, game.reference),
                "brw": best_response_win(game.preference, star),
                "gap_ref": duality_gap(game.preference, game.reference, game.reference, TAU),
                "omega": float(rotation_strengths(game.preference, star).max()),
                "best_eta": best_population_eta(game, star),
            },
        }
        for m in METHODS:
            kept, score = tune(g, points[m], args.steps, args.queries, TUNE_SEEDS)
            common = {"tau": TAU, "steps": args.steps, "queries_per_step": args.queries, "record_every": 5}
            results[g]["methods"][m] = {
                "kept": describe(kept),
                "tuning_score": score,
                "sampled": summary(run(game, kept, seeds=EVAL_SEEDS, **common)),
                "exact": summary(run(game, kept, mode="exact", **common)),
            }
            sys.stderr.write(f"{g} {m}: kept {describe(kept)} (tuning gap {score:.4f}), {time.perf_counter() - start:.0f} s\n")
        results["parameterisation"] += parameterisation(g, args.steps, args.queries)
    wall = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(results, args.games, args, wall)
    (args.out / "nash.md").write_text(text)
    (args.out / "nash.json").write_text(json.dumps(results, indent=1))
    plot(results, args.games, args.out / "nash.png")
    sys.stdout.write(text)
    sys.stderr.write(f"wrote {args.out}/nash.md, nash.png, nash.json in {wall:.0f} s\n")


if __name__ == "__main__":
    main()
