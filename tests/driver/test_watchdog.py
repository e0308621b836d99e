"""driver/watchdog.py with real processes: a SIGKILLed driver's process tree is killed by its
watchdog; a driver that ends normally leaves its watchdog to exit without killing anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
# A stand-in driver: starts the watchdog, then a grandchild tree (as ray.init starts GCS, raylet,
# agents), prints their pids, and either waits to be killed or ends normally.
DRIVER = """
import subprocess, sys, time
from driver.watchdog import Watchdog
dog = Watchdog.start()
child = subprocess.Popen(
    [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(['sleep', '600']); time.sleep(600)"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
time.sleep(1.5)  # the watchdog notes the tree
print(dog.process.pid, child.pid, flush=True)
if sys.argv[1] == "normal":  # (the child is left running: the test checks the watchdog let it be)
    dog.stop()
    print("stopped", flush=True)
else:
    time.sleep(600)
"""


def exited(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def launch(mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_sigkilled_driver_takes_every_process_it_started_along():
    proc = launch("killed")
    try:
        dog, child = map(int, proc.stdout.readline().split())
        noted = [p for p in tree(proc.pid) if p.pid != dog]
        assert len(noted) >= 2 and any(p.name() == "sleep" for p in noted)  # the child and its own child
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(noted, timeout=15)
        assert alive == [], [p.name() for p in alive]
        assert exited(dog)  # and the watchdog leaves
        assert "driver watchdog: driver" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_driver_that_ends_normally_leaves_its_watchdog_killing_nothing():
    proc = launch("normal")
    try:
        dog, child = map(int, proc.stdout.readline().split())
        survivors = [psutil.Process(child), *tree(child)]
        assert proc.stdout.readline().strip() == "stopped"
        assert proc.wait(timeout=20) == 0
        assert exited(dog)
        time.sleep(1.0)
        assert all(p.is_running() for p in survivors)  # left running by the driver: not the watchdog's to kill
        assert "driver watchdog" not in proc.stderr.read()
        for p in survivors:
            p.kill()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
