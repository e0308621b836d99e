"""Command line of the driver: parse, validate everything, then run.

    python -m driver --algo mnpo [--config FILE] [--task NAME | --prompts FILE.jsonl] [--judges MANIFEST]
                     [--model PATH] [--steps N] [--address ADDR] [--output DIR] [--seed N] [--set KEY=VALUE ...]
                     [--resume-mode never|auto]
    python -m driver --resume OUTPUT_DIR [--steps N] [--address ADDR]
    python -m driver --resume STORAGE_URI [--output DIR] [--steps N] [--address ADDR]   (config `storage`)

Every input is checked before Ray or any actor starts: an unknown algorithm, a bad config or
manifest, a judge function that does not import, or a missing model path ends the program with
one line on stderr (`driver: error: ...`) and exit status 2. So does a launch on a run directory
that another driver holds (driver/lock.py) or that it cannot safely continue (driver/resume.py).

Exit status: 0 the run finished (or had finished already: nothing to do); 2 bad input or a refused
launch; EXIT_STOPPED (75) stopped by SIGTERM / SIGINT at a step boundary with a checkpoint (run the
same command, or --resume, to continue); 74 the disk filled up writing a checkpoint; 70 the run
failed in a way it reports in one line (an actor that did not answer within its
`reliability.*_timeout_s`, actor deaths beyond `reliability.max_restarts`, a judge over its
`max_skipped_fraction`), with the checkpoint to continue from; 128 + N a second signal N aborted
the run at once; 1 anything else (with its traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deploy.loading import ConfigError, build_run_config, load_manifest
from driver import checkpoints
from driver.builtin import resolve_model_path
from driver.checkpoints import DiskFull
from driver.lock import LockHeld, RunLock
from driver.plan import RunPlan, check_context, default_judges, resolve_plan
from driver.resume import Decision, Mode, check_reference, decide
from driver.signals import EXIT_STOPPED, Aborted
from driver.tracking import WandbSettings, require_wandb
from learner.storage import check_writable
from protocols import RunConfig

EXIT_DISK_FULL = 74  # EX_IOERR
EXIT_FAILED = 70  # EX_SOFTWARE: a timeout, restarts used up, or a judge over its cap (one line)


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    parser = argparse.ArgumentParser(
        prog="python -m driver",
        description="Online RLHF: sample with vLLM, judge, learn with DeepSpeed, sync weights, repeat.",
        epilog="Config precedence: --config YAML < --set KEY=VALUE < explicit flags. See docs/config.md for every field.",
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
        "--resume",
        metavar="OUTPUT_DIR|STORAGE_URI",
        help="continue a run from its last checkpoint, with its saved config (only --steps and --address may change); "
        "a URI is a run's `storage` (e.g. from another machine): its records are fetched into --output "
        "(default runs/<its last name>) and its checkpoints read where they are",
    )
    parser.add_argument(
        "--resume-mode",
        choices=("never", "auto"),
        default="never",
        help="what a run directory (--output) that already holds a run means: 'never' (default) refuses it; "
        "'auto' continues it from its checkpoint (or says it is finished), so that relaunching the same "
        "command after a crash or a stop continues the run",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set learner.lr=1e-5 --set rollout.samples_per_prompt=8",
    )
    return parser


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, RunConfig]:
    args = build_parser().parse_args(argv)
    if args.resume:
        from_storage = "://" in args.resume
        flags = ("algo", "config", "judges", "model", "seed", "task", "prompts") + (() if from_storage else ("output",))
        changed = [flag for flag in flags if getattr(args, flag)]
        if changed or args.set:
            raise ConfigError(
                f"--resume uses the run's saved config; only --steps and --address may change (got "
                f"{', '.join('--' + f for f in changed + (['set'] if args.set else []))})"
            )
        if args.resume_mode != "never":
            raise ConfigError("--resume-mode is for a run started by its own flags; --resume always continues")
        if from_storage:  # a run kept in storage, continued from another machine: its records come here first
            args.resume = str(fetch_run(args.resume, args.output))
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():  # (written by every launch, atomically; else the newest checkpoint's)
            found = checkpoints.complete_checkpoints(Path(args.resume))
            if not found:
                raise ConfigError(f"--resume {args.resume!r}: no config.yaml there (not a run directory)")
            saved = found[-1] / "config.yaml"
        overrides = {"steps": args.steps, "address": args.address, "output": args.resume}
        return args, build_run_config(str(saved), overrides, [])
    if args.prompts and args.task not in (None, "jsonl"):
        raise ConfigError(f"--prompts is the file of the 'jsonl' task; it cannot be used with --task {args.task}")
    overrides = {
        "task.name": "jsonl" if args.prompts else args.task,
        "task.path": args.prompts,
        "algo": args.algo,
        "judges": args.judges,
        "model.path": args.model,
        "steps": args.steps,
        "seed": args.seed,
        "address": args.address,
        "output": args.output,
    }
    return args, build_run_config(args.config, overrides, args.set)


def fetch_run(uri: str, output: str | None) -> Path:
    """The records of the run kept at `uri` (config `storage`) in a new local run directory
    (`output`, default runs/<the URI's last name>); its checkpoints stay in the storage."""
    from driver.storage import fetch_records  # (imports Ray)

    check_writable(uri)  # a resumed run writes there too; an unreachable one fails here in one line
    local = Path(output) if output else Path("runs") / uri.rstrip("/").rsplit("/", 1)[-1]
    if local.exists() and any(local.iterdir()):
        raise ConfigError(
            f"--resume {uri}: the local run directory {local} is not empty; continue it with `--resume {local}`, "
            "or choose another with --output"
        )
    count = fetch_records(uri, local)
    logging.getLogger("driver").info("fetched %d files of the run at %s into %s", count, uri, local)
    return local


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
    lock = None
    try:
        args, cfg = parse_config(argv)
        if args.list_algos:
            sys.stdout.write(list_algos() + "\n")
            return
        if args.list_tasks:
            sys.stdout.write(list_tasks() + "\n")
            return
        mode: Mode = "resume" if args.resume else args.resume_mode
        cfg = default_judges(cfg)
        manifest_path = locate(cfg.judges) if cfg.judges else None
        manifest = load_manifest(manifest_path) if manifest_path else None
        plan: RunPlan = resolve_plan(cfg, manifest, resume=mode != "never", manifest_path=manifest_path)
        if cfg.tracking.wandb_project:
            require_wandb(WandbSettings(project=cfg.tracking.wandb_project))
        # Builds or converts a built-in model on first use; a prompt that cannot fit fails here, in one line.
        model_path = resolve_model_path(cfg.model.path)
        check_context(cfg, plan.task, model_path)
        if cfg.storage is not None:
            check_writable(cfg.storage)
        lock = RunLock(plan.output)  # held until the driver exits: one driver per run directory
        decision = launch_decision(plan, mode, model_path)
    except (ConfigError, FileNotFoundError, ValueError, LockHeld) as err:
        release(lock)
        sys.stderr.write(f"driver: error: {err}\n")
        raise SystemExit(2) from None
    except BaseException as err:
        release(lock)
        if not isinstance(err, KeyboardInterrupt):
            raise
        sys.stderr.write("driver: interrupted before the run started; nothing was changed\n")
        raise SystemExit(130) from None
    assert lock is not None
    with lock:
        if decision.action == "finished":
            logging.getLogger("driver").info(decision.message)
            return
        execute(plan, decision)


def release(lock: RunLock | None) -> None:
    if lock is not None:
        lock.release()


def launch_decision(plan: RunPlan, mode: Mode, model_path: str) -> Decision:
    """Under the run directory's lock: start, continue (from which checkpoint), or finished already."""
    decision = decide(plan.output, plan.cfg, mode)
    if decision.checkpoint is not None:
        check_reference(decision.checkpoint, checkpoints.reference_identity(model_path), model_path)
    return decision


def resume_hint(output: Path, storage: str | None = None) -> str:
    """How to continue a run that failed: from its newest checkpoint, or from the start."""
    found = checkpoints.complete_checkpoints(checkpoints.run_location(output, storage))
    if found:
        return f"its newest checkpoint is {found[-1]}: continue with `python -m driver --resume {output}`"
    return "it wrote no checkpoint: run the command again to start over"


def execute(plan: RunPlan, decision: Decision) -> None:
    """Run, and turn the ways a run ends into one line and an exit status (see the module docstring)."""
    from driver.cluster import StageTimeout  # (these import Ray: only once the inputs are known to be good)
    from driver.faults import RunFailed
    from driver.judge_failures import JudgeFailureError
    from driver.run import run

    try:
        summary = run(plan, resume=decision.checkpoint)
    except KeyboardInterrupt:  # (before the run took SIGINT over)
        sys.stderr.write("driver: interrupted while starting; nothing was trained\n")
        raise SystemExit(130) from None
    except DiskFull as err:
        sys.stderr.write(f"driver: error: {err}\n")
        raise SystemExit(EXIT_DISK_FULL) from None
    except (StageTimeout, RunFailed, JudgeFailureError) as err:
        logging.getLogger("driver").debug("the run failed", exc_info=True)
        sys.stderr.write(f"driver: error: {err}; {resume_hint(plan.output, plan.cfg.storage)}\n")
        raise SystemExit(EXIT_FAILED) from None
    except Aborted as err:
        sys.stderr.write(
            f"driver: aborted by a second {err}: the step in progress is lost; the run continues from "
            f"its last checkpoint (`python -m driver --resume {plan.output}`)\n"
        )
        raise SystemExit(128 + err.signum) from None
    if summary.stopped:
        sys.stderr.write(
            f"driver: stopped by {summary.stopped} after step {summary.steps} of {plan.cfg.steps}; "
            f"checkpoint {summary.checkpoint}; continue with `python -m driver --resume {plan.output}` "
            f"(exit status {EXIT_STOPPED})\n"
        )
        raise SystemExit(EXIT_STOPPED)
    logging.getLogger("driver").info(
        "done: %d steps in %.0fs; metrics, final policy and summary in %s",
        summary.steps,
        summary.seconds,
        Path(plan.output).resolve(),
    )
