"""Command line of the driver: parse, validate everything, then run.

    python -m driver --algo mnpo [--config FILE] [--task NAME | --prompts FILE.jsonl] [--judges MANIFEST]
                     [--model PATH] [--steps N] [--address ADDR] [--output DIR] [--seed N] [--set KEY=VALUE ...]

Every input is checked before Ray or any actor starts: an unknown algorithm, a bad config or
manifest, a judge function that does not import, or a missing model path ends the program with
one line on stderr (`driver: error: ...`) and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deploy.loading import ConfigError, build_run_config, load_manifest
from driver.builtin import resolve_model_path
from driver.plan import RunPlan, check_context, default_judges, resolve_plan
from driver.tracking import WandbSettings, require_wandb
from protocols import RunConfig


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    parser = argparse.ArgumentParser(
        prog="python -m driver",
        description="Online RLHF: sample with vLLM, judge, learn with DeepSpeed, sync weights, repeat.",
        epilog="Config precedence: --config YAML < --set KEY=VALUE < explicit flags. "
        "See docs/config.md for every field.",
    )
    parser.add_argument("--algo", help=f"algorithm (default {defaults.algo}; see --list-algos)")
    parser.add_argument("--list-algos", action="store_true", help="print the algorithms and exit")
    parser.add_argument("--task", help="task: wordlist (default), instruct, arithmetic, jsonl (see --list-tasks)")
    parser.add_argument("--prompts", metavar="JSONL", help="your own prompts file (sets --task jsonl)")
    parser.add_argument("--list-tasks", action="store_true", help="print the tasks and exit")
    parser.add_argument("--config", help="YAML run config (deploy/configs/*.yaml)")
    parser.add_argument("--judges", help="judge manifest YAML (default: the task's ground truth)")
    parser.add_argument("--model", help="local HF checkpoint dir or hub id (default: the built-in tiny model)")
    parser.add_argument("--steps", type=int, help=f"training steps (default {defaults.steps})")
    parser.add_argument("--seed", type=int, help=f"seed (default {defaults.seed})")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local one)")
    parser.add_argument("--output", help="run directory (default runs/<algo>-<time>)")
    parser.add_argument(
        "--resume", metavar="OUTPUT_DIR",
        help="continue a run from its last checkpoint, with its saved config (only --steps and --address may change)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override any config field, e.g. --set learner.lr=1e-5 --set rollout.samples_per_prompt=8",
    )
    return parser


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, RunConfig]:
    args = build_parser().parse_args(argv)
    if args.resume:
        changed = [flag for flag in ("algo", "config", "judges", "model", "seed", "output", "task", "prompts")
                   if getattr(args, flag)]
        if changed or args.set:
            raise ConfigError(
                f"--resume uses the run's saved config; only --steps and --address may change (got "
                f"{', '.join('--' + f for f in changed + (['set'] if args.set else []))})"
            )
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume!r}: no config.yaml there (not a run directory)")
        overrides = {"steps": args.steps, "address": args.address, "output": args.resume}
        return args, build_run_config(str(saved), overrides, [])
    if args.prompts and args.task not in (None, "jsonl"):
        raise ConfigError(f"--prompts is the file of the 'jsonl' task; it cannot be used with --task {args.task}")
    overrides = {
        "task.name": "jsonl" if args.prompts else args.task, "task.path": args.prompts,
        "algo": args.algo, "judges": args.judges, "model.path": args.model, "steps": args.steps,
        "seed": args.seed, "address": args.address, "output": args.output,
    }
    return args, build_run_config(args.config, overrides, args.set)


def locate(path: str) -> str:
    """A relative path that is not under the working directory is looked up in the project."""
    project = Path(__file__).resolve().parent.parent
    if not Path(path).is_absolute() and not Path(path).exists() and (project / path).exists():
        return str(project / path)
    return path


def list_algos() -> str:
    from learner.algorithms import ALGORITHMS

    return "\n".join(f"{name:10s} {spec.description}" for name, spec in ALGORITHMS.items())


def list_tasks() -> str:
    from protocols import TaskConfig
    from rollout.tasks import TASKS, load_task

    lines = []
    for name in TASKS:
        if name == "jsonl":
            lines.append(f"{name:10s} your own prompts: --prompts FILE.jsonl (docs/tasks.md)")
        else:
            task = load_task(TaskConfig(name=name))
            lines.append(f"{name:10s} {task.description} ({len(task.train)} train / {len(task.heldout)} held-out prompts)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args, cfg = parse_config(argv)
        if args.list_algos:
            sys.stdout.write(list_algos() + "\n")
            return
        if args.list_tasks:
            sys.stdout.write(list_tasks() + "\n")
            return
        cfg = default_judges(cfg)
        manifest_path = locate(cfg.judges) if cfg.judges else None
        manifest = load_manifest(manifest_path) if manifest_path else None
        plan: RunPlan = resolve_plan(cfg, manifest, resume=bool(args.resume), manifest_path=manifest_path)
        if cfg.tracking.wandb_project:
            require_wandb(WandbSettings(project=cfg.tracking.wandb_project))
        # Builds or converts a built-in model on first use; a prompt that cannot fit fails here, in one line.
        check_context(cfg, plan.task, resolve_model_path(cfg.model.path))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        sys.stderr.write(f"driver: error: {err}\n")
        raise SystemExit(2) from None
    from driver.run import run  # imports Ray: only once the inputs are known to be good

    summary = run(plan, resume=bool(args.resume))
    logging.getLogger("driver").info(
        "done: %d steps in %.0fs; metrics, final policy and summary in %s",
        summary.steps, summary.seconds, Path(plan.output).resolve(),
    )
