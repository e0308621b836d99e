"""Plots and a Markdown summary of a run, drawn from OUTPUT/metrics.jsonl alone.

    python -m driver.report OUTPUT_DIR      # -> OUTPUT_DIR/plots/*.png, OUTPUT_DIR/summary.md

Nothing but metrics.jsonl is read (through `driver.tracking.read_metrics`, so a crashed or resumed
run is fine), hence a report can be redrawn at any time, also while the run is going. A plot whose
keys never appear is skipped with a log line. Figures are drawn on matplotlib's Agg canvas through
the object API (`Figure`), never pyplot: no display, no global figure state, nothing to close.
Every panel PNG is PANEL_SIZE_PX; overview.png puts the drawn panels on a grid of OVERVIEW_COLUMNS.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from driver.tracking import METRICS_FILE, read_metrics

logger = logging.getLogger("driver.report")  # not __name__: that is "__main__" under -m

Records = list[dict[str, Any]]

DPI = 100
PANEL_SIZE_PX = (640, 400)  # width, height of one panel's PNG
OVERVIEW_COLUMNS = 2
PLOTS_DIR = "plots"
SUMMARY_FILE = "summary.md"


def series(records: Records, *keys: str) -> tuple[list[int], list[list[float]]]:
    """Steps and, per key, the values of the records that carry a finite number under every key."""
    rows = [r for r in records if all(_finite(r.get(k)) for k in keys)]
    return [r["step"] for r in rows], [[float(r[k]) for r in rows] for k in keys]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _line(ax: Axes, records: Records, key: str, label: str, **style: Any) -> list:
    steps, (values,) = series(records, key)
    if not steps:
        return []
    return ax.plot(steps, values, label=label, marker="o" if len(steps) <= 20 else None, markersize=3, **style)


# --------------------------------------------------------------------------- panels


def draw_reward(ax: Axes, train: Records, evals: Records) -> None:
    _line(ax, train, "rollout/reward_mean", "reward mean")
    steps, (mean, std) = series(train, "rollout/reward_mean", "rollout/reward_std")
    if steps:
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.25, label="± std")
    ax.set_ylabel("combined judge reward")


def draw_eval_win_rate(ax: Axes, train: Records, evals: Records) -> None:
    steps, (rate, low, high) = series(evals, "eval/win_rate", "eval/win_rate_ci_low", "eval/win_rate_ci_high")
    if steps:  # error bars are distances from the point; clip so a sloppy CI cannot go negative
        yerr = [[max(0.0, r - lo) for r, lo in zip(rate, low)], [max(0.0, hi - r) for r, hi in zip(rate, high)]]
        ax.errorbar(steps, rate, yerr=yerr, fmt="o-", capsize=4, label="win rate vs start (95% CI)")
    else:
        _line(ax, evals, "eval/win_rate", "win rate vs start")
    _line(ax, evals, "eval/pool_worst_win_rate", "pool worst-case win rate", linestyle=":")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5 (no change)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("win rate")


def draw_kl(ax: Axes, train: Records, evals: Records) -> None:
    _line(ax, train, "learner/kl_to_reference", "training batches")
    steps, (kl,) = series(evals, "eval/kl_to_reference")
    if steps:
        ax.plot(steps, kl, "s", label="evaluation")
    ax.set_ylabel("KL(policy || reference)")


def draw_loss(ax: Axes, train: Records, evals: Records) -> None:
    _line(ax, train, "learner/loss", "loss")
    ax.set_ylabel("loss")


def draw_throughput(ax: Axes, train: Records, evals: Records) -> None:
    handles = _line(ax, train, "rollout/tokens_per_s", "response tokens / s")
    ax.set_ylabel("tokens / s")
    top = ax
    if series(train, "time/step_seconds")[0]:
        top = ax.twinx()
        handles += _line(top, train, "time/step_seconds", "seconds / step", color="tab:orange")
        top.set_ylabel("seconds / step")
    top.legend(handles=handles, loc="best", fontsize="small")  # on the axes drawn last, so above both lines


@dataclass(frozen=True)
class Panel:
    filename: str
    title: str
    keys: tuple[str, ...]  # drawn when any of these appears; `eval/` keys are looked up in eval records
    draw: Callable[[Axes, Records, Records], None]


PANELS = (
    Panel("reward.png", "Rollout reward", ("rollout/reward_mean",), draw_reward),
    Panel(
        "eval_win_rate.png",
        "Evaluation: win rate vs the starting policy",
        ("eval/win_rate", "eval/pool_worst_win_rate"),
        draw_eval_win_rate,
    ),
    Panel("kl.png", "KL to the reference policy", ("learner/kl_to_reference", "eval/kl_to_reference"), draw_kl),
    Panel("loss.png", "Learner loss", ("learner/loss",), draw_loss),
    Panel("throughput.png", "Throughput", ("rollout/tokens_per_s", "time/step_seconds"), draw_throughput),
)


def _has_data(panel: Panel, train: Records, evals: Records) -> bool:
    return any(series(evals if key.startswith("eval/") else train, key)[0] for key in panel.keys)


def _render(panel: Panel, ax: Axes, train: Records, evals: Records) -> None:
    panel.draw(ax, train, evals)
    ax.set_title(panel.title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if panel.draw is not draw_throughput:  # it builds one legend from both of its y-axes
        ax.legend(loc="best", fontsize="small")


def _figure(columns: int, rows: int) -> Figure:
    width, height = PANEL_SIZE_PX
    fig = Figure(figsize=(columns * width / DPI, rows * height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def make_plots(output_dir: Path) -> list[Path]:
    """Draw the panels of OUTPUT/metrics.jsonl into OUTPUT/plots/; returns the PNGs written.

    One PNG per panel with data (PANEL_SIZE_PX each), then overview.png: the same panels on a grid
    of OVERVIEW_COLUMNS columns and ceil(panels / OVERVIEW_COLUMNS) rows of PANEL_SIZE_PX cells.
    Panels without data are skipped (logged); with no panel at all, no overview is written either.
    """
    output_dir = Path(output_dir)
    metrics = output_dir / METRICS_FILE
    train, evals = read_metrics(metrics)
    plots = output_dir / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    drawn, written = [], []
    for panel in PANELS:
        if not _has_data(panel, train, evals):
            logger.info("skipping %s: no %s in %s", panel.filename, " or ".join(panel.keys), metrics)
            continue
        fig = _figure(1, 1)
        _render(panel, fig.add_subplot(), train, evals)
        fig.savefig(plots / panel.filename, dpi=DPI)
        drawn.append(panel)
        written.append(plots / panel.filename)
    if drawn:
        rows = math.ceil(len(drawn) / OVERVIEW_COLUMNS)
        fig = _figure(OVERVIEW_COLUMNS, rows)
        for i, panel in enumerate(drawn):
            _render(panel, fig.add_subplot(rows, OVERVIEW_COLUMNS, i + 1), train, evals)
        fig.savefig(plots / "overview.png", dpi=DPI)
        written.append(plots / "overview.png")
    return written


# --------------------------------------------------------------------------- summary.md


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _num(record: dict[str, Any], key: str, fmt: str = ".3f") -> str:
    return format(record[key], fmt) if _finite(record.get(key)) else "–"


def _final_eval_line(final: dict[str, Any]) -> str:
    line = f"- final evaluation (step {final['step']}): win rate vs the starting policy {_num(final, 'eval/win_rate')}"
    if _finite(final.get("eval/win_rate_ci_low")) and _finite(final.get("eval/win_rate_ci_high")):
        low, high = final["eval/win_rate_ci_low"], final["eval/win_rate_ci_high"]
        verdict = "improved" if low > 0.5 else "got worse" if high < 0.5 else "did not measurably change"
        line += f" [95% CI {low:.3f}, {high:.3f}] -> the policy {verdict}"
    line += f"; mean reward {_num(final, 'eval/start_mean_reward')} -> {_num(final, 'eval/mean_reward')}"
    line += f"; response tokens {_num(final, 'eval/response_tokens', '.1f')}"
    if _finite(final.get("eval/pool_worst_win_rate")):
        line += f"; pool worst-case win rate {_num(final, 'eval/pool_worst_win_rate')}"
    return line


EVAL_COLUMNS = (  # (header, key, format); optional columns appear when any eval record has the key
    ("win rate", "eval/win_rate", ".3f"),
    ("95% CI low", "eval/win_rate_ci_low", ".3f"),
    ("95% CI high", "eval/win_rate_ci_high", ".3f"),
    ("mean reward", "eval/mean_reward", ".3f"),
    ("start mean reward", "eval/start_mean_reward", ".3f"),
    ("response tokens", "eval/response_tokens", ".1f"),
    ("KL to reference", "eval/kl_to_reference", ".3f"),
    ("pool worst win rate", "eval/pool_worst_win_rate", ".3f"),
)


def write_summary(output_dir: Path) -> Path:
    """Write OUTPUT/summary.md from OUTPUT/metrics.jsonl alone; returns its path.

    Lists the training steps, the wall time (the "time" of the record with the highest step), the
    last and best `rollout/reward_mean`, the final (highest-step) evaluation with its verdict, a
    table of every evaluation record and links to the plots that exist.
    """
    output_dir = Path(output_dir)
    train, evals = read_metrics(output_dir / METRICS_FILE)
    lines = ["# Run summary", "", f"Drawn from `{METRICS_FILE}` by `python -m driver.report {output_dir}`.", ""]
    if train:
        lines.append(f"- training steps: {len(train)} (steps {train[0]['step']}–{train[-1]['step']})")
    else:
        lines.append("- training steps: none recorded")
    timed = [r for r in sorted(train + evals, key=lambda r: r["step"]) if _finite(r.get("time"))]
    if timed:
        lines.append(f"- wall time: {_duration(timed[-1]['time'])} (at step {timed[-1]['step']})")
    steps, (reward,) = series(train, "rollout/reward_mean")
    if steps:
        best = max(range(len(reward)), key=reward.__getitem__)
        lines.append(
            f"- reward (rollout/reward_mean): last {reward[-1]:.3f} at step {steps[-1]}, "
            f"best {reward[best]:.3f} at step {steps[best]}"
        )
    lines.append(_final_eval_line(evals[-1]) if evals else "- final evaluation: none recorded")
    if evals:
        columns = [c for c in EVAL_COLUMNS if any(c[1] in r for r in evals)]
        lines += [
            "",
            "## Evaluations",
            "",
            "| step | " + " | ".join(h for h, _, _ in columns) + " |",
            "|---:|" + "---:|" * len(columns),
        ]
        lines += [f"| {r['step']} | " + " | ".join(_num(r, key, fmt) for _, key, fmt in columns) + " |" for r in evals]
    plots = [p.filename for p in PANELS if (output_dir / PLOTS_DIR / p.filename).exists()]
    if plots:
        lines += ["", "## Plots", "", ", ".join(f"[{Path(p).stem}]({PLOTS_DIR}/{p})" for p in plots)]
    if (output_dir / PLOTS_DIR / "overview.png").exists():
        lines += ["", f"![overview]({PLOTS_DIR}/overview.png)"]
    path = output_dir / SUMMARY_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: regenerate plots and summary.md; a missing directory or metrics file exits with 2."""
    parser = argparse.ArgumentParser(prog="python -m driver.report", description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, help="a run's output directory (holds metrics.jsonl)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = args.output_dir / METRICS_FILE
    if not args.output_dir.is_dir():
        sys.stderr.write(f"report: error: output directory {args.output_dir} does not exist\n")
        raise SystemExit(2)
    if not metrics.is_file():
        sys.stderr.write(f"report: error: {metrics} does not exist (is {args.output_dir} a run's output directory?)\n")
        raise SystemExit(2)
    for path in [*make_plots(args.output_dir), write_summary(args.output_dir)]:
        logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
