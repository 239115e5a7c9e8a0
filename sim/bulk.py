"""Bulk verification: millions of random samples through the RTL, compared with the model.

``verify(set, samples=N, configs=M, seed=S)`` draws M random configurations
(:meth:`mailpulse.hdl.reference.CoreConfig.random`) and N random samples for each (:func:`mailpulse.sim.codec.random_beats`),
all from ``numpy.random.default_rng([S, config_index])`` so that any case can be regenerated from
(seed, config index).  Each configuration is loaded over AXI4-Lite (the writes of
:func:`mailpulse.hdl.reference.model_writes` plus ``CTRL.COMMIT``), then the samples stream at one per clock
with occasional idle cycles and back-pressure, and every result (score, flag, argmax, tag, tlast,
the result bits that must be 0) and the ``SAMPLES``/``ANOMALIES`` counters are compared exactly
with :func:`mailpulse.hdl.reference.score`.

Two engines:

* ``verilator`` (default): the C++ harness ``sim/harness/bulk.cpp`` built with
  ``verilator --cc --exe --build`` into ``build/sim/bulk/<set>/`` (no tracing, one eval per clock).
  ``jobs`` configurations run at once (default: one per core); each worker thread generates its
  case, starts the harness, scores the case with the model while the harness runs, then compares
  the raw result words (:func:`bad_beats`).  About 1.15 (small), 1.6 (full) and 2.6 (zynq) us of
  CPU per sample in all, of which the model is 0.3 / 0.45 / 0.8 us.  When a configuration
  mismatches, it is re-run (up to 256 samples past the first mismatch) on a second, traced build
  (``build/sim/bulk/<set>-trace/``, built then) with the VCD on from 64 samples before it, and the
  report names the VCD file.
* ``icarus``: the cocotb bench (``mailpulse.sim.tb_verify``) on Icarus; a few thousand samples/s, for small N.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.beats import RESULT_BEAT, RESULT_BYTES, sample_bytes
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig, ScoreResult, model_writes, score
from mailpulse.hdl.regmap import RegisterMap

from .codec import StreamResults, beat_fields, compare, pack_samples, random_beats, unpack_results
from .rtl import TOP_MODULE, build_root, file_lock, verilog_path
from .runner import run_cocotb
from .tools import require_simulator, sim_env

HARNESS = Path(__file__).resolve().parent / "harness" / "bulk.cpp"
#: (idle, back-pressure) in permille, by configuration index (cycled).
STRESS = [(0, 0), (50, 0), (0, 50), (200, 300), (0, 0), (20, 20)]


@dataclass
class Case:
    """One configuration and its samples, regenerable from (seed, index)."""

    index: int
    cfg: CoreConfig
    #: (N, D) features, N tags, N tlast flags (any integer dtype: make_case gives views of ``beats``).
    x: npt.NDArray[np.integer[Any]]
    tags: npt.NDArray[np.integer[Any]]
    tlast: npt.NDArray[np.integer[Any]]
    idle: int
    backpressure: int
    #: The samples and tags as packed ``s_axis`` beats ((N, 16) int16, :func:`mailpulse.sim.codec.random_beats`).
    beats: npt.NDArray[np.int16] | None = None


def make_case(params: CoreParams, seed: int, index: int, n: int) -> Case:
    """Configuration ``index`` of ``seed``: a random :class:`CoreConfig`, ``n`` random samples and
    tags (:func:`mailpulse.sim.codec.random_beats`), ``tlast`` on about one sample in 64 and on the last."""
    rng = np.random.default_rng([seed, index])
    cfg = CoreConfig.random(params, rng)
    beats = random_beats(params, rng, n)
    x, tags = beat_fields(params, beats)    # views: mailpulse.hdl.reference.score widens each chunk to int64
    tlast = (rng.integers(0, 64, size=n, dtype=np.uint8) == 0).view(np.uint8)
    if n:
        tlast[-1] = 1
    idle, bp = STRESS[index % len(STRESS)]
    return Case(index, cfg, x, tags, tlast, idle, bp, beats)


@dataclass
class Mismatch:
    config: int
    index: int
    text: str


@dataclass
class VerifyReport:
    params: str
    samples: int
    configs: int
    seed: int
    simulator: str
    mismatches: list[Mismatch] = field(default_factory=list)
    sim_seconds: float = 0.0
    #: CPU seconds of the harness processes (on a shared machine the wall time overstates the cost).
    sim_cpu_seconds: float = 0.0
    #: CPU seconds of the harness processes and of this process (generation, model, comparison).
    cpu_seconds: float = 0.0
    #: Wall time of the whole harness phase (cases generated, simulated and compared, ``jobs`` at once).
    wall_seconds: float = 0.0
    jobs: int = 1
    waveform: Path | None = None
    #: Stream cycles in which the harness saw an output follow an input combinationally (it then
    #: evaluates twice per clock; 0 on the current RTL).
    comb_outputs: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def rate(self) -> float:
        """Samples per wall-clock second of the harness phase, all ``jobs`` harnesses together."""
        if self.wall_seconds:
            return self.samples * self.configs / self.wall_seconds
        return self.samples * self.configs / self.sim_seconds if self.sim_seconds else 0.0

    @property
    def cpu_rate(self) -> float:
        """Samples per CPU second of the harness (0 when not measured)."""
        return self.samples * self.configs / self.sim_cpu_seconds if self.sim_cpu_seconds else 0.0

    @property
    def total_cpu_rate(self) -> float:
        """Samples per CPU second of everything: harnesses, case generation, model and comparison."""
        return self.samples * self.configs / self.cpu_seconds if self.cpu_seconds else 0.0

    def summary(self) -> str:
        return f"verified {self.samples} samples x {self.configs} configs: {len(self.mismatches)} mismatches"


def describe(case: Case, exp: ScoreResult, got: StreamResults, i: int) -> str:
    return (f"config {case.index} sample {i}: x={case.x[i].tolist()} tag={int(case.tags[i])} tlast={int(case.tlast[i])} "
            f"expected (score, anomaly, argmax, tag)={exp.row(i)} got {got.row(i) if i < len(got) else 'nothing'}"
            + (f" tlast={int(got.tlast[i])}" if i < len(got) else ""))


def check_case(params: CoreParams, case: Case, got: StreamResults, counters: tuple[int, int] | None,
               limit: int = 5, exp: ScoreResult | None = None) -> list[Mismatch]:
    """Compare RTL results of one case with the model (``exp``: the model's results, when known)."""
    if exp is None:
        exp = score(params, case.cfg, case.x, case.tags)
    out = [Mismatch(case.index, i, describe(case, exp, got, i)) for i in compare(exp, got, limit)]
    if len(out) < limit and len(got) == len(case.x):
        bad_tl = np.flatnonzero(np.asarray(got.tlast) != case.tlast)[: limit - len(out)]
        out += [Mismatch(case.index, int(i), "tlast not carried: " + describe(case, exp, got, int(i))) for i in bad_tl]
    if got.stray_bits:
        out.append(Mismatch(case.index, -1, f"config {case.index}: result bits outside the fields: 0x{got.stray_bits:x}"))
    if counters is not None:
        want = (len(case.x) & 0xFFFFFFFF, int(exp.anomaly.sum()) & 0xFFFFFFFF)
        if tuple(counters) != want:
            out.append(Mismatch(case.index, -1, f"config {case.index}: SAMPLES/ANOMALIES read {counters}, "
                                                f"the model says {want}"))
    return out


# -- the Verilator harness -----------------------------------------------------------------------
#: Verilator options of both harness builds.
BULK_VERILATOR_ARGS = ["-Wno-WIDTH", "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT", "-Wno-fatal", "-O3",
                       "--x-assign", "fast", "--x-initial", "fast", "--noassert"]
#: C++ options of the fast build (no tracing, which would cost ~12%): the per-clock code at -O2
#: (measured as fast as -O3 on this design, built in 2/3 of the time), constructors (the __Slow
#: files) at -O0.  See docs/verification.md, "Speed", for what else was measured.
FAST_BUILD_ARGS = ["-CFLAGS", "-march=native", "-MAKEFLAGS", "OPT_FAST=-O2", "-MAKEFLAGS", "OPT_SLOW=-O0"]
#: C++ options of the traced build, made only to write the waveform of a failure: all -O0, which
#: builds in about half the time of an optimised traced build (zynq: 41 s instead of 74 s) and
#: runs at ~100k cycles/s (zynq), enough to reach a mismatch anywhere in 1M samples.
TRACE_BUILD_ARGS = ["--trace", "-CFLAGS", "-DMP_TRACE", "-MAKEFLAGS", "OPT_FAST=-O0", "-MAKEFLAGS", "OPT_SLOW=-O0",
                    "-MAKEFLAGS", "OPT_GLOBAL=-O0"]


def harness_dir(params_name: str, trace: bool = False) -> Path:
    return build_root() / "bulk" / (params_name + ("-trace" if trace else ""))


def build_harness(params_name: str, trace: bool = False) -> Path:
    """Build (or reuse) the bulk harness for ``params_name``; returns the executable.

    Two builds: the fast one (``trace=False``) runs every verification; the traced one
    (``--trace``, unoptimised) is built only when a failure needs a waveform.  VCD, not FST:
    Verilator's FST writer needs liblz4 headers, which this bench does not require.
    """
    require_simulator("verilator")
    src = verilog_path("axi", params_name)
    d = harness_dir(params_name, trace)
    exe = d / "bulk"
    args = [*BULK_VERILATOR_ARGS, *(TRACE_BUILD_ARGS if trace else FAST_BUILD_ARGS), *beat_size_args(params_name)]
    key = hashlib.sha256(src.read_bytes() + HARNESS.read_bytes() + repr(args).encode()).hexdigest()
    stamp = d / ".mailpulse-stamp"
    with file_lock(d.with_name(d.name + ".lock")):
        if stamp.exists() and stamp.read_text() == key and exe.exists():
            return exe
        verilate_harness(src, d, args)
        stamp.write_text(key)
    return exe


def beat_size_args(params_name: str) -> list[str]:
    """The beat sizes of :mod:`mailpulse.hdl.beats`, as the harness's compile-time constants."""
    return ["-CFLAGS", f"-DMP_SAMPLE_BYTES={sample_bytes(get_params(params_name))}",
            "-CFLAGS", f"-DMP_RESULT_BYTES={RESULT_BYTES}"]


def verilate_harness(src: Path, d: Path, args: list[str]) -> Path:
    """Build the harness around the ``mailpulse_axi`` module of ``src`` in ``d`` (emptied first)."""
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    exe = d / "bulk"
    env = sim_env()
    cmd = [str(Path(env["VERILATOR_ROOT"]) / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", "2",
           *args, "--top-module", TOP_MODULE["axi"], "--prefix", "Vtop", "-Mdir", str(d), "-o", "bulk",
           str(HARNESS), str(src)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (d / "build.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0 or not exe.exists():
        raise RuntimeError(f"building the Verilator bulk harness failed; log in {d / 'build.log'}:\n"
                           f"{(r.stdout + r.stderr)[-3000:]}")
    return exe


def config_writes(regmap: RegisterMap, cfg: CoreConfig) -> list[tuple[int, int]]:
    """The AXI4-Lite writes that load and commit ``cfg``."""
    ctrl = regmap["CTRL"]
    return [*model_writes(regmap, cfg), (ctrl.address(), ctrl.field("COMMIT").mask)]


@dataclass
class HarnessRun:
    """Raw output of one harness run: result words (N, RESULT_BYTES / 4) ``uint32``, their tlast, the counters."""

    words: npt.NDArray[np.uint32]
    tlast: npt.NDArray[np.uint8]
    #: (SAMPLES, ANOMALIES) as read over AXI4-Lite; (-1, -1) after a timeout, (-E, -E) after E
    #: AXI4-Lite error responses.
    counters: tuple[int, int]
    seconds: float
    #: Stream cycles in which an output changed with the inputs (0: one eval per clock was exact).
    comb_outputs: int = 0

    def results(self) -> StreamResults:
        return unpack_results(self.words.tobytes(), self.tlast)


def _start_harness(exe: Path, params: CoreParams, case: Case, workdir: Path, seed: int,
                   trace: Path | None = None, n: int | None = None,
                   trace_from: int = 0) -> tuple[subprocess.Popen[str], float]:
    rm = RegisterMap(params)
    n = len(case.x) if n is None else n
    np.array(config_writes(rm, case.cfg), dtype="<u4").tofile(workdir / "writes.bin")
    if case.beats is not None:
        case.beats[:n].tofile(workdir / "samples.bin")
    else:
        (workdir / "samples.bin").write_bytes(pack_samples(params, case.x[:n], case.tags[:n]))
    case.tlast[:n].astype(np.uint8).tofile(workdir / "tlast.bin")
    st = rm["STATUS"]
    busy = st.field("COMMIT_PENDING").mask | st.field("BUSY").mask | st.field("PUSH_PENDING").mask
    cmd = [str(exe), str(workdir / "writes.bin"), str(workdir / "samples.bin"), str(workdir / "tlast.bin"), str(n),
           str(workdir / "results.bin"), str(workdir / "rtlast.bin"), str(seed * 1000 + case.index),
           str(case.idle), str(case.backpressure), str(st.address()), str(busy), str(rm["SAMPLES"].address()),
           str(rm["ANOMALIES"].address())] + ([str(trace), str(trace_from)] if trace else [])
    t0 = time.perf_counter()
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), t0


def _finish_harness(proc: subprocess.Popen[str], t0: float, workdir: Path) -> HarnessRun:
    out, err = proc.communicate()
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"the bulk harness failed ({proc.returncode}): {err.strip()}")
    words = np.fromfile(workdir / "results.bin", dtype="<u4")
    wpb = RESULT_BYTES // 4
    m = len(words) // wpb
    tl = np.fromfile(workdir / "rtlast.bin", dtype=np.uint8)[:m]
    run = HarnessRun(words[: m * wpb].reshape(m, wpb), tl, (-1, -1), dt)
    if proc.returncode == 0:
        parts = out.split()
        run.counters = (int(parts[parts.index("samples") + 1]), int(parts[parts.index("anomalies") + 1]))
        errors = int(parts[parts.index("write_errors") + 1])
        if errors:
            run.counters = (-errors, -errors)
        run.comb_outputs = int(parts[parts.index("comb_outputs") + 1])
    return run


def run_harness(exe: Path, params: CoreParams, case: Case, workdir: Path, seed: int,
                trace: Path | None = None, n: int | None = None,
                trace_from: int = 0) -> tuple[StreamResults, tuple[int, int], float]:
    """Run one case through the harness; returns (results, (SAMPLES, ANOMALIES), seconds)."""
    run = _finish_harness(*_start_harness(exe, params, case, workdir, seed, trace, n, trace_from), workdir)
    return run.results(), run.counters, run.seconds


def bad_beats(exp: ScoreResult, words: npt.NDArray[np.uint32], rtlast: npt.ArrayLike,
              tlast: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Indices of the result beats (N, RESULT_BYTES / 4 words) that differ from ``exp`` in any bit, tlast included.

    Field by field on views of the raw beats (:data:`mailpulse.hdl.beats.RESULT_BEAT`), and no bit
    set outside the fields.  Equivalent to :func:`check_case` finding nothing (same lengths
    assumed), without unpacking the beats.
    """
    beats = RESULT_BEAT.beats(words)
    bad = RESULT_BEAT.get(beats, "score") != exp.score
    bad |= RESULT_BEAT.view(beats, "tag") != exp.tag
    bad |= RESULT_BEAT.get(beats, "argmax") != exp.argmax
    bad |= RESULT_BEAT.get(beats, "anomaly") != exp.anomaly
    bad |= RESULT_BEAT.stray(beats)
    bad |= np.asarray(rtlast) != np.asarray(tlast)
    return np.flatnonzero(bad)


def _check_run(params: CoreParams, case: Case, exp: ScoreResult, run: HarnessRun) -> list[Mismatch]:
    """Exact comparison of one harness run with the model; the detailed report only on a difference."""
    want = (len(case.x) & 0xFFFFFFFF, int(exp.anomaly.sum()) & 0xFFFFFFFF)
    if len(run.words) == len(case.x) and run.counters == want \
            and not len(bad_beats(exp, run.words, run.tlast, case.tlast)):
        return []
    bad = check_case(params, case, run.results(), run.counters, exp=exp)
    return bad or [Mismatch(case.index, -1, f"config {case.index}: the results differ from the model")]


def verify(params_name: str, samples: int, configs: int, seed: int = 1, simulator: str = "verilator",
           log: Callable[[str], None] | None = None, jobs: int | None = None) -> VerifyReport:
    """Run ``configs`` random configurations x ``samples`` random samples through the RTL.

    Verilator: ``jobs`` (default: one per core) worker threads; each generates a case, starts its
    harness process, scores the case with the model while the harness runs, then compares.  The
    first configuration (in index order) with a mismatch stops the run and is re-run with tracing
    to write a VCD around its first mismatch.
    """
    params = get_params(params_name)
    if samples < 1 or configs < 1:
        raise ValueError("samples and configs must be at least 1")
    rep = VerifyReport(params_name, samples, configs, seed, simulator)
    if simulator == "icarus":
        return _verify_cocotb(rep, "icarus")
    if simulator != "verilator":
        raise ValueError(f"unknown simulator {simulator!r}; use verilator or icarus")
    exe = build_harness(params_name)
    base = build_root() / "bulk" / "runs"
    base.mkdir(parents=True, exist_ok=True)
    # One harness process per configuration, as many at once as there are cores: the harnesses are
    # independent processes, so the bulk rate scales with the machine.
    n_jobs = max(1, min(configs, jobs or os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)

        def run_one(c: int) -> tuple[list[Mismatch], float, int]:
            # returns only small things: the futures keep their results until the end
            case = make_case(params, seed, c, samples)
            wd = work / f"config{c}"
            wd.mkdir()
            proc, t0 = _start_harness(exe, params, case, wd, seed)
            try:
                exp = score(params, case.cfg, case.x, case.tags)  # while the harness runs
            finally:
                run = _finish_harness(proc, t0, wd)
            bad = _check_run(params, case, exp, run)
            if not bad:
                shutil.rmtree(wd)  # 48 bytes per sample
            return bad, run.seconds, run.comb_outputs

        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = resource.getrusage(resource.RUSAGE_SELF)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = [pool.submit(run_one, c) for c in range(configs)]
            for c, fut in enumerate(futures):
                bad, seconds, comb = fut.result()
                rep.sim_seconds += seconds
                rep.comb_outputs += comb
                if log:
                    log(f"config {c}: {samples} samples in {seconds:.2f} s, {len(bad)} mismatches")
                if bad:
                    for f in futures:
                        f.cancel()
                    rep.mismatches += bad
                    first = min([m.index for m in bad if m.index >= 0] or [samples])
                    n = min(samples, first + 256)
                    wave = harness_dir(params_name).parent / f"fail_{params_name}_seed{seed}_config{c}.vcd"
                    run_harness(build_harness(params_name, trace=True), params, make_case(params, seed, c, samples),
                                work / f"config{c}", seed, trace=wave, n=n, trace_from=max(0, first - 64))
                    rep.waveform = wave
                    break
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        rep.wall_seconds = time.perf_counter() - t0
        rep.sim_cpu_seconds = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        rep.cpu_seconds = rep.sim_cpu_seconds + (s1.ru_utime - s0.ru_utime) + (s1.ru_stime - s0.ru_stime)
        rep.jobs = n_jobs
    return rep


def _verify_cocotb(rep: VerifyReport, sim: str) -> VerifyReport:
    out = build_root() / "bulk" / f"cocotb_{sim}_{rep.params}_{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"MAILPULSE_SIM_SAMPLES": str(rep.samples), "MAILPULSE_SIM_CONFIGS": str(rep.configs),
           "MAILPULSE_SIM_REPORT": str(out)}
    t0 = time.perf_counter()
    res = run_cocotb(sim, "axi", rep.params, "mailpulse.sim.tb_verify", env=env, seed=rep.seed, tag=f"verify_{os.getpid()}")
    rep.sim_seconds = time.perf_counter() - t0
    if res.ok:
        shutil.rmtree(res.results_xml.parent, ignore_errors=True)
    if out.exists():
        data = json.loads(out.read_text())
        out.unlink()
        rep.mismatches = [Mismatch(m["config"], m["index"], m["text"]) for m in data["mismatches"]]
    if not res.ok and not rep.mismatches:
        rep.mismatches = [Mismatch(-1, -1, f"cocotb run failed: {res.failed}")]
    if rep.mismatches:
        again = run_cocotb(sim, "axi", rep.params, "mailpulse.sim.tb_verify", env=env, seed=rep.seed,
                           tag=f"verify_{os.getpid()}_waves", waves=True)
        rep.waveform = again.waves
    return rep
