"""CPU time of a benchmark and of every process it starts (drivers, Ray clusters, actors)."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path


class CPUMeter(threading.Thread):
    """CPU time (user + system) of this process and of every descendant (each run's driver, its
    Ray cluster and actors), by reading /proc every `period` seconds and keeping each process's
    last reading: a process's final `period` seconds before it exits can be missed. (Ray's workers
    are not all reaped through the driver, so RUSAGE_CHILDREN misses most of them.) Linux only;
    elsewhere `seconds` counts this process alone."""

    def __init__(self, period: float = 0.25):
        super().__init__(daemon=True)
        self.period, self.seen, self.lock = period, {}, threading.Lock()
        self.tick = os.sysconf("SC_CLK_TCK")

    def poll(self) -> None:
        parents, cpu = {}, {}
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit():
                try:  # the fields after the name: state (3), ppid (4), ... utime (14), stime (15), starttime (22)
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                pid = int(entry)
                parents[pid] = int(fields[1])
                cpu[(pid, fields[19])] = (int(fields[11]) + int(fields[12])) / self.tick
        me = os.getpid()
        with self.lock:
            for (pid, started), seconds in cpu.items():
                ancestor = parents.get(pid, 0)
                while ancestor not in (0, 1, me):
                    ancestor = parents.get(ancestor, 0)
                if ancestor == me:  # a descendant; (pid, start time) tells a reused pid apart
                    self.seen[(pid, started)] = max(seconds, self.seen.get((pid, started), 0.0))

    def run(self) -> None:
        while True:
            self.poll()
            time.sleep(self.period)

    def seconds(self) -> float:
        self.poll()
        own = resource.getrusage(resource.RUSAGE_SELF)
        with self.lock:
            return own.ru_utime + own.ru_stime + sum(self.seen.values())
