"""Bulk verification: millions of random samples through the RTL, compared with the model.

``verify(set, samples=N, configs=M, seed=S, core=C)`` draws M configurations and N samples for
each, all from ``numpy.random.default_rng([S, config_index])`` so that any case can be regenerated
from (seed, config index): ordinary random ones (:meth:`mailpulse.hdl.reference.CoreConfig.random`,
:func:`mailpulse.sim.codec.random_beats`) and, for every odd index by default (``adversarial``:
``mixed``, ``only`` or ``off``), adversarial ones (:mod:`mailpulse.sim.adversarial`).  Every third
configuration presets the ``SAMPLES``/``ANOMALIES`` counters just below 2**32 so that they wrap
during its samples.  Each result (score, flag, argmax, tag, tlast, the result bits that must be 0)
and the counters are compared exactly with :func:`mailpulse.hdl.reference.score`.  A set with
route intervals (``<set>-r<R>``, :func:`mailpulse.hdl.params.get_params`) also gets random route
events (:func:`mailpulse.hdl.reference.random_route_events`: ids past R, extreme latencies), a
random :class:`~mailpulse.hdl.reference.RouteConfig` (one configuration in eight disabled) and
bounds seeded through ``ROUTE_BOUND`` before the samples (one in sixteen above the cap); each
result's below/above flags are compared with :func:`mailpulse.hdl.reference.route_intervals`.

The cores (:data:`CORES`): ``streaming`` (the Zynq AXI top, DSP projections), ``lut`` (the same
top with LUT projections, as the ECP5 carries them), ``folded`` (the iCE40 SPI top's folded core
and register front end) and ``spi-stream`` (the ECP5 SPI top's push-only pipelined core).  The AXI
tops load each configuration over AXI4-Lite and stream the samples at one per clock with
occasional idle cycles and back-pressure; the SPI tops' core and front end are driven through the
front end's register port (:class:`mailpulse.hdl.tops.BusTop`: the SPI top without its SPI
bridge), each sample pushed with ``FEATURE``/``TAG``/``PUSH`` and its result read from
``RESULT_*`` (:mod:`mailpulse.sim.bulk_push`).

Two engines:

* ``verilator`` (default): the C++ harnesses ``sim/harness/bulk.cpp`` (AXI tops) and
  ``sim/harness/bus.cpp`` (register-bus tops), built by :mod:`mailpulse.sim.verilated` into
  ``build/sim/bulk/<set>[-<top>]/`` (no tracing, one eval per clock).  ``jobs`` configurations
  run at once (default: one per core); each worker thread generates its case, starts the harness,
  scores the case with the model while the harness runs, then compares the raw result words.
  When a configuration mismatches, it is re-run (up to 256 samples past the first mismatch) on a
  second, traced build with the VCD on from 64 samples before it, and the report names the VCD.
* ``icarus``: the cocotb bench (``mailpulse.sim.tb_verify``) on Icarus, AXI tops only (no
  counter preset), which also reads ``THRESHOLD_ACTIVE``/``THRESHOLD_FRAC`` after each
  configuration and reports what its samples reach (:attr:`VerifyReport.reached`); a few thousand
  samples/s, for small N.
"""

from __future__ import annotations

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
from mailpulse.hdl.beats import RESULT_BEAT, RESULT_BYTES, result_beat, sample_beat, sample_bytes
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    LATENCY_BITS,
    AdaptConfig,
    CoreConfig,
    RouteConfig,
    ScoreResult,
    model_writes,
    random_route_events,
    route_intervals,
    route_seed,
    score,
)
from mailpulse.hdl.regmap import RegisterMap

from . import bulk_push as bp
from .adversarial import KINDS, adversarial_case
from .codec import StreamResults, beat_fields, compare, pack_samples, random_beats, unpack_results
from .rtl import build_root
from .runner import run_cocotb
from .verilated import (
    BULK_VERILATOR_ARGS,
    FAST_BUILD_ARGS,
    HARNESS_TOPS,
    TRACE_BUILD_ARGS,
    build_harness,
    harness_dir,
    harness_header,
    verilate_harness,
)

__all__ = ["ADAPT_AT", "ADAPT_EVERY", "ADVERSARIAL", "BULK_VERILATOR_ARGS", "CORES", "FAST_BUILD_ARGS",
           "TRACE_BUILD_ARGS", "Case", "Mismatch", "VerifyReport", "adaptive_config", "build_harness", "case_kind",
           "check_case", "config_writes", "harness_dir", "harness_header", "make_case", "verify", "verilate_harness"]

#: (idle, back-pressure) in permille, by configuration index (cycled).
STRESS = [(0, 0), (50, 0), (0, 50), (200, 300), (0, 0), (20, 20)]
#: ``--core`` -> (the harness top of :data:`mailpulse.sim.verilated.HARNESS_TOPS`, what ships it).
CORES = {
    "streaming": ("axi", "the Zynq AXI top: streaming core, DSP projections"),
    "lut": ("axi_lut", "the streaming core with LUT projections (AXITop(dsp=False)), as the ECP5 carries them"),
    "folded": ("bus", "the iCE40 SPI top's folded core and register front end"),
    "spi-stream": ("bus_stream", "the ECP5 SPI top's push-only pipelined core and register front end"),
}
#: ``adversarial`` settings: every odd configuration index, every configuration, none.
ADVERSARIAL = ("mixed", "only", "off")
#: Every PRESET_EVERY-th configuration (index % PRESET_EVERY == PRESET_EVERY - 1) presets the counters.
PRESET_EVERY = 3
#: Configurations with ``index % ADAPT_EVERY`` in :data:`ADAPT_AT` run with the adaptive threshold
#: enabled (:meth:`mailpulse.hdl.reference.AdaptConfig.random`, drawn from ``[seed, index, 2]``).
ADAPT_EVERY = 4
ADAPT_AT = (2, 3)


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
    #: The samples and tags as packed ``s_axis`` beats (:func:`mailpulse.sim.codec.random_beats`).
    beats: npt.NDArray[np.int16] | None = None
    #: ``random`` or the adversarial recipe (:data:`mailpulse.sim.adversarial.KINDS`).
    kind: str = "random"
    #: (SAMPLES, ANOMALIES) preset into the counters before the samples (the test of the wrap).
    preset: tuple[int, int] = (0, 0)
    #: With routes: each sample's route id and latency (views of ``beats`` when it is there).
    routes: npt.NDArray[np.integer[Any]] | None = None
    latencies: npt.NDArray[np.integer[Any]] | None = None
    #: With routes: the ``ROUTE_BOUND`` values written before the samples (element 2r + side).
    bound_writes: list[int] = field(default_factory=list)

    def counters(self, anomalies: int) -> tuple[int, int]:
        """The counters after the samples, ``anomalies`` of them flagged (32-bit, wrapping), as
        :class:`mailpulse.hdl.reference.EmulatedCore` counts them."""
        return (self.preset[0] + len(self.x)) & 0xFFFFFFFF, (self.preset[1] + anomalies) & 0xFFFFFFFF


def case_kind(index: int, adversarial: str = "mixed") -> str:
    """``random`` or the adversarial recipe of configuration ``index``."""
    if adversarial not in ADVERSARIAL:
        raise ValueError(f"unknown adversarial setting {adversarial!r}; use one of {', '.join(ADVERSARIAL)}")
    if adversarial == "only":
        return KINDS[index % len(KINDS)]
    if adversarial == "mixed" and index % 2 == 1:
        return KINDS[(index // 2) % len(KINDS)]
    return "random"


def make_case(params: CoreParams, seed: int, index: int, n: int, adversarial: str = "mixed",
              presets: bool = True) -> Case:
    """Configuration ``index`` of ``seed``: a random :class:`CoreConfig` and ``n`` random samples
    and tags (:func:`mailpulse.sim.codec.random_beats`), or an adversarial configuration and samples
    (:func:`case_kind`, :func:`mailpulse.sim.adversarial.adversarial_case`); ``tlast`` on about
    one sample in 64 and on the last; with ``presets``, every :data:`PRESET_EVERY`-th configuration
    presets the counters so that both wrap within the first ``n`` samples when enough are flagged
    (SAMPLES always); configurations at :data:`ADAPT_AT` modulo :data:`ADAPT_EVERY` adapt their
    threshold."""
    rng = np.random.default_rng([seed, index])
    kind = case_kind(index, adversarial)
    if kind == "random":
        cfg = CoreConfig.random(params, rng)
        beats = random_beats(params, rng, n)
        x, tags = beat_fields(params, beats)    # views: mailpulse.hdl.reference.score widens each chunk to int64
    else:
        cfg, xa = adversarial_case(params, rng, n, kind)
        beats = random_beats(params, rng, n)    # the tags; the features are replaced
        x, tags = beat_fields(params, beats)
        x[...] = xa
    tlast = (rng.integers(0, 64, size=n, dtype=np.uint8) == 0).view(np.uint8)
    if n:
        tlast[-1] = 1
    if index % ADAPT_EVERY in ADAPT_AT:
        adaptive_config(params, cfg, x, np.random.default_rng([seed, index, 2]))
    idle, bp = STRESS[index % len(STRESS)]
    preset = (0, 0)
    if presets and index % PRESET_EVERY == PRESET_EVERY - 1:
        pr = np.random.default_rng([seed, index, 1])
        preset = ((1 << 32) - int(pr.integers(1, max(2, n))), (1 << 32) - int(pr.integers(1, max(2, n // 16))))
    case = Case(index, cfg, x, tags, tlast, idle, bp, beats, kind, preset)
    if params.r:
        route_case(params, case, np.random.default_rng([seed, index, 3]))
    return case


def route_case(params: CoreParams, case: Case, rng: np.random.Generator) -> None:
    """The route part of ``case`` (a core with routes): random events written into its beats, a
    random route configuration (one in eight disabled), every bound seeded near the events'
    latencies (one seed in sixteen anywhere up to 2**24 - 1, past the cap)."""
    n = len(case.x)
    routes, lats = random_route_events(rng, n, params.r)
    assert case.beats is not None
    lay = sample_beat(params)
    raw = case.beats.view(np.uint8).reshape(-1, sample_bytes(params))
    case.routes, case.latencies = lay.view(raw, "route"), lay.view(raw, "latency")
    case.routes[...] = routes
    case.latencies[...] = lats
    case.cfg.routes = RouteConfig.random(rng)
    if rng.random() < 0.125:
        case.cfg.routes.enable = 0
    writes = []
    for _ in range(params.r):
        lo = int(rng.integers(0x0200, 0x1000)) << ADAPT_FRAC | int(rng.integers(0, 1 << ADAPT_FRAC))
        writes += [lo, lo + (int(rng.integers(0, 0x0C00)) << ADAPT_FRAC)]
    wild = rng.random(2 * params.r) < 0.0625
    case.bound_writes = [int(rng.integers(0, 1 << (LATENCY_BITS + ADAPT_FRAC))) if w else v
                         for v, w in zip(writes, wild, strict=True)]


def expected(params: CoreParams, case: Case) -> ScoreResult:
    """The model's results of ``case``: :func:`mailpulse.hdl.reference.score`, and with routes
    the flags of :func:`mailpulse.hdl.reference.route_intervals` from the seeded bounds."""
    exp = score(params, case.cfg, case.x, case.tags)
    if params.r:
        b = [route_seed(v) for v in case.bound_writes]
        ri = route_intervals(case.routes if case.routes is not None else [], case.latencies
                             if case.latencies is not None else [], b[0::2], b[1::2], case.cfg.routes)
        exp.below, exp.above = ri.below, ri.above
    return exp


def adaptive_config(params: CoreParams, cfg: CoreConfig, x: npt.ArrayLike, rng: np.random.Generator) -> None:
    """Turn on ``cfg``'s adaptive threshold so that it moves on samples like ``x``: mostly clamps
    between quantiles of the (fixed-model) scores of the first samples, the seed at another quantile,
    steps that cross the score spread in about a thousand samples; else any register values
    (:meth:`mailpulse.hdl.reference.AdaptConfig.random`)."""
    if rng.random() < 0.25:
        cfg.adapt = AdaptConfig.random(rng, params.score_bits)
        return
    s = score(params, cfg, np.asarray(x)[:4096]).score
    if not len(s):
        return
    lo_q, hi_q = rng.uniform(0.0, 0.5), rng.uniform(0.5, 1.0)
    t_min, t_max = (int(v) for v in np.quantile(s, [lo_q, hi_q]))
    spread = max(1.0, float(np.std(s)))
    step = int(np.clip(round(np.log2(spread * 256 / 1000)) + rng.integers(-3, 4), 0, 15))
    cfg.adapt = AdaptConfig(1, int(rng.integers(1, 9)), step, t_min, t_max + int(rng.integers(0, 3)))
    cfg.threshold = int(np.quantile(s, rng.uniform(0.05, 0.95)))


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
    #: ``--core`` (:data:`CORES`) and the ``adversarial`` setting.
    core: str = "streaming"
    adversarial: str = "mixed"
    #: Configurations run, by kind (``random`` or an adversarial recipe).
    kinds: dict[str, int] = field(default_factory=dict)
    #: The icarus engine: per configuration index, the events its samples reach in the model
    #: (:func:`mailpulse.sim.plans.reached`, e.g. the adaptive threshold clamped at ``T_MAX``).
    reached: dict[int, list[str]] = field(default_factory=dict)
    #: With routes: events compared, of them on a tracked route (id < R, intervals enabled), and
    #: the model's below/above flags among them (every one compared with the RTL's).
    route_events: int = 0
    route_tracked: int = 0
    route_below: int = 0
    route_above: int = 0

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
        routes = (f" (route intervals: {self.route_events} events, {self.route_tracked} tracked, "
                  f"{self.route_below} below, {self.route_above} above)" if self.route_events else "")
        return f"verified {self.samples} samples x {self.configs} configs{routes}: {len(self.mismatches)} mismatches"


def describe(case: Case, exp: ScoreResult, got: ScoreResult, i: int) -> str:
    """One mismatch: the inputs of sample ``i`` of ``case`` (its recipe), expected and actual outputs."""
    stream = isinstance(got, StreamResults)

    def flags(r: ScoreResult) -> str:
        return f" (below, above)=({int(r.below[i])}, {int(r.above[i])})" if r.below is not None and \
            r.above is not None and i < len(r.below) else ""

    route = (f" route={int(case.routes[i])} latency={int(case.latencies[i])}"
             if case.routes is not None and case.latencies is not None else "")
    return (f"config {case.index} ({case.kind}) sample {i}: x={case.x[i].tolist()} tag={int(case.tags[i])}"
            + route + (f" tlast={int(case.tlast[i])}" if stream else "")
            + f" expected (score, anomaly, argmax, tag)={exp.row(i)}{flags(exp)} "
            + f"got {got.row(i) if i < len(got) else 'nothing'}{flags(got)}"
            + (f" tlast={int(got.tlast[i])}" if isinstance(got, StreamResults) and i < len(got) else ""))


def check_case(params: CoreParams, case: Case, got: StreamResults, counters: tuple[int, int] | None,
               limit: int = 5, exp: ScoreResult | None = None) -> list[Mismatch]:
    """Compare RTL results of one case with the model (``exp``: the model's results, when known)."""
    if exp is None:
        exp = expected(params, case)
    out = [Mismatch(case.index, i, describe(case, exp, got, i)) for i in compare(exp, got, limit)]
    if len(out) < limit and len(got) == len(case.x):
        bad_tl = np.flatnonzero(np.asarray(got.tlast) != case.tlast)[: limit - len(out)]
        out += [Mismatch(case.index, int(i), "tlast not carried: " + describe(case, exp, got, int(i))) for i in bad_tl]
    if got.stray_bits:
        out.append(Mismatch(case.index, -1,
                            f"config {case.index}: result bits outside the fields: 0x{got.stray_bits:x}"))
    if counters is not None:
        want = case.counters(int(exp.anomaly.sum()))
        if tuple(counters) != want:
            out.append(Mismatch(case.index, -1, f"config {case.index}: SAMPLES/ANOMALIES read {counters}, "
                                                f"the model says {want}"))
    return out


# -- the Verilator harness of the AXI tops ---------------------------------------------------------
def config_writes(regmap: RegisterMap, cfg: CoreConfig, bound_writes: list[int] | None = None
                  ) -> list[tuple[int, int]]:
    """The AXI4-Lite writes that load and commit ``cfg`` (with routes, then seed the bounds)."""
    ctrl = regmap["CTRL"]
    seeds = [(regmap["ROUTE_BOUND"].address(i), v) for i, v in enumerate(bound_writes or [])]
    return [*model_writes(regmap, cfg), (ctrl.address(), ctrl.field("COMMIT").mask), *seeds]


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

    def results(self, params: CoreParams | None = None) -> StreamResults:
        return unpack_results(self.words.tobytes(), self.tlast, params)


def _start_harness(exe: Path, params: CoreParams, case: Case, workdir: Path, seed: int,
                   trace: Path | None = None, n: int | None = None,
                   trace_from: int = 0) -> tuple[subprocess.Popen[str], float]:
    rm = RegisterMap(params)
    n = len(case.x) if n is None else n
    np.array(config_writes(rm, case.cfg, case.bound_writes), dtype="<u4").tofile(workdir / "writes.bin")
    if case.beats is not None:
        case.beats[:n].tofile(workdir / "samples.bin")
    else:
        (workdir / "samples.bin").write_bytes(pack_samples(params, case.x[:n], case.tags[:n],
                                                           case.routes, case.latencies))
    case.tlast[:n].astype(np.uint8).tofile(workdir / "tlast.bin")
    cmd = [str(exe), str(workdir / "writes.bin"), str(workdir / "samples.bin"), str(workdir / "tlast.bin"), str(n),
           str(workdir / "results.bin"), str(workdir / "rtlast.bin"), str(seed * 1000 + case.index),
           str(case.idle), str(case.backpressure), str(case.preset[0]), str(case.preset[1])] + (
               [str(trace), str(trace_from)] if trace else [])
    return bp.start_harness(cmd)


def _finish_harness(proc: subprocess.Popen[str], t0: float, workdir: Path) -> HarnessRun:
    out, dt = bp.wait_harness(proc, t0, "bulk harness")
    words = np.fromfile(workdir / "results.bin", dtype="<u4")
    w = RESULT_BYTES // 4
    m = len(words) // w
    tl = np.fromfile(workdir / "rtlast.bin", dtype=np.uint8)[:m]
    run = HarnessRun(words[: m * w].reshape(m, w), tl, (-1, -1), dt)
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
    return run.results(params), run.counters, run.seconds


def bad_beats(exp: ScoreResult, words: npt.NDArray[np.uint32], rtlast: npt.ArrayLike,
              tlast: npt.ArrayLike, params: CoreParams | None = None) -> npt.NDArray[np.intp]:
    """Indices of the result beats (N x 32-bit words) that differ from ``exp`` in any bit, tlast included.

    Field by field on the raw beats (:func:`mailpulse.hdl.beats.result_beat` of ``params``; with
    routes the below/above flags too), and no bit set outside the fields.  Equivalent to
    :func:`check_case` finding nothing (same lengths assumed), without unpacking the beats into a
    :class:`~mailpulse.sim.codec.StreamResults`.
    """
    lay = RESULT_BEAT if params is None else result_beat(params)
    beats = lay.beats(words)
    bad = lay.get(beats, "score") != exp.score
    bad |= lay.get(beats, "tag") != exp.tag
    bad |= lay.get(beats, "argmax") != exp.argmax
    bad |= lay.get(beats, "anomaly") != exp.anomaly
    if params is not None and params.r:
        bad |= (lay.get(beats, "below") != exp.below) | (lay.get(beats, "above") != exp.above)
    bad |= lay.stray(beats)
    bad |= np.asarray(rtlast) != np.asarray(tlast)
    return np.flatnonzero(bad)


def _check_run(params: CoreParams, case: Case, exp: ScoreResult, run: HarnessRun) -> list[Mismatch]:
    """Exact comparison of one harness run with the model; the detailed report only on a difference."""
    want = case.counters(int(exp.anomaly.sum()))
    if len(run.words) == len(case.x) and run.counters == want \
            and not len(bad_beats(exp, run.words, run.tlast, case.tlast, params)):
        return []
    bad = check_case(params, case, run.results(params), run.counters, exp=exp)
    return bad or [Mismatch(case.index, -1, f"config {case.index}: the results differ from the model")]


def _check_push(params: CoreParams, case: Case, exp: ScoreResult, run: bp.PushRun) -> list[Mismatch]:
    """Exact comparison of one register-bus harness run with the model (results and counters)."""
    want = case.counters(int(exp.anomaly.sum()))
    n = len(case.x)
    bad_i = bp.bad_rows(params, exp, run.words) if len(run.words) == n else np.array([], dtype=np.intp)
    if len(run.words) == n and run.counters == want and not len(bad_i):
        return []
    got = bp.push_results(params, run.words)
    idx = [int(i) for i in bad_i[:5]] if len(run.words) == n else compare(exp, got)
    out = [Mismatch(case.index, i, describe(case, exp, got, i)) for i in idx]
    if run.counters != want:
        out.append(Mismatch(case.index, -1, f"config {case.index}: SAMPLES/ANOMALIES read {run.counters}, "
                                            f"the model says {want}"))
    return out or [Mismatch(case.index, -1, f"config {case.index}: the results differ from the model")]


def _run_case(harness: str, exe: Path, params: CoreParams, case: Case, wd: Path, seed: int, *,
              exp: ScoreResult | None = None, trace: Path | None = None, n: int | None = None,
              trace_from: int = 0) -> tuple[list[Mismatch], float, int, tuple[int, int, int, int]]:
    """One case through the harness (``bulk``: AXI tops, ``bus``: register-bus tops), compared
    with the model (scored while the harness runs when ``exp`` is None).  Returns the mismatches,
    the harness' seconds, its comb outputs and the route counts (events, tracked, below, above)."""
    n = len(case.x) if n is None else n
    if harness == "bus":
        proc, t0 = bp.start_bulk(exe, params, config_writes(RegisterMap(params), case.cfg, case.bound_writes),
                                 case.x[:n], case.tags[:n], wd, seed * 1000 + case.index, case.idle, case.preset,
                                 trace, trace_from, routes=None if case.routes is None else case.routes[:n],
                                 latencies=None if case.latencies is None else case.latencies[:n])
    else:
        proc, t0 = _start_harness(exe, params, case, wd, seed, trace, n, trace_from)
    try:
        if exp is None:
            exp = expected(params, case)  # while the harness runs
    finally:
        run: bp.PushRun | HarnessRun = bp.finish_bulk(proc, t0, wd) if harness == "bus" else \
            _finish_harness(proc, t0, wd)
    bad = _check_push(params, case, exp, run) if isinstance(run, bp.PushRun) else _check_run(params, case, exp, run)
    counts = (0, 0, 0, 0)
    if exp.below is not None and exp.above is not None and case.routes is not None:
        tracked = int((np.asarray(case.routes[:n]) < params.r).sum()) if case.cfg.routes.enable else 0
        counts = (n, tracked, int(exp.below[:n].sum()), int(exp.above[:n].sum()))
    return bad, run.seconds, run.comb_outputs, counts


def verify(params_name: str, samples: int, configs: int, seed: int = 1, simulator: str = "verilator",
           log: Callable[[str], None] | None = None, jobs: int | None = None, core: str = "streaming",
           adversarial: str = "mixed") -> VerifyReport:
    """Run ``configs`` configurations x ``samples`` samples through the RTL of ``core``
    (:data:`CORES`), ``adversarial`` (:data:`ADVERSARIAL`) choosing which configurations are
    adversarial (:func:`case_kind`).

    Verilator: ``jobs`` (default: one per core) worker threads; each generates a case, starts its
    harness process, scores the case with the model while the harness runs, then compares.  The
    first configuration (in index order) with a mismatch stops the run and is re-run with tracing
    to write a VCD around its first mismatch.
    """
    params = get_params(params_name)
    if samples < 1 or configs < 1:
        raise ValueError("samples and configs must be at least 1")
    if core not in CORES:
        raise ValueError(f"unknown core {core!r}; known cores: {', '.join(CORES)}")
    case_kind(0, adversarial)   # checks the setting
    top = CORES[core][0]
    rep = VerifyReport(params_name, samples, configs, seed, simulator, core=core, adversarial=adversarial)
    if simulator == "icarus":
        if HARNESS_TOPS[top][1] != "bulk":
            raise ValueError(f"the icarus engine drives the AXI tops only (--core streaming or lut), not {core}")
        return _verify_cocotb(rep, "icarus", top)
    if simulator != "verilator":
        raise ValueError(f"unknown simulator {simulator!r}; use verilator or icarus")
    harness = HARNESS_TOPS[top][1]
    exe = build_harness(params, top=top)
    base = build_root() / "bulk" / "runs"
    base.mkdir(parents=True, exist_ok=True)
    # One harness process per configuration, as many at once as there are cores: the harnesses are
    # independent processes, so the bulk rate scales with the machine.
    n_jobs = max(1, min(configs, jobs or os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)

        def run_one(c: int) -> tuple[list[Mismatch], float, int, str, tuple[int, int, int, int]]:
            # returns only small things: the futures keep their results until the end
            case = make_case(params, seed, c, samples, adversarial)
            wd = work / f"config{c}"
            wd.mkdir()
            bad, seconds, comb, counts = _run_case(harness, exe, params, case, wd, seed)
            if not bad:
                shutil.rmtree(wd)
            return bad, seconds, comb, case.kind, counts

        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = resource.getrusage(resource.RUSAGE_SELF)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = [pool.submit(run_one, c) for c in range(configs)]
            for c, fut in enumerate(futures):
                bad, seconds, comb, kind, counts = fut.result()
                rep.route_events += counts[0]
                rep.route_tracked += counts[1]
                rep.route_below += counts[2]
                rep.route_above += counts[3]
                rep.sim_seconds += seconds
                rep.comb_outputs += comb
                rep.kinds[kind] = rep.kinds.get(kind, 0) + 1
                if log:
                    log(f"config {c} ({kind}): {samples} samples in {seconds:.2f} s, {len(bad)} mismatches")
                if bad:
                    for f in futures:
                        f.cancel()
                    rep.mismatches += bad
                    first = min([m.index for m in bad if m.index >= 0] or [samples])
                    name = f"fail_{core}_{params_name}_seed{seed}_config{c}.vcd"
                    wave = harness_dir(params_name, top=top).parent / name
                    _run_case(harness, build_harness(params, trace=True, top=top), params,
                              make_case(params, seed, c, samples, adversarial), work / f"config{c}", seed,
                              trace=wave, n=min(samples, first + 256), trace_from=max(0, first - 64))
                    rep.waveform = wave
                    break
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        rep.wall_seconds = time.perf_counter() - t0
        rep.sim_cpu_seconds = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        rep.cpu_seconds = rep.sim_cpu_seconds + (s1.ru_utime - s0.ru_utime) + (s1.ru_stime - s0.ru_stime)
        rep.jobs = n_jobs
    return rep


def _verify_cocotb(rep: VerifyReport, sim: str, top: str) -> VerifyReport:
    out = build_root() / "bulk" / f"cocotb_{sim}_{rep.params}_{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"MAILPULSE_SIM_SAMPLES": str(rep.samples), "MAILPULSE_SIM_CONFIGS": str(rep.configs),
           "MAILPULSE_SIM_REPORT": str(out), "MAILPULSE_SIM_ADVERSARIAL": rep.adversarial}
    t0 = time.perf_counter()
    res = run_cocotb(sim, top, rep.params, "mailpulse.sim.tb_verify", env=env, seed=rep.seed,
                     tag=f"verify_{os.getpid()}")
    rep.sim_seconds = time.perf_counter() - t0
    if res.ok:
        shutil.rmtree(res.results_xml.parent, ignore_errors=True)
    if out.exists():
        data = json.loads(out.read_text())
        out.unlink()
        rep.mismatches = [Mismatch(m["config"], m["index"], m["text"]) for m in data["mismatches"]]
        rep.reached = {int(c): list(ev) for c, ev in data.get("reached", {}).items()}
        rep.route_events, rep.route_tracked, rep.route_below, rep.route_above = data.get("routes", (0, 0, 0, 0))
    if not res.ok and not rep.mismatches:
        rep.mismatches = [Mismatch(-1, -1, f"cocotb run failed: {res.failed}")]
    if rep.mismatches:
        again = run_cocotb(sim, top, rep.params, "mailpulse.sim.tb_verify", env=env, seed=rep.seed,
                           tag=f"verify_{os.getpid()}_waves", waves=True)
        rep.waveform = again.waves
    return rep
