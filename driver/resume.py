"""What a launch on a run directory that already holds a run does: continue it, say it is finished,
or refuse in one line; never delete a record it cannot redo from a checkpoint.

`decide(output, cfg, mode)` runs under the run directory's lock (driver/lock.py), before Ray starts.
`mode` is "resume" (`--resume DIR`), "auto" (`--resume-mode auto`: the same command relaunched) or
"never" (the default: a fresh run only). The rules, with S the steps asked for, c the step of the
newest usable checkpoint and F the steps of a finished run (summary.json):

- the checkpoint's config is the run's: the requested config (OUTPUT/config.yaml under --resume,
  the command's under auto) may differ from it only in `steps`, `address` and `reliability` (ALLOWED_CHANGES);
  any other difference is refused, naming the fields. `output` is the directory itself.
- finished (F present), S == F: nothing to do (exit 0, nothing written).
- S < c: refused (the run is past step S; its checkpoint and records up to c would be lost).
- finished, S < F: refused (it would cut the run short, deleting steps S..F-1 and the final eval).
- finished, S > F: continued only from a checkpoint at step F or later (a run checkpoints its last
  step when `steps` is a multiple of `checkpoint.every`); from an earlier one the steps c..F-1 and
  the final evaluation would be deleted and redone, so it is refused.
- S == c: only a checkpoint of a run's last step (holding its final evaluation) is finished from
  (a crash while writing final/); otherwise there is nothing to train: refused.
- otherwise continue from c (records of steps >= c, written after the checkpoint, are redone).

The newest usable checkpoint: a `step-NNNNNN` directory whose driver.json and config.yaml read
back and whose learner files are all there (non-empty). An unusable newest checkpoint is skipped
with a warning naming it and the one used instead; none usable is one error naming each and why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from upath import UPath

from driver import checkpoints
from driver.checkpoints import DriverState
from driver.tracking import METRICS_FILE
from learner.algorithms import get_algorithm, resolved
from protocols import RunConfig

logger = logging.getLogger("driver")
Mode = Literal["resume", "auto", "never"]
ALLOWED_CHANGES = ("steps", "address", "reliability")  # may differ from the checkpoint's config on resume
NOT_COMPARED = ("output",)  # the run directory itself (a moved directory resumes)
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"


class ResumeRefused(ValueError):
    """What the launch would do to the run directory is not safe; the message says why, in one line."""


@dataclass(frozen=True)
class Checkpoint:
    path: UPath  # on the driver's disk or in the run's storage (config `storage`)
    state: DriverState
    config: RunConfig  # resolved (its algorithm's section in full), as the run wrote it

    @property
    def step(self) -> int:
        return self.state.next_step


@dataclass(frozen=True)
class Decision:
    action: Literal["start", "continue", "finished"]
    checkpoint: Checkpoint | None = None
    message: str = ""


# ---------------------------------------------------------------------- the decision
def decide(output: Path, cfg: RunConfig, mode: Mode) -> Decision:
    """See the module docstring; raises ResumeRefused."""
    where = checkpoints.run_location(output, cfg.storage)
    local_run = (output / METRICS_FILE).exists() or (output / SUMMARY_FILE).exists()
    holds_run = local_run or bool(checkpoints.step_directories(where))
    if mode == "never":
        if holds_run and not local_run:  # the checkpoints are in the storage
            raise ResumeRefused(
                f"storage {cfg.storage!r} already holds a run's checkpoints; choose another storage, or continue "
                f"that run (`--resume {cfg.storage}`)"
            )
        if holds_run:
            raise ResumeRefused(
                f"output directory {str(output)!r} already holds a run; choose another --output, or continue it "
                f"(`--resume {output}`, or this command with `--resume-mode auto`)"
            )
        return Decision("start")
    if not holds_run:
        if mode == "auto":
            return Decision("start")
        raise ResumeRefused(f"{output} holds no run to resume (no metrics.jsonl, checkpoints or summary.json)")

    asked = "the config in " + str(output / CONFIG_FILE) if mode == "resume" else "this command's config"
    finished = finished_steps(output)
    checkpoint = newest_usable(where)
    steps = cfg.steps
    if checkpoint is None:
        if finished is not None:
            saved = _saved_config(output)
            changes = config_changes(saved, cfg) if saved is not None else []
            if steps == finished and not changes:
                return Decision("finished", message=_finished_message(output, finished))
            raise ResumeRefused(
                f"{output} finished {finished} steps and has no checkpoint to continue from; "
                f"start a new run (e.g. from its policy: --model {output / 'final'})"
            )
        raise ResumeRefused(
            f"{output} has no complete checkpoint to resume from (the run stopped before its first one, "
            f"checkpoint.every={cfg.checkpoint.every}); move it away or choose another --output to start again"
        )
    changes = config_changes(checkpoint.config, cfg)
    if changes:
        raise ResumeRefused(
            f"{asked} differs from the checkpoint's ({checkpoint.path / CONFIG_FILE}) in {_listed(changes)}; a run "
            f"continues with the config it was started with: only {', '.join(ALLOWED_CHANGES)} may change "
            f"(--steps, --address, reliability.*: timeouts and restarts do not change what is computed); to change "
            f"anything else start a new run"
        )
    step = checkpoint.step
    if finished is not None and steps == finished and step <= finished:
        return Decision("finished", message=_finished_message(output, finished))
    if steps < step:
        raise ResumeRefused(
            f"steps={steps} is below step {step} of the last checkpoint ({checkpoint.path}): the run is already past "
            f"step {steps}, and nothing of it is deleted; ask for {finished if finished is not None else step + 1} "
            f"steps or more"
        )
    if finished is not None and steps < finished:
        raise ResumeRefused(
            f"{output} finished {finished} steps; steps={steps} would cut it short, deleting the records of steps "
            f"{steps}..{finished - 1} and its final evaluation; ask for {finished} steps or more"
        )
    if finished is not None and step < finished:
        raise ResumeRefused(
            f"{output} finished {finished} steps but its last checkpoint is at step {step}: extending it to {steps} "
            f"would delete and redo steps {step}..{finished - 1} and its final evaluation. A run can be extended "
            f"when it checkpointed its last step (steps a multiple of checkpoint.every); start a new run from its "
            f"policy instead (--model {output / 'final'})"
        )
    last = checkpoint.state.last_eval
    if steps == step and not (last is not None and last.step == step - 1):
        raise ResumeRefused(
            f"steps={steps} is the step of the last checkpoint ({checkpoint.path}): nothing is left to train; ask for more steps"
        )
    return Decision("continue", checkpoint)


def check_reference(checkpoint: Checkpoint, reference: str, model_path: str) -> None:
    """The starting policy is the one the checkpoint's run was trained from."""
    if checkpoint.state.reference != reference:
        raise ResumeRefused(f"the starting policy at {model_path} is not the one {checkpoint.path} was trained from")


def _finished_message(output: Path, finished: int) -> str:
    return (
        f"{output} already finished its {finished} steps (summary.json): nothing to do; ask for more steps (--steps) to extend it"
    )


def _listed(changes: list[str], most: int = 6) -> str:
    shown = "; ".join(changes[:most])
    return shown + (f"; and {len(changes) - most} more" if len(changes) > most else "")


# ---------------------------------------------------------------------- finished runs
def finished_steps(output: Path) -> int | None:
    """Steps of the finished run (summary.json, written last), or None when it did not finish."""
    path = output / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        steps = json.loads(path.read_text())["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise ValueError(f"'steps' is {steps!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResumeRefused(
            f"{path} is unreadable ({err}): the run may have finished, so nothing is continued; "
            f"inspect it, and remove it only if the run did not finish"
        ) from None
    return steps


# ---------------------------------------------------------------------- the config
def config_changes(saved: RunConfig, requested: RunConfig) -> list[str]:
    """The fields (dotted) whose values differ, beyond ALLOWED_CHANGES and NOT_COMPARED, as
    "learner.lr 0.0002 -> 0.001"; a field or section only one side has reads "dpo (added)" /
    "mnpo (removed)". `algo` comes first."""
    a, b = saved.model_dump(mode="json"), requested.model_dump(mode="json")
    skipped = (*ALLOWED_CHANGES, *NOT_COMPARED)
    return _differences({k: v for k, v in a.items() if k not in skipped}, {k: v for k, v in b.items() if k not in skipped}, "")


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    changes = []
    for key in sorted(set(a) | set(b), key=lambda k: (k != "algo", k)):
        name = prefix + key
        if key not in b:
            changes.append(f"{name} (removed)")
        elif key not in a:
            changes.append(f"{name} (added)")
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            changes += _differences(a[key], b[key], name + ".")
        elif a[key] != b[key]:
            changes.append(f"{name} {a[key]!r} -> {b[key]!r}")
    return changes


def read_config(path: Path | UPath) -> RunConfig:
    """A saved run config, resolved as the run resolved it (raises ValueError, one line)."""
    try:
        data = yaml.safe_load(path.read_text())
        return resolved(RunConfig.model_validate(data))
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as err:
        raise ValueError(f"{path}: {str(err).splitlines()[0]}") from None


def _saved_config(output: Path) -> RunConfig | None:
    try:
        return read_config(output / CONFIG_FILE)
    except ValueError:
        return None


# ---------------------------------------------------------------------- checkpoints
def read_checkpoint(path: UPath) -> Checkpoint:
    """The checkpoint at `path`, or ValueError saying what is missing or unreadable."""
    state_file = path / checkpoints.STATE_FILE
    if not state_file.is_file():
        raise ValueError(f"no {checkpoints.STATE_FILE}")
    try:
        state = DriverState.model_validate_json(state_file.read_bytes())
    except (OSError, ValidationError) as err:
        raise ValueError(f"{checkpoints.STATE_FILE} is unreadable: {str(err).splitlines()[0]}") from None
    if state.next_step != checkpoints.step_of(path):
        raise ValueError(f"{checkpoints.STATE_FILE} is for step {state.next_step}")
    config = read_config(path / CONFIG_FILE)
    spec = get_algorithm(config.algo)
    needed = ["learner"] + (["critic"] if spec.critic_loss is not None else [])
    for engine in needed:
        models = list((path / engine).glob("*model_states.pt"))
        optims = list((path / engine).glob("*optim_states.pt"))
        if not models:
            raise ValueError(f"no DeepSpeed model states under {engine}/")
        if optims and len(optims) < config.learner.num_workers:
            raise ValueError(f"{engine}/ has optimizer states of {len(optims)} of {config.learner.num_workers} ranks")
    if spec.needs_opponents and not (path / "opponents.pt").is_file():
        raise ValueError("no opponents.pt (the opponent pool)")
    checkpoints.load_in_flight(path, state)  # the steps sampled ahead of the learner, when there were any
    empty = sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file() and f.stat().st_size == 0)
    if empty:
        raise ValueError(f"empty file{'s' if len(empty) > 1 else ''} {', '.join(empty[:3])}")
    return Checkpoint(path=path, state=state, config=config)


def newest_usable(run: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint under `run` (the run directory or its storage) that reads back; an
    unusable newer one is skipped with a warning naming both. None when there is no checkpoint
    directory; ResumeRefused when none of them is usable."""
    found = checkpoints.step_directories(run)
    problems: list[str] = []
    for path in reversed(found):
        try:
            checkpoint = read_checkpoint(path)
        except ValueError as err:
            problems.append(f"{path.name}: {err}")
            continue
        if problems:
            logger.warning(
                "checkpoint %s is unusable (%s); resuming from the previous one, %s", found[-1], "; ".join(problems), path
            )
        return checkpoint
    if problems:
        raise ResumeRefused(f"no usable checkpoint in {checkpoints.checkpoint_root(run)}: {'; '.join(problems)}")
    return None
