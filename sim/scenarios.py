"""Register-level scenarios on the register-bus tops, bit-exact against ``EmulatedCore``.

Each scenario is a script of register operations (:class:`mailpulse.sim.bulk_push.Op`) that the
register-bus harness runs from reset on :class:`mailpulse.hdl.tops.BusTop` (the SPI top's front end
and core, the register port on pins, as fast as the front end accepts accesses), and that
:func:`replay` runs on :class:`mailpulse.hdl.reference.EmulatedCore`; every read, every error
response and every wait for a result must agree (:func:`check`).  Reads that the model cannot
answer while the pipeline works (``STATUS`` activity bits, ``RESULT_*`` before the result) are
only made after a ``WAIT_QUIET`` or a ``WAIT_IRQ``.

The scenarios (:data:`SCENARIOS`), the cases bulk streaming does not reach:

``counter_wrap``
    the ``SAMPLES``/``ANOMALIES`` registers preset to just below 2**32 (the harness writes the
    core's counter registers, made ``public_flat_rw`` for Verilator: no RTL change, no 2**32
    samples), then pushes across the wrap, reading both counters after each; then
    ``CTRL.CLEAR_COUNTERS`` and more pushes.
``threshold_race``
    ``CTRL.COMMIT_THRESHOLD`` written 0, 1, ... latency + 4 clocks after a ``PUSH`` (while the
    pushed sample is in the core), with the shadow threshold on the other side of the sample's
    score: the model scores a push with the threshold active when ``PUSH`` was written.
``shadow_after_commit``
    ``CTRL.COMMIT`` written while a pushed sample is in the core (so the commit waits for it and
    its copy comes later), then at once shadow writes of a third model (weights, offsets, shifts,
    table entries, threshold): they must not reach the committed model, only the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import BusError, CoreConfig, EmulatedCore, model_writes, score
from mailpulse.hdl.regmap import RegisterMap

from .bulk_push import Op, OpCode, run_script

__all__ = ["SCENARIOS", "Script", "check", "replay", "run_scenario"]

#: Clocks a script waits for a result or a quiet core before it counts as a time-out.
WAIT_CLOCKS = 20000


class Script:
    """Builds a list of :class:`Op` by register name (addresses from the register map)."""

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        self.rm = RegisterMap(params)
        self.ops: list[Op] = []

    def add(self, code: OpCode, a: int = 0, b: int = 0, note: str = "") -> None:
        self.ops.append(Op(code, a, b, note))

    def write(self, name: str, value: int, index: int = 0, note: str = "") -> None:
        self.add(OpCode.WRITE, self.rm[name].address(index), value, note or f"write {name}[{index}]")

    def read(self, name: str, index: int = 0, note: str = "") -> None:
        self.add(OpCode.READ, self.rm[name].address(index), 0, note or f"read {name}")

    def ctrl(self, *fields: str, note: str = "") -> None:
        reg = self.rm["CTRL"]
        self.write("CTRL", sum(reg.field(f).mask for f in fields), note=note or f"CTRL {'|'.join(fields)}")

    def quiet(self, note: str = "wait until quiet") -> None:
        self.add(OpCode.WAIT_QUIET, WAIT_CLOCKS // 4, 0, note)

    def load(self, cfg: CoreConfig, commit: bool = True) -> None:
        """The model writes of ``cfg`` (then COMMIT and a wait until it is done)."""
        for addr, value in model_writes(self.rm, cfg):
            self.add(OpCode.WRITE, addr, value, f"load 0x{addr:04X}")
        if commit:
            self.ctrl("COMMIT")
            self.quiet()

    def push(self, x: npt.ArrayLike, tag: int, note: str = "") -> None:
        for d, v in enumerate(np.asarray(x).tolist()):
            self.write("FEATURE", int(v) & 0xFFFFFFFF, d)
        self.write("TAG", tag)
        self.write("PUSH", 1, note=note or f"PUSH tag {tag}")

    def result(self, note: str = "") -> None:
        """Wait for ``irq`` and read the result registers."""
        self.add(OpCode.WAIT_IRQ, WAIT_CLOCKS, 0, note or "wait for the result")
        for name in ("RESULT_SCORE", "RESULT_TAG", "RESULT_INFO"):
            self.read(name)

    def counters(self) -> None:
        self.quiet()
        self.read("SAMPLES")
        self.read("ANOMALIES")


Expected = tuple[int | None, int | None]


def replay(params: CoreParams, ops: list[Op]) -> list[Expected]:
    """What :class:`EmulatedCore` says each op records (None: not compared, e.g. clocks waited)."""
    emu = EmulatedCore(params)
    status = emu.regmap["STATUS"].address()
    out: list[Expected] = []
    for op in ops:
        if op.code is OpCode.WRITE:
            try:
                emu.write(op.a, op.b)
                out.append((0, 0))
            except BusError:
                out.append((0, 1))
        elif op.code is OpCode.READ:
            try:
                out.append((emu.read(op.a), 0))
            except BusError:
                out.append((0, 1))
        elif op.code is OpCode.WAIT_IRQ:
            out.append((None, 0 if emu.result is not None else 1))
        elif op.code is OpCode.PRESET:
            emu.samples, emu.anomalies = op.a & 0xFFFFFFFF, op.b & 0xFFFFFFFF
            out.append((0, 0))
        elif op.code is OpCode.WAIT_QUIET:
            out.append((emu.read(status), 0))
        else:
            out.append((0, 0))
    return out


def check(ops: list[Op], got: list[tuple[int, int]], want: list[Expected], limit: int = 5) -> list[str]:
    """The ops where the RTL's record differs from the model's, as sentences."""
    bad = []
    if len(got) != len(ops):
        return [f"the harness recorded {len(got)} of {len(ops)} operations"]
    for i, (op, g, w) in enumerate(zip(ops, got, want, strict=True)):
        if (w[0] is not None and g[0] != w[0]) or (w[1] is not None and g[1] != w[1]):
            bad.append(f"op {i} ({op.note}): the RTL recorded (0x{g[0]:X}, {g[1]}), the model says "
                       f"({'-' if w[0] is None else f'0x{w[0]:X}'}, {w[1]})")
            if len(bad) >= limit:
                break
    return bad


# -- the scenarios --------------------------------------------------------------------------------
def _cfg(p: CoreParams, rng: np.random.Generator) -> CoreConfig:
    return CoreConfig.random(p, rng)


def _sample(p: CoreParams, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    return rng.integers(p.in_min, p.in_max + 1, size=p.d)


def counter_wrap(p: CoreParams, rng: np.random.Generator, latency: int) -> Script:
    s = Script(p)
    cfg = _cfg(p, rng)
    cfg.threshold = 0            # nearly every sample flagged: ANOMALIES wraps too
    cfg.tables = np.maximum(cfg.tables, 1)
    s.load(cfg)
    s.add(OpCode.PRESET, 0xFFFFFFFD, 0xFFFFFFFE, "preset SAMPLES/ANOMALIES")
    s.counters()
    for _ in range(5):
        s.push(_sample(p, rng), int(rng.integers(0, 1 << 32)))
        s.result()
        s.counters()
    s.ctrl("CLEAR_COUNTERS")
    s.counters()
    s.add(OpCode.PRESET, 0xFFFFFFFF, 0xFFFFFFFF, "preset both to 2**32 - 1")
    s.push(_sample(p, rng), 7)
    s.result()
    s.counters()
    return s


def threshold_race(p: CoreParams, rng: np.random.Generator, latency: int) -> Script:
    s = Script(p)
    cfg = _cfg(p, rng)
    x = _sample(p, rng)
    sc = int(score(p, cfg, x[None, :]).score[0])
    if sc == 0:
        cfg.tables = np.maximum(cfg.tables, 1)
        sc = int(score(p, cfg, x[None, :]).score[0])
    cfg.threshold = sc - 1
    s.load(cfg)
    for delay in range(latency + 5):
        for active, shadow in ((sc - 1, sc), (sc, sc - 1)):     # flagged -> not, and not -> flagged
            s.write("THRESHOLD", active)
            s.ctrl("COMMIT_THRESHOLD")
            s.write("THRESHOLD", shadow)
            s.push(x, delay, note=f"PUSH, COMMIT_THRESHOLD {delay} clocks later")
            if delay:      # the CTRL write's request is taken in the clock of the PUSH's response
                s.add(OpCode.IDLE, delay)
            s.ctrl("COMMIT_THRESHOLD", note=f"COMMIT_THRESHOLD {delay} clocks after PUSH (active {active} -> {shadow})")
            s.result(note=f"result of the push raced by COMMIT_THRESHOLD at {delay}")
            s.read("THRESHOLD_ACTIVE")
    s.counters()
    return s


def shadow_after_commit(p: CoreParams, rng: np.random.Generator, latency: int) -> Script:
    s = Script(p)
    a, b, c = _cfg(p, rng), _cfg(p, rng), _cfg(p, rng)
    s.load(a)
    s.load(b, commit=False)             # B in the shadow model
    cw = model_writes(s.rm, c)
    tables = [w for w in cw if w[0] >= s.rm["TABLE"].offset]
    others = [w for w in cw if w[0] < s.rm["TABLE"].offset]
    picked = others + [tables[int(i)] for i in rng.choice(len(tables), size=min(len(tables), 64), replace=False)]
    for delay in (0, 1, latency // 2):
        s.push(_sample(p, rng), 100 + delay, note="PUSH (scored with the active model)")
        if delay:
            s.add(OpCode.IDLE, delay)
        s.ctrl("COMMIT", note=f"COMMIT {delay} clocks after PUSH: waits for the pushed sample")
        for addr, value in picked:     # between COMMIT and its copy: must land in the next shadow
            s.add(OpCode.WRITE, addr, value, f"shadow write 0x{addr:04X} right after COMMIT")
        s.result(note="result of the push before the commit")
        s.quiet()
        for _ in range(3):              # scored with the committed model, not with the writes after COMMIT
            s.push(_sample(p, rng), int(rng.integers(0, 1 << 32)), note="PUSH after the commit")
            s.result()
        for k in range(p.k):
            s.read("WEIGHTS", k)
            s.read("OFFSET", k)
            s.read("SHIFT", k)
        s.read("THRESHOLD")
        s.read("THRESHOLD_ACTIVE")
        s.read("STATUS")
    s.ctrl("COMMIT")                    # the writes after the first COMMIT take effect now
    s.quiet()
    for _ in range(3):
        s.push(_sample(p, rng), int(rng.integers(0, 1 << 32)), note="PUSH after the last commit")
        s.result()
    s.counters()
    return s


#: Scenario name -> builder (params, rng, the core's latency) -> :class:`Script`.
SCENARIOS: dict[str, Callable[[CoreParams, np.random.Generator, int], Script]] = {
    "counter_wrap": counter_wrap,
    "threshold_race": threshold_race,
    "shadow_after_commit": shadow_after_commit,
}


@dataclass
class ScenarioResult:
    name: str
    ops: int
    cycles: int
    mismatches: list[str]


def core_latency(exe: Path, params: CoreParams, workdir: Path) -> int:
    """The core's latency, as its ``LATENCY`` register says (the scenarios time their races by it)."""
    got, _ = run_script(exe, [Op(OpCode.READ, RegisterMap(params)["LATENCY"].address())], workdir)
    return got[0][0]


def run_scenario(exe: Path, params: CoreParams, name: str, seed: int, workdir: Path,
                 latency: int | None = None, trace: Path | None = None) -> ScenarioResult:
    """Build scenario ``name`` from ``seed``, run it on the harness ``exe`` and check it."""
    if latency is None:
        latency = core_latency(exe, params, workdir)
    script = SCENARIOS[name](params, np.random.default_rng([seed, sum(name.encode())]), latency)
    got, summary = run_script(exe, script.ops, workdir, seed, trace)
    return ScenarioResult(name, len(script.ops), summary.get("cycles", 0),
                          check(script.ops, got, replay(params, script.ops)))
