"""Nash methods on the language model: a cyclic judge population, six policies, a round robin.

    python bench/nash_lm.py                       # fit the BT reward model, 5 runs of 200 steps, tournament
    python bench/learning.py --suite nash         # the same (bench/learning.py hands over to this file)
    python bench/nash_lm.py --reuse               # keep finished runs in --out, redo the tournament
    python bench/nash_lm.py --steps 20 --out runs/nash-lm-smoke --samples 4   # a smoke run

The judge is the word-list task's three annotator groups (topical, exact_count, varied) as a
population in draw mode with equal weights (deploy/judges/population-draw.yaml): each pair is
labelled by one group, and the expected label, the 2-of-3 majority, can cycle. With the built-in
tiny model and the same seed, prompts and sample budget (STEPS x 32 prompts x 4 samples), every
run is a full `python -m driver` (bench/learning.py `run_variant`):

    mnpo-td     TD-MNPO (defaults) on the population's drawn labels
    mnpo-ht     HT-MNPO: the three groups as separate judges, each prompt labelled by one group in
                turn (deploy/judges/groups.yaml, mnpo.pairing=per_judge)
    inpo        INPO (MNPO with one opponent) on the drawn labels
    dpo         online DPO on the drawn labels (a Bradley-Terry learner on on-policy pairs)
    grpo-bt-rm  GRPO on a reward model fitted the Bradley-Terry way to pairs labelled by the same
                population (wordlist.population_pairs; 36,000 training pairs of corpus-style
                responses, the built-in reward model's recipe): the classic RLHF pipeline

Then the tournament: the five final policies (OUTPUT/final) and the starting policy sample
SAMPLES responses to each held-out prompt (HF generate, temperature 1, the runs' response cap);
every pair of entrants is compared on every cross pair of their responses to a prompt by the
population judge itself (draw mode), by its expected label (the equal-weight vote) and by each
group alone (rollout/tournament.py). Reported: the win-rate matrix with 95% CIs (over prompts),
each policy's worst-case win rate against the others, its worst win rate against its own opponent
pool (the driver's eval, MNPO and INPO only, ground-truth judge), per-group win rates against the
start, and whether MNPO's worst case is at least that of the Bradley-Terry-trained policies.

Writes OUT/nash_lm.json, OUT/nash_lm.md and OUT/nash_tournament.png (or --png); prints the
markdown. Not a test: it takes minutes. Results go in BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cpu import CPUMeter
from bench.learning import run_variant
from deploy.loading import load_manifest
from rollout.tasks import wordlist
from rollout.tournament import Tournament, majority_cycles, pointwise, round_robin, standing

POPULATION = "deploy/judges/population-draw.yaml"
START = "start"
# name -> (algo, driver flags / --set overrides); the reward-model manifest is written at run time.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "mnpo-td": ("mnpo", [f"--judges={POPULATION}"]),
    "mnpo-ht": ("mnpo", ["--judges=deploy/judges/groups.yaml", "mnpo.pairing=per_judge"]),
    "inpo": ("inpo", [f"--judges={POPULATION}"]),
    "dpo": ("dpo", [f"--judges={POPULATION}"]),
    "grpo-bt-rm": ("grpo", []),  # + --judges=OUT/rm-population.yaml
}
NASH = ("mnpo-td", "mnpo-ht")
BRADLEY_TERRY = ("dpo", "grpo-bt-rm")
BASE = [
    "--set",
    "checkpoint.every=0",
    "--set",
    "eval.every=0",
    "--set",
    "tracking.tensorboard=false",
    "--set",
    "tracking.plots=false",
]
# The population-labelled reward model: the built-in reward model's recipe (driver/builtin.py).
RM_PARAMS = {"seed": 0, "pairs": 40000, "steps": 600, "batch_size": 64, "lr": 1e-3, "weights": "equal"}
RM_CHECK_PAIRS = 4000  # fresh population pairs (another seed) for the agreement figures
GROUP_NAMES = tuple(wordlist.GROUPS)


# --------------------------------------------------------------------------- the Bradley-Terry reward model


def population_reward_model() -> tuple[Path, dict]:
    """The reward model fitted to population-labelled pairs, cached beside the built-in models
    (same tokenizer and task key); built on first use."""
    from driver.builtin import ensure_builtin_policy

    policy = ensure_builtin_policy()
    digest = hashlib.sha256(json.dumps(RM_PARAMS, sort_keys=True).encode()).hexdigest()[:8]
    final = policy.parent / f"reward-model-population-{digest}"
    if not (final / "build.json").is_file():
        from transformers import AutoTokenizer

        from learner import tiny_model

        sys.stderr.write(f"fitting the population-labelled reward model into {final} ...\n")
        pairs = wordlist.population_pairs(seed=RM_PARAMS["seed"], size=RM_PARAMS["pairs"])
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            report = tiny_model.build_reward_model(
                tmp,
                pairs,
                AutoTokenizer.from_pretrained(policy),
                seed=RM_PARAMS["seed"],
                steps=RM_PARAMS["steps"],
                batch_size=RM_PARAMS["batch_size"],
                lr=RM_PARAMS["lr"],
            )
            info = {
                "params": RM_PARAMS,
                "final_loss": round(report.final_loss, 4),
                "seconds": round(report.seconds, 1),
                "heldout_accuracy_drawn_labels": report.heldout_accuracy,
                **reward_model_agreement(tmp),
            }
            (tmp / "build.json").write_text(json.dumps(info, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, json.loads((final / "build.json").read_text())


def reward_model_agreement(path: Path) -> dict[str, float]:
    """On fresh pairs: how often the RM orders a pair as its drawn label, as the population's
    majority (pairs with a strict 2-of-3 or 3-of-3 majority) and as the ground truth."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from learner.tiny_model import reward_scores

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    pairs = wordlist.population_pairs(seed=RM_PARAMS["seed"] + 1, size=RM_CHECK_PAIRS)
    prompts = [p for p, _, _ in pairs]
    chosen = reward_scores(model, tokenizer, prompts, [c for _, c, _ in pairs]).tolist()
    rejected = reward_scores(model, tokenizer, prompts, [r for _, _, r in pairs]).tolist()
    drawn = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
    majority, agree = 0, 0
    truth = 0
    for (p, a, b), ra, rb in zip(pairs, chosen, rejected):
        votes = sum((g(p, a) > g(p, b)) - (g(p, a) < g(p, b)) for g in wordlist.GROUPS.values())
        if votes:
            majority += 1
            agree += (votes > 0) == (ra > rb)
        truth += (wordlist.ground_truth(p, a) > wordlist.ground_truth(p, b)) == (ra > rb)
    return {
        "fresh_pairs": len(pairs),
        "accuracy_drawn_labels": round(drawn, 4),
        "agreement_majority": round(agree / majority, 4),
        "majority_pairs": majority,
        "agreement_ground_truth": round(truth / len(pairs), 4),
    }


def score_sum_agreement() -> float:
    """On the same fresh pairs as `reward_model_agreement`: how often the best transitive score at
    hand, the equal-weight sum of the groups' own scores, orders a pair as the population's majority
    (pairs with one). What a well-fitted Bradley-Terry reward could reach."""
    pairs = wordlist.population_pairs(seed=RM_PARAMS["seed"] + 1, size=RM_CHECK_PAIRS)
    majority = agree = 0
    for p, a, b in pairs:
        votes = sum((g(p, a) > g(p, b)) - (g(p, a) < g(p, b)) for g in wordlist.GROUPS.values())
        if votes:
            total = sum(g(p, a) - g(p, b) for g in wordlist.GROUPS.values())
            majority += 1
            agree += (votes > 0) == (total > 0)
    return round(agree / majority, 4)


# --------------------------------------------------------------------------- runs


def train(names: list[str], steps: int, out: Path, rm_manifest: Path, reuse: bool, meter: CPUMeter) -> dict[str, dict]:
    """Each run in OUT/NAME; its bench row (wall and CPU time) is kept in OUT/NAME/bench.json so
    that --reuse keeps it. A failed run is retried once (on a shared machine a run can lose a race
    for a free port), and the failure is reported."""
    runs = {}
    for name in names:
        algo, sets = VARIANTS[name]
        if name == "grpo-bt-rm":
            sets = [*sets, f"--judges={rm_manifest}"]
        row_file = out / name / "bench.json"
        if reuse and (out / name / "summary.json").is_file():
            sys.stderr.write(f"{name}: reusing {out / name}\n")
            runs[name] = (
                json.loads(row_file.read_text())
                if row_file.is_file()
                else {"name": name, "algo": algo, "sets": " ".join(sets), "wall": None, "cpu": None}
            )
        else:
            for attempt in (1, 2):
                if (out / name).exists():
                    shutil.rmtree(out / name)  # a run directory is never reused by the driver
                cpu0 = meter.seconds()
                try:
                    row = run_variant(name, algo, sets, steps, out, BASE)
                    break
                except RuntimeError as err:
                    if attempt == 2:
                        raise
                    sys.stderr.write(f"{name}: failed, retrying once: {str(err)[-400:]}\n")
            runs[name] = {**row, "cpu": meter.seconds() - cpu0, "attempts": attempt}
            row_file.write_text(json.dumps(runs[name], indent=2))
            sys.stderr.write(
                f"{name}: {row['wall']:.0f} s, CPU {runs[name]['cpu']:.0f} s, win rate vs start {row['win']:.3f} (ground truth)\n"
            )
        runs[name]["sets"] = runs[name]["sets"].replace(str(out), "OUT")  # no machine paths in the tables
        runs[name].update(driver_eval(out / name))
    return runs


def driver_eval(run: Path) -> dict:
    """The driver's final evaluation (ground-truth judge) and, for pool algorithms, the worst win
    rate against its own opponent pool (eval/pool_worst_* of metrics.jsonl)."""
    summary = json.loads((run / "summary.json").read_text())["final_eval"]
    out = {
        "gt_vs_start": summary["vs_start"],
        "gt_reward": [summary["start_mean_reward"], summary["mean_reward"]],
        "kl_eval": summary["kl_to_reference"],
        "pool_worst": summary.get("pool_worst"),
        "pool_versions": summary.get("pool_versions"),
    }
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "learner/kl_to_reference" in r]
    out["kl_last_step"] = steps[-1]["learner/kl_to_reference"] if steps else None
    out["steps"] = len(steps)
    return out


# --------------------------------------------------------------------------- the tournament


def sample(path: Path, prompts: list[str], n: int, max_tokens: int, seed: int) -> list[list[str]]:
    """n responses per prompt from the HF checkpoint at `path` (temperature 1, no top-k/top-p)."""
    from bench.hf_sampling import HFSampler

    sampler = HFSampler(path, prompts)
    texts = sampler.decode(sampler(seed, n, max_tokens))
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def judges() -> dict[str, object]:
    """name -> Compare: the population as trained on (draw), its expected label (equal-weight
    vote of hard group votes) and each group alone (hard votes)."""
    from rollout.judges import build_judge

    (spec,) = load_manifest(REPO / POPULATION).judges
    out = {"population": build_judge(spec).compare, "vote": build_judge(spec.model_copy(update={"mode": "vote"})).compare}
    out.update({g: pointwise(wordlist.GROUPS[g]) for g in GROUP_NAMES})
    return out


def tournament(entrants: dict[str, Path], samples: int, max_tokens: int, seed: int) -> dict:
    prompts = [p.text for p in wordlist.heldout_prompts()]
    responses = {name: sample(path, prompts, samples, max_tokens, seed + i) for i, (name, path) in enumerate(entrants.items())}
    compares = judges()
    results = {judge: round_robin(compare, prompts, responses) for judge, compare in compares.items()}
    cycles = [
        majority_cycles(compares["vote"], prompt, [r for rs in responses.values() for r in rs[i]])
        for i, prompt in enumerate(prompts)
    ]
    return {"prompts": prompts, "responses": responses, "results": results, "cycles": cycles}


def rate_json(rate) -> dict:
    return {"win_rate": round(rate.win_rate, 4), "ci": [round(rate.ci_low, 4), round(rate.ci_high, 4)]}


def fmt(rate, digits: int = 2) -> str:
    return f"{rate.win_rate:.{digits}f} [{rate.ci_low:.{digits}f}, {rate.ci_high:.{digits}f}]"


def run_rows(policies: list[str], runs: dict[str, dict]) -> list[str]:
    lines = [
        "| policy | algo | judges | steps | GT win vs start [95% CI] | GT reward start -> end | KL (eval) | "
        "worst vs own pool (GT) [95% CI] (pool versions) | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in policies:
        r = runs[name]
        gt, pool = r["gt_vs_start"], r["pool_worst"]
        pool_s = "n/a"
        if pool:
            pool_s = f"{pool['win_rate']:.3f} [{pool['ci_low']:.3f}, {pool['ci_high']:.3f}] ({r['pool_versions']})"
        wall = f"{r['wall']:.0f}" if r.get("wall") else "-"
        cpu = f"{r['cpu']:.0f}" if r.get("cpu") else "-"
        lines.append(
            f"| {name} | {r['algo']} | `{r['sets']}` | {r['steps']} | {gt['win_rate']:.3f} [{gt['ci_low']:.3f}, "
            f"{gt['ci_high']:.3f}] | {r['gt_reward'][0]:.3f} -> {r['gt_reward'][1]:.3f} | "
            f"{r['kl_eval']:.2f} | {pool_s} | {wall} | {cpu} |"
        )
    return lines


def summarise(played: dict, runs: dict[str, dict], rm_info: dict, meta: dict) -> tuple[str, dict]:
    t: dict[str, Tournament] = played["results"]
    pop, vote = t["population"], t["vote"]
    names = list(pop.names)
    policies = [n for n in names if n != START]
    cyclic, transitive = (sum(c[k] for c in played["cycles"]) for k in (0, 1))
    with_cycle = sum(c[0] > 0 for c in played["cycles"])
    lines = [
        (
            f"Judge: {POPULATION} (draw mode, equal weights). {meta['prompts']} held-out prompts x "
            f"{meta['samples']} responses per entrant; every cross pair compared ({meta['samples'] ** 2} per "
            "prompt and pair of entrants); 95% CIs over prompts."
        ),
        "",
        (
            f"Non-transitivity on these responses: of the triples of distinct responses to a prompt (all entrants "
            f"pooled) whose three pairs have a strict majority, {cyclic} of {cyclic + transitive} "
            f"({cyclic / max(1, cyclic + transitive):.1%}) are cycles; {with_cycle} of {meta['prompts']} prompts "
            "have at least one."
        ),
        "",
    ]
    triples = list(itertools.combinations(names, 3))
    policy_cycles = [
        list(c)
        for c in triples
        if any(
            pop.rate(x, y).win_rate > 0.5 and pop.rate(y, z).win_rate > 0.5 and pop.rate(z, x).win_rate > 0.5
            for x, y, z in (c, c[::-1])
        )
    ]
    order = sorted(names, key=pop.mean, reverse=True)
    lines += [
        (
            f"Cycles among the entrants (matrix point estimates): {len(policy_cycles)} of {len(triples)} triples"
            + (f" {policy_cycles}" if policy_cycles else f"; by mean win rate: {' > '.join(order)}")
            + "."
        ),
        "",
        "Runs (the driver's own final eval, ground-truth judge, 47 prompts x 4 samples):",
        "",
    ]
    lines += run_rows(policies, runs)
    lines += [
        "",
        "Win-rate matrix under the population judge (row's win rate against column) [95% CI]:",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for a in names:
        cells = ["-" if a == b else fmt(pop.rate(a, b)) for b in names]
        lines.append(f"| **{a}** | " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "Worst case: each policy's lowest win rate against the other entrants (start included), the "
            "opponent, 1/2 - worst (exploitability among the entrants), the mean win rate over the others, "
            "the worst case by the expected label (equal-weight vote) and the driver's worst win rate against "
            "its own opponent pool (ground truth):"
        ),
        "",
        "| policy | worst case [95% CI] | against | 1/2 - worst | mean | worst case, expected label | "
        "worst vs own pool (GT) | words per response |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst = {}
    for a in names:
        opp, w = pop.worst_case(a)
        vopp, vw = vote.worst_case(a)
        worst[a] = w
        pool = runs.get(a, {}).get("pool_worst")
        pool_s = f"{pool['win_rate']:.3f}" if pool else "n/a"
        words = [len(r.split()) for rs in played["responses"][a] for r in rs]
        lines.append(
            f"| {a} | {fmt(w, 3)} | {opp} | {0.5 - w.win_rate:+.3f} | {pop.mean(a):.3f} | {fmt(vw, 3)} ({vopp}) | "
            f"{pool_s} | {sum(words) / len(words):.2f} |"
        )
    lines += [
        "",
        (
            "Per annotator group: win rate against the start by each group's own hard vote [95% CI], "
            "then each group's mean score of the policy's responses and the share of empty responses:"
        ),
        "",
        "| policy | " + " | ".join(GROUP_NAMES) + " | population | mean " + " / ".join(GROUP_NAMES) + " | empty |",
        "|---|" + "---|" * (len(GROUP_NAMES) + 3),
    ]
    for a in names:
        rows = [(prompt, r) for prompt, rs in zip(played["prompts"], played["responses"][a]) for r in rs]
        means = " / ".join(f"{sum(wordlist.GROUPS[g](p, r) for p, r in rows) / len(rows):.2f}" for g in GROUP_NAMES)
        empty = sum(not r.split() for _, r in rows) / len(rows)
        cells = (
            ["-"] * (len(GROUP_NAMES) + 1)
            if a == START
            else ([fmt(t[g].rate(a, START)) for g in GROUP_NAMES] + [fmt(pop.rate(a, START))])
        )
        lines.append(f"| {a} | " + " | ".join(cells) + f" | {means} | {empty:.1%} |")
    verdict = [
        {
            "nash": m,
            "bt": b,
            "nash_worst": worst[m].win_rate,
            "bt_worst": worst[b].win_rate,
            "point_at_least": worst[m].win_rate >= worst[b].win_rate,
            "intervals": standing(worst[m], worst[b]),
        }
        for m in NASH
        for b in BRADLEY_TERRY
        if m in worst and b in worst
    ]
    lines += [
        "",
        "Target (MNPO's worst case at least that of the Bradley-Terry-trained policies, CIs overlapping or better):",
        "",
    ]
    for v in verdict:
        lines.append(
            f"- {v['nash']} {v['nash_worst']:.3f} vs {v['bt']} {v['bt_worst']:.3f}: point estimate "
            f"{'at least' if v['point_at_least'] else 'below'}, intervals {v['intervals']}"
        )
    lines += [
        "",
        (
            f"BT reward model (fitted to {rm_info['params']['pairs']} population-labelled pairs, 10% held out): "
            f"held-out accuracy on drawn labels {rm_info['heldout_accuracy_drawn_labels']:.3f}; on "
            f"{rm_info['fresh_pairs']} fresh pairs it orders {rm_info['accuracy_drawn_labels']:.3f} as the drawn "
            f"label, {rm_info['agreement_majority']:.3f} as the population's majority "
            f"({rm_info['majority_pairs']} pairs with one; the equal-weight sum of the groups' scores: "
            f"{rm_info['score_sum_agreement_majority']:.3f}), {rm_info['agreement_ground_truth']:.3f} as the "
            "ground truth."
        ),
    ]
    data = {
        "meta": meta,
        "reward_model": rm_info,
        "runs": runs,
        "verdict": verdict,
        "cycles": {
            "cyclic": cyclic,
            "transitive": transitive,
            "prompts_with_cycle": with_cycle,
            "entrant_triples": len(triples),
            "entrant_cycles": policy_cycles,
        },
        "matrices": {j: {a: {b: rate_json(tt.rate(a, b)) for b in names if b != a} for a in names} for j, tt in t.items()},
        "worst_case": {
            j: {a: {"opponent": tt.worst_case(a)[0], **rate_json(tt.worst_case(a)[1])} for a in names} for j, tt in t.items()
        },
        "example_prompt": played["prompts"][0],
        "examples": {name: played["responses"][name][0][:4] for name in names},
    }
    return "\n".join(lines) + "\n", data


def plot(t: dict[str, Tournament], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pop = t["population"]
    names = list(pop.names)
    n = len(names)
    m = np.full((n, n), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a != b:
                m[i, j] = pop.rate(a, b).win_rate
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})
    image = ax.imshow(m, cmap="RdBu", vmin=0.2, vmax=0.8)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a != b:
                r = pop.rate(a, b)
                ax.text(j, i, f"{r.win_rate:.2f}\n[{r.ci_low:.2f},{r.ci_high:.2f}]", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), [f"{a}\n(worst {pop.worst_case(a)[1].win_rate:.2f})" for a in names], fontsize=8)
    ax.set_title("win rate of row vs column, population judge (draw)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    policies = [a for a in names if a != START]
    judges_ = [*GROUP_NAMES, "population"]
    width = 0.8 / len(judges_)
    for k, g in enumerate(judges_):
        rates = [t[g].rate(a, START) for a in policies]
        x = np.arange(len(policies)) + (k - (len(judges_) - 1) / 2) * width
        bx.bar(
            x,
            [r.win_rate for r in rates],
            width,
            label=g,
            yerr=[[r.win_rate - r.ci_low for r in rates], [r.ci_high - r.win_rate for r in rates]],
            capsize=2,
        )
    bx.axhline(0.5, color="gray", lw=0.8)
    bx.set_xticks(range(len(policies)), policies, rotation=30, ha="right", fontsize=8)
    bx.set_ylim(0, 1)
    bx.set_ylabel("win rate vs start (95% CI)")
    bx.set_title("per annotator group: win rate against the starting policy", fontsize=9)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="runs to train (default all)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "nash-lm", help="run directories and results")
    parser.add_argument("--reuse", action="store_true", help="keep runs in --out that finished (summary.json)")
    parser.add_argument("--samples", type=int, default=16, help="tournament responses per prompt and entrant")
    parser.add_argument("--seed", type=int, default=0, help="tournament sampling seed")
    parser.add_argument("--png", type=Path, help="heat map path (default OUT/nash_tournament.png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    meter = CPUMeter()
    meter.start()
    started, cpu0 = time.perf_counter(), meter.seconds()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rm_path, rm_info = population_reward_model()
    rm_info["score_sum_agreement_majority"] = score_sum_agreement()
    rm_manifest = out / "rm-population.yaml"
    rm_manifest.write_text(
        "# GRPO's judge: the reward model fitted to the population's drawn labels (bench/nash_lm.py)\n"
        f"judges:\n  - {{name: bt-rm, kind: reward_model, path: {json.dumps(str(rm_path))}}}\n"
        "eval:\n  name: ground-truth\n  kind: rule\n  function: rollout.tasks.wordlist:ground_truth\n  temperature: 0.0\n"
    )
    names = args.only or list(VARIANTS)
    runs = train(names, args.steps, out, rm_manifest, args.reuse, meter)
    from driver.builtin import ensure_builtin_policy

    entrants = {START: ensure_builtin_policy(), **{name: out / name / "final" for name in names}}
    t0 = time.perf_counter()
    played = tournament(entrants, args.samples, max_tokens=24, seed=args.seed)
    meta = {
        "steps": args.steps,
        "samples": args.samples,
        "prompts": len(played["prompts"]),
        "seed": args.seed,
        "tournament_seconds": round(time.perf_counter() - t0, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(meter.seconds() - cpu0, 1),
    }
    text, data = summarise(played, runs, rm_info, meta)
    png = args.png or out / "nash_tournament.png"
    plot(played["results"], png)
    (out / "nash_lm.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "nash_lm.md").write_text(text)
    sys.stdout.write(text)
    sys.stderr.write(
        f"wall {meta['wall_seconds']:.0f} s, CPU {meta['cpu_seconds']:.0f} s (this process and its descendants); heat map {png}\n"
    )


if __name__ == "__main__":
    main()
