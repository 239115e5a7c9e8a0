"""The register-bus harness (``sim/harness/bus.cpp``): samples pushed through the front end.

It drives :class:`mailpulse.hdl.tops.BusTop` - the SPI top's register front end and core (the
folded core of the iCE40 boards, ``mailpulse_bus``, or the ECP5's push-only pipelined core,
``mailpulse_bus_stream``) with the front end's register port on the pins - the way a host drives
the SPI top, without the SPI frames: each sample is written to ``FEATURE[0..D-1]`` and ``TAG``,
pushed with ``PUSH``, its result awaited on ``irq`` (``STATUS.RESULT_VALID``) and read from
``RESULT_SCORE``, ``RESULT_TAG`` and ``RESULT_INFO`` (with routes, ``ROUTE`` is written before each
PUSH and ``RESULT_INFO`` carries the below/above flags).  An access takes 4 clocks back to back, so a
sample costs about ``4 (D + 5)`` clocks plus the core's latency.

Two modes: ``bulk`` (a configuration load, then N samples; :func:`start_bulk`, :func:`finish_bulk`,
:func:`bad_rows`) for :func:`mailpulse.sim.bulk.verify`, and ``script`` (a list of register
operations, :class:`Op`, :func:`run_script`) for the scenarios of :mod:`mailpulse.sim.scenarios`.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import ScoreResult
from mailpulse.hdl.regmap import RegisterMap

__all__ = ["Op", "OpCode", "PushRun", "bad_rows", "finish_bulk", "push_results", "run_script", "start_bulk",
           "start_harness", "wait_harness"]

#: Result words per sample: RESULT_SCORE, RESULT_TAG, RESULT_INFO.
RESULT_WORDS = 3


@dataclass
class PushRun:
    """Raw output of one bulk run: (N, 3) ``uint32`` result register values, the counters
    ((-1, -1) after a timeout, (-E, -E) after E error responses), seconds, clocks in which an
    output followed an input combinationally."""

    words: npt.NDArray[np.uint32]
    counters: tuple[int, int]
    seconds: float
    comb_outputs: int = 0


def start_bulk(exe: Path, params: CoreParams, writes: list[tuple[int, int]], x: npt.ArrayLike, tags: npt.ArrayLike,
               workdir: Path, seed: int, idle: int = 0, preset: tuple[int, int] = (0, 0),
               trace: Path | None = None, trace_from: int = 0, *, routes: npt.ArrayLike | None = None,
               latencies: npt.ArrayLike | None = None) -> tuple[subprocess.Popen[str], float]:
    """Start the harness on ``writes`` (the configuration load and its COMMIT) and the samples
    ``x`` (N, D) with ``tags`` (with routes: each sample's ``ROUTE`` register from ``routes`` and
    ``latencies``, written before its PUSH); returns the process and its start time."""
    np.array(writes, dtype="<u4").tofile(workdir / "writes.bin")
    xs = np.asarray(x)
    n = len(xs)
    words = np.empty((n, params.d + 1 + (1 if params.r else 0)), dtype="<u4")
    words[:, :params.d] = xs.astype(np.int64) & 0xFFFFFFFF      # the host writes the sign-extended value
    words[:, params.d] = np.asarray(tags).astype(np.int64) & 0xFFFFFFFF
    if params.r:
        route = RegisterMap(params)["ROUTE"]
        ids = np.full(n, 0xFFFF, dtype=np.int64) if routes is None else np.asarray(routes, dtype=np.int64)
        lat = np.zeros(n, dtype=np.int64) if latencies is None else np.asarray(latencies, dtype=np.int64)
        words[:, params.d + 1] = (ids << route.field("ID").lsb) | (lat << route.field("LATENCY").lsb)
    words.tofile(workdir / "samples.bin")
    cmd = [str(exe), "bulk", str(workdir / "writes.bin"), str(workdir / "samples.bin"), str(n),
           str(workdir / "results.bin"), str(seed), str(idle), str(preset[0]), str(preset[1])] + (
               [str(trace), str(trace_from)] if trace else [])
    return start_harness(cmd)


def start_harness(cmd: list[str]) -> tuple[subprocess.Popen[str], float]:
    """Start a Verilator harness (either one); its start time for :func:`wait_harness`."""
    t0 = time.perf_counter()
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), t0


def wait_harness(proc: subprocess.Popen[str], t0: float, what: str) -> tuple[str, float]:
    """Its standard output and run time; status 0 (done) and 3 (stopped at a mismatch) are results,
    anything else a failure of ``what``."""
    out, err = proc.communicate()
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"the {what} failed ({proc.returncode}): {err.strip()}")
    return out, dt


def finish_bulk(proc: subprocess.Popen[str], t0: float, workdir: Path) -> PushRun:
    out, dt = wait_harness(proc, t0, "register-bus harness")
    words = np.fromfile(workdir / "results.bin", dtype="<u4")
    m = len(words) // RESULT_WORDS
    run = PushRun(words[: m * RESULT_WORDS].reshape(m, RESULT_WORDS), (-1, -1), dt)
    if proc.returncode == 0:
        parts = out.split()
        run.counters = (int(parts[parts.index("samples") + 1]), int(parts[parts.index("anomalies") + 1]))
        errors = int(parts[parts.index("write_errors") + 1])
        if errors:
            run.counters = (-errors, -errors)
        run.comb_outputs = int(parts[parts.index("comb_outputs") + 1])
    return run


def push_results(params: CoreParams, words: npt.NDArray[np.uint32]) -> ScoreResult:
    """(N, 3) result register values as a :class:`~mailpulse.hdl.reference.ScoreResult` (the
    ``RESULT_INFO`` fields as :class:`~mailpulse.hdl.regmap.RegisterMap` declares them)."""
    info = RegisterMap(params)["RESULT_INFO"]
    w = np.asarray(words, dtype=np.int64).reshape(-1, RESULT_WORDS)

    def fld(name: str) -> npt.NDArray[np.int64]:
        f = info.field(name)
        return (w[:, 2] >> f.lsb) & ((1 << f.width) - 1)

    out = ScoreResult(score=w[:, 0], anomaly=fld("ANOMALY"), argmax=fld("ARGMAX"), tag=w[:, 1])
    if params.r:
        out.below, out.above = fld("BELOW"), fld("ABOVE")
    return out


def bad_rows(params: CoreParams, exp: ScoreResult, words: npt.NDArray[np.uint32]) -> npt.NDArray[np.intp]:
    """Indices of the samples whose result registers differ from ``exp`` in any bit (a
    ``RESULT_INFO`` bit outside its fields included)."""
    info = RegisterMap(params)["RESULT_INFO"]
    w = np.asarray(words, dtype=np.int64)
    want_info = (exp.anomaly << info.field("ANOMALY").lsb) | (exp.argmax << info.field("ARGMAX").lsb)
    if params.r and exp.below is not None and exp.above is not None:
        want_info = want_info | (exp.below << info.field("BELOW").lsb) | (exp.above << info.field("ABOVE").lsb)
    bad = (w[:, 0] != exp.score) | (w[:, 1] != exp.tag) | (w[:, 2] != want_info)
    return np.flatnonzero(bad)


# -- script mode --------------------------------------------------------------------------------
class OpCode(IntEnum):
    """Operations of a script (``bus.cpp``): what each records is in :class:`Op`."""

    WRITE = 0
    READ = 1
    IDLE = 2
    WAIT_IRQ = 3
    PRESET = 4
    WAIT_QUIET = 5


@dataclass(frozen=True)
class Op:
    """One script operation and what the harness records for it, ``(value, flag)``:

    * ``WRITE a b``: write ``b`` to address ``a``; (0, error response)
    * ``READ a``: (data, error response)
    * ``IDLE a``: ``a`` clocks with no access; (0, 0)
    * ``WAIT_IRQ a``: wait up to ``a`` clocks for ``irq``; (clocks waited, timed out)
    * ``PRESET a b``: write ``a``/``b`` into the core's SAMPLES/ANOMALIES registers; (0, 0)
    * ``WAIT_QUIET a``: read STATUS until no commit/push/pipeline activity, at most ``a`` reads;
      (last STATUS, timed out)
    """

    code: OpCode
    a: int = 0
    b: int = 0
    note: str = ""

    def row(self) -> tuple[int, int, int]:
        return int(self.code), self.a & 0xFFFFFFFF, self.b & 0xFFFFFFFF


def run_script(exe: Path, ops: list[Op], workdir: Path, seed: int = 1,
               trace: Path | None = None) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Run ``ops`` from reset; returns one ``(value, flag)`` per op and the harness' summary
    (``cycles``, ``comb_outputs``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    np.array([o.row() for o in ops], dtype="<u4").reshape(-1, 3).tofile(workdir / "ops.bin")
    cmd = [str(exe), "script", str(workdir / "ops.bin"), str(workdir / "out.bin"), str(seed)] + (
        [str(trace)] if trace else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"the register-bus harness failed ({r.returncode}): {r.stderr.strip()}")
    out = np.fromfile(workdir / "out.bin", dtype="<u4").reshape(-1, 2)
    parts = r.stdout.split()
    summary = {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    return [(int(v), int(f)) for v, f in out], summary
