"""Clean up after a driver that was killed: every process it started goes with it.

A local Ray cluster the driver starts is its process tree (GCS, raylet, agents, the actors'
workers). `ray.shutdown()` stops it when the driver exits normally; a SIGKILLed driver runs no
code, and some of Ray's processes (the dashboard and runtime-env agents) then live on for a
minute or more, holding their ports.

`Watchdog.start()` spawns `python -m driver.watchdog <driver pid>` in its own session (so that a
signal to the driver's process group does not take it along). It notes the driver's descendants
every `POLL_S` seconds, and waits on a pipe from the driver: end of file without the driver's
"exit" line means the driver is gone, and the watchdog SIGKILLs every process it noted that is
still the same process (same pid and start time), then exits. A driver that ends normally writes
"exit" (`Watchdog.stop()`) after its own shutdown, and the watchdog leaves everything alone.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time

import psutil

logger = logging.getLogger("driver")
POLL_S = 0.5
EXIT_LINE = b"exit\n"


class Watchdog:
    def __init__(self, process: subprocess.Popen):
        self.process = process

    @classmethod
    def start(cls) -> Watchdog:
        process = subprocess.Popen(
            [sys.executable, "-m", "driver.watchdog", str(os.getpid())],
            stdin=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        return cls(process)

    def stop(self) -> None:
        """The driver is ending normally (its cluster shut down): the watchdog leaves without killing."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(EXIT_LINE)
            self.process.stdin.close()
        except BrokenPipeError:
            logger.warning("the watchdog (pid %d) had already exited", self.process.pid)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def descendants(pid: int) -> dict[int, float]:
    """pid -> start time of every process below `pid`."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def kill_all(noted: dict[int, float]) -> list[int]:
    """SIGKILL every noted process that is still the one noted (its pid may have been reused)."""
    killed = []
    for pid, started in noted.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.kill()
                killed.append(pid)
        except psutil.Error:
            continue
    return killed


def watch(driver_pid: int, stdin_fd: int) -> int:
    noted: dict[int, float] = {}
    message = b""
    while True:
        try:
            noted.update(descendants(driver_pid))
        except psutil.NoSuchProcess:
            break
        ready, _, _ = select.select([stdin_fd], [], [], POLL_S)
        if ready:
            chunk = os.read(stdin_fd, 64)
            if chunk:
                message += chunk
                continue
            if message == EXIT_LINE:
                return 0  # the driver ended normally
            break  # end of file without a word: the driver died
    noted.pop(os.getpid(), None)
    time.sleep(POLL_S)  # let what is exiting on its own exit
    killed = kill_all(noted)
    sys.stderr.write(
        f"driver watchdog: driver {driver_pid} died; killed {len(killed)} processes it had started that were still running\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(watch(int(sys.argv[1]), sys.stdin.fileno()))
