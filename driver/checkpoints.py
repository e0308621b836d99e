"""Driver-side checkpoint state and the atomic checkpoint directory layout.

    OUTPUT/checkpoints/step-000050/
        learner/ ...        DeepSpeed: policy, optimizer, LR scheduler, torch RNG (every rank)
        critic/ ...         DeepSpeed: PPO's value model and its optimizer
        opponents.pt        MNPO's frozen snapshots and their versions
        driver.json         DriverState below (step counter, data-stream position, eval baselines)
        config.yaml         the resolved run config

A checkpoint is written into `.tmp-step-000050` and renamed when complete, so a crash mid-write
leaves the previous checkpoint intact (and the debris is removed on the next write). The newest
`keep_last` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from protocols import FROZEN

logger = logging.getLogger("driver")
STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE_FILE = "driver.json"


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
    prompt_position: int = Field(ge=0, description="PromptStream position of step next_step's prompts.")
    policy_version: int = Field(ge=0)
    reference: str = Field(description="Identity of the reference (starting) policy weights.")
    probe: tuple[tuple[int, ...], ...] = Field(description="Token sequences every weight sync is verified on.")
    start: EvalSamples = Field(description="The starting policy's held-out samples (win-rate baseline).")
    pool: tuple[EvalSamples, ...] = Field(default=(), description="Held-out samples of opponent snapshots.")


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


def checkpoint_root(output: Path) -> Path:
    return output / "checkpoints"


def begin(output: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of `step`."""
    tmp = checkpoint_root(output) / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: DriverState, keep_last: int) -> Path:
    """Write the driver state last, rename into place, delete older checkpoints and debris."""
    (tmp / STATE_FILE).write_text(state.model_dump_json(indent=1))
    final = tmp.parent / f"step-{state.next_step:06d}"
    if final.exists():  # a resumed run re-reaching a step it had checkpointed before the crash
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in complete_checkpoints(tmp.parent.parent)[:-keep_last]:
        shutil.rmtree(old)
    for debris in tmp.parent.glob(".tmp-step-*"):
        shutil.rmtree(debris, ignore_errors=True)
    logger.info("checkpoint %s written", final)
    return final


def complete_checkpoints(output: Path) -> list[Path]:
    """Checkpoint directories holding a driver state, oldest first."""
    root = checkpoint_root(output)
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def load_state(checkpoint: Path) -> DriverState:
    return DriverState.model_validate_json((checkpoint / STATE_FILE).read_text())
