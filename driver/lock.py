"""One driver per run directory: an exclusive `flock` on OUTPUT/.lock, held for the whole run.

    with RunLock(output):      # or: RunLock(output) raises LockHeld naming the directory and the pid
        ...                    # decide what to do with the directory, then run

The kernel releases the lock when the driver's process ends, however it ends (SIGKILL included),
so a crashed run never leaves a stale lock behind; the pid written into the file is only there
to name the holder in the error. The lock file is opened close-on-exec: Ray's processes, started
by the driver, do not inherit (and so do not keep) the lock. On a network filesystem `flock` is
as good as the filesystem's own locking (NFSv4 and Lustre with `flock` mounts lock across nodes).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class LockHeld(Exception):
    """Another driver holds the run directory."""


class RunLock:
    def __init__(self, output: Path) -> None:
        self.path = Path(output) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeld(
                f"run directory {str(Path(output).resolve())!r} is in use by another driver "
                f"({'pid ' + holder if holder else 'pid unknown'}); wait for it to end or stop it "
                f"(`kill {holder or 'PID'}` stops it at the next step with a checkpoint)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (the file stays; an unlocked file means nobody holds the directory)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else ""
