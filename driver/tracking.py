"""Where the driver's per-step metrics go: OUTPUT/metrics.jsonl, TensorBoard and (optionally) W&B.

The driver builds one record (a flat dict with an integer "step") per training step and one per
evaluation, and hands each to `MetricsWriter.write`. metrics.jsonl is the source of truth:
`driver/report.py` draws its plots from it alone, and `read_metrics` reads it back.

    with MetricsWriter(output_dir) as metrics:          # OUTPUT/metrics.jsonl, OUTPUT/tensorboard/
        metrics.write({"step": 0, "time": 1.2, "learner/loss": 0.85})

    tensorboard --logdir OUTPUT/tensorboard

Crashes and resumes. Every write is flushed, so a killed run keeps every record it wrote, except
perhaps a truncated last line, which readers skip with a warning. On resume from step s, pass
`resume_step=s` (or call `truncate_after(path, s)` before opening the writer): records with
step >= s are dropped from metrics.jsonl and TensorBoard hides the old scalars from step s on.
A reader still de-duplicates: the newest record of a (step, kind) wins, kind being "eval" when a
record has any `eval/` key and "train" otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class WandbSettings:
    """Weights & Biases logging; `None` in place of these settings means W&B is off."""

    project: str  # W&B project the run is logged to
    run_name: str | None = None  # display name of the run; None lets W&B pick one


def require_wandb(settings: WandbSettings) -> ModuleType:
    """The `wandb` module, or a ValueError naming the setting when W&B is enabled but not installed.

    W&B stays an optional extra (not a dependency of the project); call this where the config is
    validated so a run fails before any actor starts.
    """
    try:
        import wandb
    except ImportError as err:
        raise ValueError(
            f"Weights & Biases logging is enabled (wandb project {settings.project!r}) but the `wandb` "
            f"package is not installed: `pip install wandb`, or turn W&B logging off ({err})"
        ) from None
    return wandb


def numeric_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The int/float values of a record except "step" (bools and non-numbers are left out)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class MetricsWriter:
    """Appends records to OUTPUT/metrics.jsonl and mirrors their numbers to TensorBoard and W&B.

    Contract of `write(record)`: `record["step"]` is an int (the TensorBoard/W&B global step);
    the record is appended as one JSON line and every numeric value (see `numeric_scalars`)
    becomes a scalar under its own key; everything is flushed before `write` returns.
    `resume_step=s` first drops records with step >= s from metrics.jsonl (`truncate_after`) and
    tells TensorBoard to discard its older scalars from step s on (SummaryWriter `purge_step`).
    """

    def __init__(
        self,
        output_dir: Path,
        tensorboard: bool = True,
        wandb: WandbSettings | None = None,
        resume_step: int | None = None,
    ) -> None:
        output_dir = Path(output_dir)
        wandb_module = require_wandb(wandb) if wandb is not None else None  # fail before opening anything
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / METRICS_FILE
        if resume_step is not None:
            truncate_after(self.path, resume_step)
        elif _ends_without_newline(self.path):
            truncate_after(self.path, None)  # a crash left half a line: drop it so appends stay lines
        self._file = self.path.open("a")
        self._tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # deferred: torch is slow to import

            self._tensorboard = SummaryWriter(log_dir=str(output_dir / TENSORBOARD_DIR), purge_step=resume_step)
        self._wandb_run = None
        if wandb_module is not None:
            # a new W&B run each time: W&B drops steps lower than ones it has seen, so a resumed run
            # continuing an old W&B run would lose its re-done steps
            self._wandb_run = wandb_module.init(project=wandb.project, name=wandb.run_name, dir=str(output_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"a metrics record needs an integer 'step', got {step!r} in {sorted(record)}")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = numeric_scalars(record)
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, global_step=step)
            self._tensorboard.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(scalars, step=step)

    def close(self) -> None:
        """Flush and close every sink; calling it again does nothing."""
        if not self._file.closed:
            self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def is_eval(record: dict[str, Any]) -> bool:
    """An evaluation record has at least one `eval/` key; any other record is a training record."""
    return any(key.startswith("eval/") for key in record)


def _parse_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of every readable line of a metrics file, in file order.

    A line that is not a JSON object with an integer "step" is skipped with a warning. A crash
    usually leaves it as the last line; a resume by a writer that did not repair the tail glues it
    to the next record, so it can also sit in the middle. Neither stops the reader.
    """
    out = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            where = "last line" if number == len(lines) else "line"
            logger.warning("%s:%d: skipping unreadable %s (truncated by a crash?): %.80r", path, number, where, line)
            continue
        out.append((line, record))
    return out


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, eval records) of a metrics.jsonl, each sorted by step.

    Records are de-duplicated per (step, kind): the one written last wins (a resumed run may
    rewrite steps it already logged before a crash). Unreadable lines are skipped with a warning.
    """
    newest: dict[tuple[int, bool], dict[str, Any]] = {}
    for _, record in _parse_lines(Path(path)):
        newest[(record["step"], is_eval(record))] = record
    train = [r for (_, evaluation), r in sorted(newest.items()) if not evaluation]
    evals = [r for (_, evaluation), r in sorted(newest.items()) if evaluation]
    return train, evals


def truncate_after(path: Path, step: int | None) -> int:
    """Atomically rewrite a metrics file keeping only the records with step < `step`.

    `step=None` keeps every readable record (it only drops unreadable lines). Kept lines are
    copied verbatim. The new content goes to a temporary file in the same directory that then
    replaces the old one (`os.replace`), so a crash leaves either the old or the new file.
    A missing file is left missing. Returns how many lines were removed.
    """
    path = Path(path)
    if not path.exists():
        return 0
    total = sum(1 for line in path.read_text().splitlines() if line.strip())
    kept = [line for line, record in _parse_lines(path) if step is None or record["step"] < step]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.writelines(line + "\n" for line in kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    removed = total - len(kept)
    if removed:
        logger.info("%s: removed %d line(s)%s", path, removed, "" if step is None else f" (kept steps < {step})")
    return removed


def _ends_without_newline(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"
