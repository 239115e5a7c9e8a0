"""Child processes of the lab's multi-process runs, and the CPU time they use.

:class:`Proc` starts a command in a session of its own (so a signal reaches it and its children);
:class:`CpuMeter` samples ``/proc`` for the CPU seconds (user + system) of named stages, each a set
of root processes and their descendants, so a stage's figure includes the children it starts (the
Flink job's JVM) and keeps the last sample of a process that was killed.  Linux only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

__all__ = ["CpuMeter", "Proc"]

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child process in its own session (signalled as a group)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, stdout: int | None = None) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=stdout or out, stderr=out,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def signal(self, sig: int, timeout: float = 30.0) -> None:
        p = self.proc
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        self.proc = None


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds user + system) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        out[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
    return out


class CpuMeter:
    """CPU seconds per stage from ``/proc``: each stage's root processes and their descendants,
    sampled every ``period`` s (a killed process keeps its last sample)."""

    def __init__(self, period: float = 0.5) -> None:
        self.roots: dict[str, set[int]] = {}
        self.latest: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-meter", daemon=True)
        self.period = period

    def track(self, stage: str, pid: int | None) -> None:
        if pid is not None:
            with self._lock:
                self.roots.setdefault(stage, set()).add(pid)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> None:
        table = _proc_table()
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            kids.setdefault(ppid, []).append(pid)
        with self._lock:
            for stage, roots in self.roots.items():
                todo = [r for r in roots if r in table]
                while todo:
                    pid = todo.pop()
                    self.latest[(stage, pid)] = table[pid][1]
                    todo.extend(kids.get(pid, ()))

    def snapshot(self) -> dict[tuple[str, int], float]:
        self.sample()
        with self._lock:
            return dict(self.latest)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    @staticmethod
    def between(a: dict[tuple[str, int], float], b: dict[tuple[str, int], float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for (stage, pid), v in b.items():
            out[stage] = out.get(stage, 0.0) + v - a.get((stage, pid), 0.0)
        return out
