"""Driver-side checkpoint state and the atomic checkpoint directory layout.

    RUN/checkpoints/step-000050/      RUN: the run directory (OUTPUT), or the config's `storage`
        learner/ ...        DeepSpeed: policy, optimizer, LR scheduler, torch RNG (every rank)
        critic/ ...         DeepSpeed: PPO's value model and its optimizer
        opponents.pt        MNPO's frozen snapshots and their versions
        inflight.json       batches sampled and judged ahead of the learner (rollout.max_staleness > 0)
        driver.json         DriverState below (step counter, data-stream position, eval baselines)
        config.yaml         the resolved run config

On a filesystem a checkpoint is written into `.tmp-step-000050` and renamed when complete, so a
crash mid-write leaves the previous checkpoint intact (and the debris is removed on the next
write). On object storage (an fsspec URI such as s3://, which has no rename) it is written into
`step-000050` directly and is complete once driver.json, written last, is there. Paths are
`upath.UPath`s: pathlib over fsspec, a plain `Path` for local directories. The newest
`keep_last` checkpoints are kept. `writing` wraps the whole write: a full disk (ENOSPC, a quota,
or a torch writer failing with the filesystem full) becomes one `DiskFull` error naming the
directory, the free space and the previous checkpoint, with the temporary directory removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field
from upath import UPath

from protocols import FROZEN, EvalResult, Judgement, RolloutBatch

logger = logging.getLogger("driver")
STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE_FILE = "driver.json"
IN_FLIGHT_FILE = "inflight.json"


class EvalSamples(BaseModel):
    """Eval-judge rewards of one policy version's held-out samples (prompt-major)."""

    model_config = FROZEN
    version: int = Field(ge=0)
    rewards: tuple[float, ...]
    lengths: tuple[int, ...]


class DriverState(BaseModel):
    """Everything beyond the learner's state that a resumed run needs."""

    model_config = FROZEN
    next_step: int = Field(ge=0, description="First step the resumed run executes.")
    prompt_position: int = Field(
        ge=0, description="PromptStream position of the next step to launch (next_step, or the one after the in-flight steps)."
    )
    in_flight: tuple[int, ...] = Field(
        default=(),
        description="Steps sampled and judged ahead of the learner when the checkpoint was written (their batches and "
        "verdicts are in inflight.json): a resumed run trains on them as the uninterrupted run did.",
    )
    policy_version: int = Field(ge=0)
    reference: str = Field(description="Identity of the reference (starting) policy weights.")
    probe: tuple[tuple[int, ...], ...] = Field(description="Token sequences every weight sync is verified on.")
    start: EvalSamples = Field(description="The starting policy's held-out samples (win-rate baseline).")
    pool: tuple[EvalSamples, ...] = Field(default=(), description="Held-out samples of opponent snapshots.")
    last_eval: EvalResult | None = Field(
        default=None, description="The latest evaluation before the checkpoint (at a run's last step: its final one)."
    )


def reference_identity(model_path: str) -> str:
    """sha256 over the checkpoint's weight files (or the hub id when the path is not local)."""
    path = Path(model_path)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    if not files:
        return f"id:{model_path}"
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def checkpoint_root(run: str | os.PathLike) -> UPath:
    """Where the run's checkpoints live: `run`/checkpoints, `run` being its storage URI or directory."""
    return UPath(run) / "checkpoints"


def run_location(output: str | os.PathLike, storage: str | None) -> UPath:
    """Where a run's checkpoints are: its storage (config `storage`) when set, else its directory."""
    return UPath(storage) if storage else UPath(output)


def is_local(path: UPath) -> bool:
    """A path of this machine's filesystem (a plain path or file://): renames there are atomic."""
    return path.protocol in ("", "file", "local")


def remove_tree(path: UPath) -> None:
    """Delete `path` and everything under it; nothing if it is not there."""
    if is_local(path):
        shutil.rmtree(path.path, ignore_errors=True)
    elif path.exists():
        path.fs.rm(path.path, recursive=True)


def begin(run: str | os.PathLike, step: int) -> UPath:
    """A fresh directory for the checkpoint of `step`: `.tmp-step-N` on a local filesystem (renamed
    at commit); on object storage, where there is no atomic rename, `step-N` itself (complete once
    driver.json, written last, is there)."""
    root = checkpoint_root(run)
    directory = root / (f".tmp-step-{step:06d}" if is_local(root) else f"step-{step:06d}")
    remove_tree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def commit(tmp: UPath, state: DriverState, keep_last: int) -> UPath:
    """Write the driver state last (renaming the directory into place on a local filesystem), delete
    older checkpoints and debris."""
    root, final = tmp.parent, tmp.parent / f"step-{state.next_step:06d}"
    if is_local(tmp):
        (tmp / STATE_FILE).write_text(state.model_dump_json(indent=1))
        remove_tree(final)  # a resumed run re-reaching a step it had checkpointed before the crash
        os.rename(tmp.path, final.path)
        debris = [p for p in root.glob(".tmp-step-*")]
    else:
        (final / STATE_FILE).write_text(state.model_dump_json(indent=1))
        debris = [p for p in step_directories(root.parent) if not (p / STATE_FILE).is_file()]
    for old in complete_checkpoints(root.parent)[:-keep_last]:
        remove_tree(old)
    for path in debris:
        remove_tree(path)
    logger.info("checkpoint %s written", final)
    return final


def step_of(checkpoint: UPath) -> int:
    match = STEP_DIR.match(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint} is not a checkpoint directory (step-NNNNNN)")
    return int(match.group(1))


def step_directories(run: str | os.PathLike) -> list[UPath]:
    """Every `step-NNNNNN` directory, complete or not, oldest first."""
    root = checkpoint_root(run)
    if not is_local(root):  # other processes (the learner ranks) write there: no stale listing
        root.fs.invalidate_cache()
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()] if root.is_dir() else []
    return sorted(found, key=step_of)


def complete_checkpoints(run: str | os.PathLike) -> list[UPath]:
    """Checkpoint directories holding a driver state, oldest first."""
    return [p for p in step_directories(run) if (p / STATE_FILE).is_file()]


def load_state(checkpoint: UPath) -> DriverState:
    return DriverState.model_validate_json((checkpoint / STATE_FILE).read_text())


class InFlightStep(BaseModel):
    """A step sampled and judged ahead of the learner: per rollout worker, its batch and every judge's verdicts."""

    model_config = FROZEN
    step: int = Field(ge=0)
    batches: tuple[RolloutBatch, ...]
    judgements: tuple[tuple[Judgement, ...], ...]


def save_in_flight(tmp: UPath, steps: list[InFlightStep]) -> None:
    (tmp / IN_FLIGHT_FILE).write_text(json.dumps([s.model_dump(mode="json") for s in steps]))


def load_in_flight(checkpoint: UPath, state: DriverState) -> list[InFlightStep]:
    """The checkpoint's in-flight steps (none when the run was strictly on-policy); ValueError if they
    are not the ones driver.json names."""
    if not state.in_flight:
        return []
    path = checkpoint / IN_FLIGHT_FILE
    try:
        steps = [InFlightStep.model_validate(s) for s in json.loads(path.read_text())]
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: {str(err).splitlines()[0]}") from None
    if tuple(s.step for s in steps) != state.in_flight:
        raise ValueError(f"{path}: holds steps {[s.step for s in steps]}, driver.json names {list(state.in_flight)}")
    return steps


# ---------------------------------------------------------------------- a full disk
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
NEARLY_FULL_BYTES = 16 << 20  # a write that fails with less than this free is taken for a full disk


class DiskFull(Exception):
    """The disk filled up while the driver (or a learner, for it) wrote into the run directory."""


def is_disk_full(err: BaseException, free_bytes: int | None) -> bool:
    """ENOSPC / EDQUOT anywhere in the error's chain (Ray's `cause` included), the same in its text
    (torch's writer reports only "file write failed"), or any failed write with the disk (nearly) full."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(current) for text in DISK_FULL_TEXT):
            return True
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return free_bytes is not None and free_bytes < NEARLY_FULL_BYTES


def free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


@contextlib.contextmanager
def writing(run: str | os.PathLike, step: int) -> Iterator[UPath]:
    """The temporary directory of `step`'s checkpoint; a full disk while the body writes it (and
    commits it) raises `DiskFull` after the temporary directory is removed. Other errors pass
    unchanged (the temporary directory is left for the next write to clear)."""
    tmp = begin(run, step)
    try:
        yield tmp
    except Exception as err:
        free = free_bytes(Path(tmp.path)) if is_local(tmp) else None  # measured before the partial checkpoint is removed
        if not is_disk_full(err, free):
            raise
        remove_tree(tmp)
        previous = complete_checkpoints(run)
        kept = (
            (f"the previous checkpoint {previous[-1]} is intact: free space, then resume with `python -m driver --resume {run}`")
            if previous
            else "there is no earlier checkpoint to resume from"
        )
        raise DiskFull(
            f"disk full: no space left on the device writing checkpoint step-{step:06d} under "
            f"{shown(checkpoint_root(run))} ({_mib(free)} free there when the write failed); {kept}"
        ) from err


def shown(path: UPath) -> str:
    """`path` for a message: absolute when local, the URI otherwise."""
    return str(Path(path.path).resolve()) if is_local(path) else str(path)


def _mib(count: int | None) -> str:
    return "unknown space" if count is None else f"{count / (1 << 20):.1f} MiB"
