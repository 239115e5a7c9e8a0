"""The register map of the mailpulse scorer, declared once.

Everything that needs an address takes it from here: the Amaranth register front end
(``hdl/``), the AXI4-Lite and SPI bridges, the PYNQ driver and its ``.hwh``, the host bridge,
the generated ``docs/registers.md`` and the machine-readable ``regmap.json``.  No other file in
the project may spell an offset as a number.

Pure Python, no Amaranth import.  Byte addresses, 32-bit registers, little-endian fields.

Each register declares its :class:`Kind`, and the front end (:mod:`mailpulse.hdl.regs`) follows the
kind, the way amaranth-soc's ``csr.Register`` fields carry their action; reset values are
computed from the fields' declared resets.  The same over AXI4-Lite and SPI:

* ``CONST`` (read-only) - reads its reset value (identification and parameters).
* ``STATUS`` (read-only) - each field reads a live value of the core or the front end.
* ``STORAGE`` (read-write) - the value written is stored in the register's field widths (upper
  bits of a signed field are the sign, see each field); a read returns it, sign-extended for a
  register with one signed field.
* ``ACTION`` (write-only) - each field is a strobe: writing 1 to it does its action once; the
  register reads 0.
* ``PUSH`` (write-only) - any write sends the register's ``operands`` as one sample; the write, and
  a write to an operand or to a ``LIVE`` register, waits while a pushed sample is pending or in
  the pipeline (the sample's route event comes before a seed, as in the model).
* A write to a ``shadow`` register (or the ``TABLE`` window), and a write of ``CTRL.COMMIT``, waits
  while a commit is pending: a commit takes the shadow model exactly as it was when COMMIT was
  written.
* No access waits longer than :data:`WAIT_LIMIT` cycles: then it is answered with an error (AXI
  ``SLVERR``; ``STATUS.BUS_ERROR`` set) and does nothing.  Only a stalled result stream makes a
  wait that long (a pushed sample or a commit cannot get through a full pipeline); reads never
  wait for it, so ``STATUS`` always answers.
* ``WINDOW`` (write-only) - a memory window: entry ``i`` of the memory is at ``offset + 4 * i``.
* ``LIVE`` (read-write) - element ``i`` reads a live value of the core (one the core itself
  updates, such as a route bound) and a write seeds it: the core takes the value written (in the
  field's width; the core may cap it, see the register) and goes on from there.  Not shadow: a
  seed takes effect at once, between two events.
* Read-only registers answer writes with an error (AXI ``SLVERR``; SPI sets
  ``STATUS.BUS_ERROR``); write-only registers read 0 without error.
* Any address not declared here answers with an error (AXI ``SLVERR``; SPI ``BUS_ERROR``) and
  reads as 0.
* ``shadow`` registers (and the whole ``TABLE`` window) are written into the shadow model; the
  core scores with the active model until ``CTRL.COMMIT`` swaps them between two samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from typing import Literal

from .params import CoreParams

Access = Literal["RO", "RW", "WO"]


class Kind(Enum):
    """What a register does; the front end's behaviour and the bus access follow from it."""

    #: Read-only; reads its reset value.
    CONST = "const"
    #: Read-only; each field reads a live value.
    STATUS = "status"
    #: Read-write storage.
    STORAGE = "storage"
    #: Write-only; each field is a strobe, fired by writing 1.
    ACTION = "action"
    #: Write-only; any write sends the register's operands as one sample.
    PUSH = "push"
    #: Write-only memory window.
    WINDOW = "window"
    #: Read-write: reads a live value of the core; a write seeds it.
    LIVE = "live"

    @property
    def access(self) -> Access:
        """The bus access of the kind (the ``.hwh`` and the Vivado IP use these words)."""
        if self in (Kind.CONST, Kind.STATUS):
            return "RO"
        return "RW" if self in (Kind.STORAGE, Kind.LIVE) else "WO"

#: Value of the ``ID`` register: ASCII "MPLS".
CORE_ID = 0x4D504C53
#: Version of the core and of this register map: (major, minor, patch).  Still 1.1.0 with the
#: route intervals: a core without them (R = 0) has the same map (``PARAMS.ROUTES_LOG2`` reads 0),
#: a host finds them by ``PARAMS``; and the constant is logic in the read multiplexer: 1.2.0 moved
#: the UP5K ``small`` build to 44.6 MHz (45 needed) and the ECP5 stream-bench to 122.3 MHz (125)
#: at their placer seeds, where 1.1.0 gives 47.9 and 127.3 MHz.
CORE_VERSION = (1, 1, 0)
#: Width of the byte address of the register window (64 KiB).
ADDR_BITS = 16
#: First byte address of the table window; entry (k, b) is at ``TABLE_BASE + 4 * (k * B + b)``.
TABLE_BASE = 0x8000
#: Vendor/library/name/version of the IP, as the PYNQ driver binds to it.
VLNV = "mailpulse.org:mailpulse:scorer:1.0"
#: Threshold after reset (shadow and active): no score exceeds it, so nothing is flagged.
THRESHOLD_RESET = 0xFFFFFFFF
#: Fraction bits of the adaptive threshold's accumulator (``THRESHOLD_FRAC``): the threshold is
#: ``THRESHOLD_ACTIVE + THRESHOLD_FRAC / 2**ADAPT_FRAC``; see :func:`mailpulse.hdl.reference.tracker_step`.
ADAPT_FRAC = 8
#: Most clock cycles a register access waits (see the module docstring) before it is answered
#: with an error instead: 16384 (164 us at 100 MHz, 341 us at 48 MHz).  Far above any wait of a
#: core whose result stream flows (a pipeline latency, a commit's copy, the clear after reset: at
#: most 2 K B + 100 cycles); reached only when the result stream stalls with the pipeline full.
WAIT_LIMIT = 1 << 14
#: Byte address of ``ROUTE_BOUND`` (R > 0): 2R registers, up to 0x05FC for R = 64.
ROUTE_BOUND_BASE = 0x0400
#: Width of a route bound accumulator: a Q8.8 latency and :data:`ADAPT_FRAC` fraction bits.
ROUTE_BOUND_BITS = 16 + ADAPT_FRAC
#: Width of ``ADAPT.ROUTE_RATIO``, the route intervals' miss ratio M (0..255: coverage up to 99.2 %;
#: bits 27:20, where the 4-bit exponent it replaced and four free bits were).
ROUTE_RATIO_BITS = 8


@dataclass(frozen=True)
class Field:
    """A field of a register: bits ``lsb .. lsb + width - 1``, its value after reset."""

    name: str
    lsb: int
    width: int
    doc: str
    signed: bool = False
    reset: int = 0

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """A register (or an array of ``count`` registers ``stride`` bytes apart) of kind ``kind``.

    ``operands`` (``PUSH`` only) names the registers whose values a push sends.
    """

    name: str
    offset: int
    kind: Kind
    doc: str
    fields: tuple[Field, ...]
    count: int = 1
    stride: int = 4
    shadow: bool = False
    operands: tuple[str, ...] = ()

    @property
    def access(self) -> Access:
        return self.kind.access

    @property
    def reset(self) -> int:
        """The value after reset, from the fields' declared resets."""
        v = 0
        for f in self.fields:
            v |= (f.reset << f.lsb) & f.mask
        return v

    @property
    def width(self) -> int:
        """Bits up to the highest field (what storage of the register holds)."""
        return max(f.lsb + f.width for f in self.fields)

    def value(self, **fields: int) -> int:
        """The register value with the named fields set (the others 0); a value that does not fit
        its field raises ``ValueError``."""
        v = 0
        for name, fv in fields.items():
            f = self.field(name)
            fv = int(fv)
            if not (-(1 << (f.width - 1)) if f.signed else 0) <= fv < (1 << f.width):
                raise ValueError(f"{fv} does not fit field {self.name}.{name} ({f.width} bits)")
            v |= (fv << f.lsb) & f.mask
        return v

    def get(self, name: str, value: int) -> int:
        """The value of field ``name`` in a raw register value (sign-extended for a signed field):
        the inverse of :meth:`value`."""
        f = self.field(name)
        raw = (value >> f.lsb) & ((1 << f.width) - 1)
        if f.signed and raw >> (f.width - 1):
            raw -= 1 << f.width
        return raw

    def address(self, index: int = 0) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"{self.name}[{index}] is out of range 0..{self.count - 1}")
        return self.offset + index * self.stride

    @property
    def last_address(self) -> int:
        return self.offset + (self.count - 1) * self.stride

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")

    @property
    def write_mask(self) -> int:
        m = 0
        for f in self.fields:
            m |= f.mask
        return m


_KIND_DOC = {
    Kind.CONST: "reads its reset value",
    Kind.STATUS: "each field reads a live value",
    Kind.STORAGE: "stores what is written, reads it back",
    Kind.ACTION: "writing 1 to a field fires its action once",
    Kind.PUSH: "any write sends the operand registers as one sample",
    Kind.WINDOW: "a memory window, entry i at offset + 4 i",
    Kind.LIVE: "reads a live value of the core, a write seeds it",
}


def _f(name: str, lsb: int, width: int, doc: str, signed: bool = False, reset: int = 0) -> Field:
    return Field(name, lsb, width, doc, signed, reset)


class RegisterMap:
    """The concrete register map for one parameter set."""

    def __init__(self, params: CoreParams) -> None:
        """The declaration table of the map (one table, hence its length)."""
        p = params
        self.params = p
        major, minor, patch = CORE_VERSION
        C, S, RW, A, P, W = Kind.CONST, Kind.STATUS, Kind.STORAGE, Kind.ACTION, Kind.PUSH, Kind.WINDOW
        # with routes (R > 0): the interval fields and registers; without, the map of a core without them
        routes = p.r > 0
        adapt_routes = (
            _f("ROUTES", 1, 1, "1: the route intervals flag and adapt; 0: they do neither"),
            _f("ROUTE_RATIO", 20, ROUTE_RATIO_BITS, "route intervals: miss ratio M, each side misses "
                                                     "1/(M + 1) of the events (nominal coverage 1 - 2/(M + 1), "
                                                     "19: 90 %; 0: a miss leaves its bound, the interval empties)"),
            _f("ROUTE_STEP_EXP", 28, 4, f"route intervals: a bound narrows by 2**ROUTE_STEP_EXP / "
                                        f"{1 << ADAPT_FRAC} per hit, widens ROUTE_RATIO times that "
                                        "per miss on its side"),
        ) if routes else ()
        route_push = [
            Register("ROUTE", 0x0094, RW, "Route id and latency of the event a PUSH sends.",
                     (_f("ID", 0, 16, "route id (an id >= R is not tracked)"),
                      _f("LATENCY", 16, 16, "unsigned Q8.8 log2(latency in us)"))),
        ] if routes else []
        route_bounds = [
            Register("ROUTE_BOUND", ROUTE_BOUND_BASE, Kind.LIVE,
                     f"Route r's lower (index 2r) and upper (2r + 1) bound accumulator: the bound is "
                     f"BOUND >> {ADAPT_FRAC} (Q8.8); a write seeds it, capped at 0xFFFF << {ADAPT_FRAC}.",
                     (_f("BOUND", 0, ROUTE_BOUND_BITS, f"unsigned, units of 2**-{ADAPT_FRAC} of a Q8.8 latency"),),
                     count=2 * p.r),
        ] if routes else []
        regs = [
            Register("ID", 0x0000, C, "Core identifier, ASCII 'MPLS'.",
                     (_f("ID", 0, 32, "0x4D504C53", reset=CORE_ID),)),
            Register("VERSION", 0x0004, C, "Core and register-map version.",
                     (_f("PATCH", 0, 8, "patch", reset=patch), _f("MINOR", 8, 8, "minor", reset=minor),
                      _f("MAJOR", 16, 8, "major", reset=major))),
            Register("PARAMS", 0x0008, C, "Elaboration parameters.",
                     (_f("D", 0, 8, "features per sample", reset=p.d), _f("K", 8, 8, "projections", reset=p.k),
                      _f("B_LOG2", 16, 4, "log2 of bins per projection", reset=p.b_log2),
                      _f("WEIGHT_BITS", 20, 4, "signed weight width", reset=p.weight_bits),
                      _f("SHIFT_BITS", 24, 5, "bin shift width", reset=p.shift_bits),
                      _f("ROUTES_LOG2", 29, 3, "0: no route intervals; else R = 2**(ROUTES_LOG2 - 1) routes",
                         reset=p.routes_log2p1))),
            Register("WIDTHS", 0x000C, C, "Datapath widths.",
                     (_f("IN_BITS", 0, 8, "signed feature width", reset=p.in_bits),
                      _f("TABLE_BITS", 8, 8, "table value width", reset=p.table_bits),
                      _f("PROJ_BITS", 16, 8, "signed projection/offset width", reset=p.proj_bits),
                      _f("SCORE_BITS", 24, 8, "score width", reset=p.score_bits))),
            Register("CTRL", 0x0010, A, "Strobes; each bit clears itself.",
                     (_f("COMMIT", 0, 1, "swap shadow and active model (tables, weights, offsets, shifts, "
                                         "threshold) between two samples"),
                      _f("COMMIT_THRESHOLD", 1, 1, "copy only the shadow threshold to the active one"),
                      _f("CLEAR_COUNTERS", 2, 1, "zero SAMPLES and ANOMALIES"),
                      _f("CLEAR_ERROR", 3, 1, "clear STATUS.BUS_ERROR"))),
            Register("STATUS", 0x0014, S, "Core state.",
                     (_f("COMMIT_PENDING", 0, 1, "a commit waits for the pipeline to drain"),
                      _f("ACTIVE_BANK", 1, 1, "table bank the core scores with"),
                      _f("BUSY", 2, 1, "samples are in the pipeline"),
                      _f("RESULT_VALID", 3, 1, "RESULT_* hold the result of the last PUSH"),
                      _f("PUSH_PENDING", 4, 1, "a PUSH waits to enter the pipeline"),
                      _f("BUS_ERROR", 5, 1, "sticky: a bus access hit a bad address or a read-only register"))),
            Register("THRESHOLD", 0x0018, RW, "Anomaly threshold (shadow): flag = score > threshold.",
                     (_f("THRESHOLD", 0, 32, "unsigned", reset=THRESHOLD_RESET),), shadow=True),
            Register("THRESHOLD_ACTIVE", 0x001C, S, "The threshold the core scores with.",
                     (_f("THRESHOLD", 0, 32, "unsigned", reset=THRESHOLD_RESET),)),
            Register("SAMPLES", 0x0020, S, "Samples scored (wraps at 2**32).",
                     (_f("COUNT", 0, 32, "count"),)),
            Register("ANOMALIES", 0x0024, S, "Samples flagged (wraps at 2**32).",
                     (_f("COUNT", 0, 32, "count"),)),
            Register("LATENCY", 0x0028, S, "Pipeline latency in clock cycles, input to output.",
                     (_f("CYCLES", 0, 8, "cycles"),)),
            Register("ADAPT", 0x002C, RW, "Adaptive threshold (shadow, committed with the model): after each "
                                          "scored sample THRESHOLD_ACTIVE moves toward the (1 - 2**-ALPHA_EXP) "
                                          "quantile of the score (docs/fixed-point.md).",
                     (_f("ENABLE", 0, 1, "1: the threshold adapts; 0: it holds still"),
                      _f("ALPHA_EXP", 8, 4, "target flag rate 2**-ALPHA_EXP"),
                      _f("STEP_EXP", 16, 4, f"step down 2**STEP_EXP / {1 << ADAPT_FRAC} per unflagged sample; "
                                            "step up (2**ALPHA_EXP - 1) times that per flagged one"),
                      *adapt_routes),
                     shadow=True),
            Register("T_MIN", 0x0030, RW, "Lower clamp of the adaptive threshold (shadow).",
                     (_f("T_MIN", 0, 32, "unsigned"),), shadow=True),
            Register("T_MAX", 0x0034, RW, "Upper clamp of the adaptive threshold (shadow).",
                     (_f("T_MAX", 0, 32, "unsigned", reset=THRESHOLD_RESET),), shadow=True),
            Register("THRESHOLD_FRAC", 0x0038, S, "Fraction of the adaptive threshold's accumulator: "
                                                  f"THRESHOLD_ACTIVE + FRAC / {1 << ADAPT_FRAC}.",
                     (_f("FRAC", 0, ADAPT_FRAC, f"unsigned, units of 2**-{ADAPT_FRAC}"),)),
            Register("FEATURE", 0x0040, RW, "Feature d of the sample a PUSH sends.",
                     (_f("VALUE", 0, p.in_bits, "signed feature", signed=True),), count=p.d),
            Register("TAG", 0x0080, RW, "Tag of the sample a PUSH sends.",
                     (_f("TAG", 0, p.tag_bits, "tag"),)),
            Register("PUSH", 0x0084, P, f"Any write sends FEATURE[*], TAG{', ROUTE' if routes else ''} as one "
                                        "sample; its result goes to RESULT_* (not to the output stream).",
                     (_f("PUSH", 0, 1, "strobe"),), operands=("FEATURE", "TAG", *(("ROUTE",) if routes else ()))),
            Register("RESULT_SCORE", 0x0088, S, "Score of the last pushed sample.",
                     (_f("SCORE", 0, 32, "unsigned"),)),
            Register("RESULT_TAG", 0x008C, S, "Tag of the last pushed sample.",
                     (_f("TAG", 0, p.tag_bits, "tag"),)),
            Register("RESULT_INFO", 0x0090, S, "Flag and explanation of the last pushed sample.",
                     (_f("ANOMALY", 0, 1, "score > threshold"),
                      *((_f("BELOW", 1, 1, "latency below its route's lower bound"),
                         _f("ABOVE", 2, 1, "latency above its route's upper bound")) if routes else ()),
                      _f("ARGMAX", 8, 8, "projection with the largest table value (lowest index on ties)"))),
            *route_push,
            Register("OFFSET", 0x0100, RW, "Bin offset of projection k (shadow).",
                     (_f("OFFSET", 0, p.offset_bits, "signed", signed=True),), count=p.k, shadow=True),
            Register("SHIFT", 0x0200, RW, "Bin shift of projection k (shadow).",
                     (_f("SHIFT", 0, p.shift_bits, "right shift"),), count=p.k, shadow=True),
            Register("WEIGHTS", 0x0300, RW, "Weights of projection k (shadow): field d is w[k][d].",
                     tuple(_f(f"W{d}", 2 * d, p.weight_bits, f"weight of feature {d}", signed=True)
                           for d in range(p.d)), count=p.k, shadow=True),
            *route_bounds,
            Register("TABLE", TABLE_BASE, W, "Table entry (k, b) of the shadow bank at index k*B + b: "
                                             "-log density of bin b of projection k.",
                     (_f("VALUE", 0, p.table_bits, "unsigned"),), count=p.k * p.b, shadow=True),
        ]
        self.registers: tuple[Register, ...] = tuple(regs)
        self._by_name = {r.name: r for r in regs}
        self._check()

    def _check(self) -> None:
        spans = sorted((r.offset, r.last_address, r.name) for r in self.registers)
        for (_a0, a1, n0), (b0, _b1, n1) in pairwise(spans):
            if b0 <= a1:
                raise AssertionError(f"registers {n0} and {n1} overlap")
        for r in self.registers:
            if r.offset % 4 or r.last_address >= (1 << ADDR_BITS):
                raise AssertionError(f"register {r.name} is misplaced")
            used = 0
            for f in r.fields:
                if f.mask & used or f.lsb + f.width > 32:
                    raise AssertionError(f"fields of {r.name} overlap or overflow")
                if not 0 <= f.reset < (1 << f.width):
                    raise AssertionError(f"reset of {r.name}.{f.name} does not fit its {f.width} bits")
                used |= f.mask
            if r.access == "WO" and r.reset:
                raise AssertionError(f"write-only register {r.name} declares a reset value")
            if bool(r.operands) != (r.kind is Kind.PUSH):
                raise AssertionError(f"register {r.name}: operands belong to (every) PUSH register")
            if r.kind is Kind.LIVE and (r.shadow or len(r.fields) != 1 or r.fields[0].lsb or r.fields[0].signed):
                raise AssertionError(f"live register {r.name} must not be shadow and has one unsigned field at bit 0")
            for name in r.operands:
                op = self._by_name.get(name)
                if op is None or op.kind is not Kind.STORAGE or op.shadow:
                    raise AssertionError(f"operand {name} of {r.name} must be a live (not shadow) storage register")

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no register named {name!r}") from None

    def __iter__(self) -> Iterator[Register]:
        return iter(self.registers)

    def decode(self, address: int) -> tuple[Register, int] | None:
        """The register (and array index) at a byte address, or None for a bad address."""
        if address % 4:
            return None
        for r in self.registers:
            if r.offset <= address <= r.last_address and (address - r.offset) % r.stride == 0:
                return r, (address - r.offset) // r.stride
        return None

    def to_json(self) -> str:
        doc = {
            "format": "mailpulse-regmap",
            "version": list(CORE_VERSION),
            "vlnv": VLNV,
            "addr_bits": ADDR_BITS,
            "data_bits": 32,
            "params": self.params.as_dict(),
            "registers": [
                {
                    "name": r.name, "offset": r.offset, "kind": r.kind.value, "access": r.access,
                    "reset": r.reset, "count": r.count, "stride": r.stride, "shadow": r.shadow,
                    **({"operands": list(r.operands)} if r.operands else {}), "doc": r.doc,
                    "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "signed": f.signed,
                                "reset": f.reset, "doc": f.doc} for f in r.fields],
                }
                for r in self.registers
            ],
        }
        return json.dumps(doc, indent=1) + "\n"

    def to_markdown(self) -> str:
        p = self.params
        out = [
            f"# Register map (parameter set `{p.name}`: D={p.d}, K={p.k}, B={p.b})",
            "",
            "Generated from `hdl/regmap.py` by `mailpulse hdl regmap --format md`; do not edit.",
            "",
            f"32-bit registers, byte addresses, {ADDR_BITS}-bit address window. VLNV `{VLNV}`.",
            "",
            "Kinds: " + "; ".join(f"`{k.value}` ({k.access}) {_KIND_DOC[k]}" for k in Kind) + ".",
            "",
            "Waits: a write to `PUSH`, its operands or a `live` register waits while a pushed sample is pending "
            "or in the pipeline; a write to a shadow register (or `CTRL.COMMIT`) waits while a commit is pending. "
            f"No access waits more than {WAIT_LIMIT} clocks: then it is answered with an error (AXI `SLVERR`, "
            "`STATUS.BUS_ERROR` set) and does nothing. Reads never wait for the pipeline.",
            "",
            "| offset | name | kind | access | reset | count | shadow | description |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.registers:
            span = f"0x{r.offset:04X}" if r.count == 1 else f"0x{r.offset:04X}..0x{r.last_address:04X}"
            out.append(f"| {span} | `{r.name}` | {r.kind.value} | {r.access} | 0x{r.reset:08X} | {r.count} | "
                       f"{'yes' if r.shadow else ''} | {r.doc} |")
        out += ["", "## Fields", ""]
        for r in self.registers:
            out.append(f"### `{r.name}`")
            out.append("")
            out.append("| bits | field | signed | reset | description |")
            out.append("|---|---|---|---|---|")
            for f in r.fields:
                bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
                out.append(f"| {bits} | `{f.name}` | {'yes' if f.signed else ''} | 0x{f.reset:X} | {f.doc} |")
            out.append("")
        return "\n".join(out)


def pack_weights(params: CoreParams, weights: list[int]) -> int:
    """Pack one projection's D weights into its ``WEIGHTS`` register value."""
    if len(weights) != params.d:
        raise ValueError(f"a projection has {params.d} weights, not {len(weights)}")
    v = 0
    for d, w in enumerate(weights):
        if not params.weight_min <= w <= params.weight_max:
            raise ValueError(f"weight {w} of feature {d} is outside {params.weight_min}..{params.weight_max}")
        v |= (w & ((1 << params.weight_bits) - 1)) << (params.weight_bits * d)
    return v


def unpack_weights(params: CoreParams, value: int) -> list[int]:
    """The D signed weights a ``WEIGHTS`` register value holds."""
    wb = params.weight_bits
    out = []
    for d in range(params.d):
        raw = (value >> (wb * d)) & ((1 << wb) - 1)
        out.append(raw - (1 << wb) if raw >> (wb - 1) else raw)
    return out
