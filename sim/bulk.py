"""Bulk verification: millions of random samples through the RTL, compared with the model.

``verify(set, samples=N, configs=M, seed=S)`` draws M random configurations
(:meth:`hdl.model.CoreConfig.random`) and N random samples for each (:func:`sim.codec.random_samples`),
all from ``numpy.random.default_rng([S, config_index])`` so that any case can be regenerated from
(seed, config index).  Each configuration is loaded over AXI4-Lite (the writes of
:func:`hdl.model.model_writes` plus ``CTRL.COMMIT``), then the samples stream at one per clock
with occasional idle cycles and back-pressure, and every result (score, flag, argmax, tag, tlast)
and the ``SAMPLES``/``ANOMALIES`` counters are compared with :func:`hdl.model.score`.

Two engines:

* ``verilator`` (default): the C++ harness ``sim/harness/bulk.cpp`` built with
  ``verilator --cc --exe --build`` into ``build/sim/bulk/<set>/``; > 1M samples/s.  When a
  configuration mismatches, it is re-run (up to 256 samples past the first mismatch) with VCD
  tracing on from 64 samples before it, and the report names the VCD file.
* ``icarus``: the cocotb bench (``sim.tb_verify``) on Icarus; a few thousand samples/s, for small N.
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

import numpy as np

from hdl.model import CoreConfig, IntArray, ScoreResult, model_writes, score
from hdl.params import CoreParams, get_params
from hdl.regmap import RegisterMap

from .codec import RESULT_BYTES, StreamResults, compare, pack_samples, random_samples, unpack_results
from .rtl import TOP_MODULE, build_root, file_lock, verilog_path
from .tools import require_simulator, sim_env

HARNESS = Path(__file__).resolve().parent / "harness" / "bulk.cpp"
#: (idle, back-pressure) in permille, by configuration index (cycled).
STRESS = [(0, 0), (50, 0), (0, 50), (200, 300), (0, 0), (20, 20)]
BULK_VERILATOR_ARGS = ["-Wno-WIDTH", "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT", "-Wno-fatal", "-O3",
                       "--x-assign", "fast", "--x-initial", "fast", "--noassert"]


@dataclass
class Case:
    """One configuration and its samples, regenerable from (seed, index)."""

    index: int
    cfg: CoreConfig
    x: IntArray
    tags: IntArray
    tlast: IntArray
    idle: int
    backpressure: int


def make_case(params: CoreParams, seed: int, index: int, n: int) -> Case:
    rng = np.random.default_rng([seed, index])
    cfg = CoreConfig.random(params, rng)
    x, tags = random_samples(params, rng, n)
    tlast = (rng.random(n) < 1 / 64).astype(np.int64)
    if n:
        tlast[-1] = 1
    idle, bp = STRESS[index % len(STRESS)]
    return Case(index, cfg, x, tags, tlast, idle, bp)


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
    #: Wall time of the whole harness phase (cases generated, simulated and compared, ``jobs`` at once).
    wall_seconds: float = 0.0
    jobs: int = 1
    waveform: Path | None = None

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

    def summary(self) -> str:
        return f"verified {self.samples} samples x {self.configs} configs: {len(self.mismatches)} mismatches"


def describe(case: Case, exp: ScoreResult, got: StreamResults, i: int) -> str:
    return (f"config {case.index} sample {i}: x={case.x[i].tolist()} tag={int(case.tags[i])} tlast={int(case.tlast[i])} "
            f"expected (score, anomaly, argmax, tag)={exp.row(i)} got {got.row(i) if i < len(got) else 'nothing'}"
            + (f" tlast={int(got.tlast[i])}" if i < len(got) else ""))


def check_case(params: CoreParams, case: Case, got: StreamResults, counters: tuple[int, int] | None,
               limit: int = 5) -> list[Mismatch]:
    """Compare RTL results of one case with the model."""
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
def harness_dir(params_name: str) -> Path:
    return build_root() / "bulk" / params_name


def build_harness(params_name: str) -> Path:
    """Build (or reuse) the bulk harness for ``params_name``; returns the executable.

    The harness is always built with ``--trace`` (one build instead of two; tracing costs little
    until a trace file is given on the command line).  VCD, not FST: Verilator's FST writer
    needs liblz4 headers, which this bench does not require.
    """
    require_simulator("verilator")
    src = verilog_path("axi", params_name)
    d = harness_dir(params_name)
    exe = d / "bulk"
    args = [*BULK_VERILATOR_ARGS, "--trace", "-CFLAGS", "-DMP_TRACE"]
    key = hashlib.sha256(src.read_bytes() + HARNESS.read_bytes() + repr(args).encode()).hexdigest()
    stamp = d / ".mailpulse-stamp"
    with file_lock(d.with_name(d.name + ".lock")):
        if stamp.exists() and stamp.read_text() == key and exe.exists():
            return exe
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        env = sim_env()
        cmd = [str(Path(env["VERILATOR_ROOT"]) / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", "2",
               *args, "--top-module", TOP_MODULE["axi"], "--prefix", "Vtop", "-Mdir", str(d), "-o", "bulk",
               # the per-clock code at -O3; constructors and trace set-up (the __Slow files, half
               # of the C++) at -O0, which halves the build time and costs nothing at run time
               "-CFLAGS", "-march=native", "-MAKEFLAGS", "OPT_FAST=-O3", "-MAKEFLAGS", "OPT_SLOW=-O0",
               str(HARNESS), str(src)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        (d / "build.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0 or not exe.exists():
            raise RuntimeError(f"building the Verilator bulk harness failed; log in {d / 'build.log'}:\n"
                               f"{(r.stdout + r.stderr)[-3000:]}")
        stamp.write_text(key)
    return exe


def config_writes(regmap: RegisterMap, cfg: CoreConfig) -> list[tuple[int, int]]:
    """The AXI4-Lite writes that load and commit ``cfg``."""
    ctrl = regmap["CTRL"]
    return [*model_writes(regmap, cfg), (ctrl.address(), ctrl.field("COMMIT").mask)]


def run_harness(exe: Path, params: CoreParams, case: Case, workdir: Path, seed: int,
                trace: Path | None = None, n: int | None = None,
                trace_from: int = 0) -> tuple[StreamResults, tuple[int, int], float]:
    """Run one case through the harness; returns (results, (SAMPLES, ANOMALIES), seconds)."""
    rm = RegisterMap(params)
    n = len(case.x) if n is None else n
    wr = np.array(config_writes(rm, case.cfg), dtype="<u4")
    (workdir / "writes.bin").write_bytes(wr.tobytes())
    (workdir / "samples.bin").write_bytes(pack_samples(params, case.x[:n], case.tags[:n]))
    (workdir / "tlast.bin").write_bytes(case.tlast[:n].astype(np.uint8).tobytes())
    st = rm["STATUS"]
    busy = st.field("COMMIT_PENDING").mask | st.field("BUSY").mask | st.field("PUSH_PENDING").mask
    cmd = [str(exe), str(workdir / "writes.bin"), str(workdir / "samples.bin"), str(workdir / "tlast.bin"), str(n),
           str(workdir / "results.bin"), str(workdir / "rtlast.bin"), str(seed * 1000 + case.index),
           str(case.idle), str(case.backpressure), str(st.address()), str(busy), str(rm["SAMPLES"].address()),
           str(rm["ANOMALIES"].address())] + ([str(trace), str(trace_from)] if trace else [])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 3):
        raise RuntimeError(f"the bulk harness failed ({r.returncode}): {r.stderr.strip()}")
    data = (workdir / "results.bin").read_bytes()
    tl = np.frombuffer((workdir / "rtlast.bin").read_bytes(), dtype=np.uint8)
    got = unpack_results(data[: len(data) // RESULT_BYTES * RESULT_BYTES], tl[: len(data) // RESULT_BYTES])
    counters = (-1, -1)
    if r.returncode == 0:
        parts = r.stdout.split()
        counters = (int(parts[parts.index("samples") + 1]), int(parts[parts.index("anomalies") + 1]))
        errors = int(parts[parts.index("write_errors") + 1])
        if errors:
            counters = (-errors, -errors)
    return got, counters, dt


def verify(params_name: str, samples: int, configs: int, seed: int = 1, simulator: str = "verilator",
           log: Callable[[str], None] | None = None, jobs: int | None = None) -> VerifyReport:
    """Run ``configs`` random configurations x ``samples`` random samples through the RTL."""
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

        def run_one(c: int) -> tuple[Case, StreamResults, tuple[int, int], float]:
            case = make_case(params, seed, c, samples)
            wd = work / f"config{c}"
            wd.mkdir()
            got, counters, dt = run_harness(exe, params, case, wd, seed)
            return case, got, counters, dt

        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for case, got, counters, dt in pool.map(run_one, range(configs)):
                c = case.index
                rep.sim_seconds += dt
                bad = check_case(params, case, got, counters)
                if log:
                    log(f"config {c}: {samples} samples in {dt:.2f} s, {len(bad)} mismatches")
                if bad:
                    rep.mismatches += bad
                    first = min([m.index for m in bad if m.index >= 0] or [samples])
                    n = min(samples, first + 256)
                    wave = harness_dir(params_name).parent / f"fail_{params_name}_seed{seed}_config{c}.vcd"
                    run_harness(exe, params, case, work / f"config{c}", seed, trace=wave, n=n,
                                trace_from=max(0, first - 64))
                    rep.waveform = wave
                    break
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rep.wall_seconds = time.perf_counter() - t0
        rep.sim_cpu_seconds = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        rep.jobs = n_jobs
    return rep


def _verify_cocotb(rep: VerifyReport, sim: str) -> VerifyReport:
    from .runner import run_cocotb

    out = build_root() / "bulk" / f"cocotb_{sim}_{rep.params}_{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"MAILPULSE_SIM_SAMPLES": str(rep.samples), "MAILPULSE_SIM_CONFIGS": str(rep.configs),
           "MAILPULSE_SIM_REPORT": str(out)}
    t0 = time.perf_counter()
    res = run_cocotb(sim, "axi", rep.params, "sim.tb_verify", env=env, seed=rep.seed, tag=f"verify_{os.getpid()}")
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
        again = run_cocotb(sim, "axi", rep.params, "sim.tb_verify", env=env, seed=rep.seed,
                           tag=f"verify_{os.getpid()}_waves", waves=True)
        rep.waveform = again.waves
    return rep
