"""SIGTERM and SIGINT: the first asks the loop to stop at the next step boundary, the second aborts.

The loop reads `requested` between steps: the step in progress finishes (its records written),
a checkpoint is written at the boundary, and the driver exits with EXIT_STOPPED and one line
(driver/cli.py). A second signal raises `Aborted` where the driver is, at once: the run ends
without a new checkpoint and the driver exits with 128 + the signal's number, as a shell reports
a process killed by it.

Ray's `ray.init` installs its own SIGTERM handler (exit at once), so `install` is called again
once Ray is connected. Ray's own processes block SIGINT, so a Ctrl-C in the terminal reaches the
driver alone; a SIGTERM must be sent to the driver's pid (not to the whole process group, which
would also stop a local Ray cluster the driver started).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

logger = logging.getLogger("driver")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on request at a checkpoint; run the same command again to continue


class Aborted(BaseException):
    """A second stop signal: give up the step in progress (a BaseException, so nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def install(self) -> None:
        """Take SIGTERM and SIGINT (again, after Ray replaced SIGTERM's handler)."""
        for signum in SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise Aborted(signum)
        self.received = signum
        logger.warning(
            "%s received: stopping after the current step with a checkpoint (send it again to abort at once)",
            signal.Signals(signum).name,
        )
