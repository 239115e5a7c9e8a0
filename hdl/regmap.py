"""The register map of the mailpulse scorer, declared once.

Everything that needs an address takes it from here: the Amaranth register front end
(``hdl/``), the AXI4-Lite and SPI bridges, the PYNQ driver and its ``.hwh``, the host bridge,
the generated ``docs/registers.md`` and the machine-readable ``regmap.json``.  No other file in
the project may spell an offset as a number.

Pure Python, no Amaranth import.  Byte addresses, 32-bit registers, little-endian fields.

Access semantics (the same over AXI4-Lite and SPI):

* ``RO`` - writes are ignored and answered with an error (AXI ``SLVERR``; SPI sets
  ``STATUS.BUS_ERROR``).
* ``RW`` - the value written is stored in the register's field widths (upper bits of a
  signed field are the sign, see each field); a read returns it, sign-extended for signed fields.
* ``WO`` - a read returns 0 without error; ``CTRL`` bits are strobes that clear themselves.
* Any address not declared here answers with an error (AXI ``SLVERR``; SPI ``BUS_ERROR``) and
  reads as 0.
* ``shadow`` registers (and the whole ``TABLE`` window) are written into the shadow model; the
  core scores with the active model until ``CTRL.COMMIT`` swaps them between two samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from .params import CoreParams

Access = Literal["RO", "RW", "WO"]

#: Value of the ``ID`` register: ASCII "MPLS".
CORE_ID = 0x4D504C53
#: Version of the core and of this register map: (major, minor, patch).
CORE_VERSION = (1, 0, 0)
#: Width of the byte address of the register window (64 KiB).
ADDR_BITS = 16
#: First byte address of the table window; entry (k, b) is at ``TABLE_BASE + 4 * (k * B + b)``.
TABLE_BASE = 0x8000
#: Vendor/library/name/version of the IP, as the PYNQ driver binds to it.
VLNV = "mailpulse.org:mailpulse:scorer:1.0"
#: Threshold after reset (shadow and active): no score exceeds it, so nothing is flagged.
THRESHOLD_RESET = 0xFFFFFFFF


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str
    signed: bool = False

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: Access
    doc: str
    fields: tuple[Field, ...]
    reset: int = 0
    count: int = 1
    stride: int = 4
    shadow: bool = False

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


def _f(name: str, lsb: int, width: int, doc: str, signed: bool = False) -> Field:
    return Field(name, lsb, width, doc, signed)


class RegisterMap:
    """The concrete register map for one parameter set."""

    def __init__(self, params: CoreParams) -> None:
        p = params
        self.params = p
        regs = [
            Register("ID", 0x0000, "RO", "Core identifier, ASCII 'MPLS'.",
                     (_f("ID", 0, 32, "0x4D504C53"),), reset=CORE_ID),
            Register("VERSION", 0x0004, "RO", "Core and register-map version.",
                     (_f("PATCH", 0, 8, "patch"), _f("MINOR", 8, 8, "minor"), _f("MAJOR", 16, 8, "major")),
                     reset=(CORE_VERSION[0] << 16) | (CORE_VERSION[1] << 8) | CORE_VERSION[2]),
            Register("PARAMS", 0x0008, "RO", "Elaboration parameters.",
                     (_f("D", 0, 8, "features per sample"), _f("K", 8, 8, "projections"),
                      _f("B_LOG2", 16, 4, "log2 of bins per projection"),
                      _f("WEIGHT_BITS", 20, 4, "signed weight width"),
                      _f("SHIFT_BITS", 24, 5, "bin shift width")),
                     reset=p.d | (p.k << 8) | (p.b_log2 << 16) | (p.weight_bits << 20) | (p.shift_bits << 24)),
            Register("WIDTHS", 0x000C, "RO", "Datapath widths.",
                     (_f("IN_BITS", 0, 8, "signed feature width"), _f("TABLE_BITS", 8, 8, "table value width"),
                      _f("PROJ_BITS", 16, 8, "signed projection/offset width"),
                      _f("SCORE_BITS", 24, 8, "score width")),
                     reset=p.in_bits | (p.table_bits << 8) | (p.proj_bits << 16) | (p.score_bits << 24)),
            Register("CTRL", 0x0010, "WO", "Strobes; each bit clears itself.",
                     (_f("COMMIT", 0, 1, "swap shadow and active model (tables, weights, offsets, shifts, "
                                         "threshold) between two samples"),
                      _f("COMMIT_THRESHOLD", 1, 1, "copy only the shadow threshold to the active one"),
                      _f("CLEAR_COUNTERS", 2, 1, "zero SAMPLES and ANOMALIES"),
                      _f("CLEAR_ERROR", 3, 1, "clear STATUS.BUS_ERROR"))),
            Register("STATUS", 0x0014, "RO", "Core state.",
                     (_f("COMMIT_PENDING", 0, 1, "a commit waits for the pipeline to drain"),
                      _f("ACTIVE_BANK", 1, 1, "table bank the core scores with"),
                      _f("BUSY", 2, 1, "samples are in the pipeline"),
                      _f("RESULT_VALID", 3, 1, "RESULT_* hold the result of the last PUSH"),
                      _f("PUSH_PENDING", 4, 1, "a PUSH waits to enter the pipeline"),
                      _f("BUS_ERROR", 5, 1, "sticky: a bus access hit a bad address or a read-only register"))),
            Register("THRESHOLD", 0x0018, "RW", "Anomaly threshold (shadow): flag = score > threshold.",
                     (_f("THRESHOLD", 0, 32, "unsigned"),), reset=0xFFFFFFFF, shadow=True),
            Register("THRESHOLD_ACTIVE", 0x001C, "RO", "The threshold the core scores with.",
                     (_f("THRESHOLD", 0, 32, "unsigned"),), reset=0xFFFFFFFF),
            Register("SAMPLES", 0x0020, "RO", "Samples scored (wraps at 2**32).",
                     (_f("COUNT", 0, 32, "count"),)),
            Register("ANOMALIES", 0x0024, "RO", "Samples flagged (wraps at 2**32).",
                     (_f("COUNT", 0, 32, "count"),)),
            Register("LATENCY", 0x0028, "RO", "Pipeline latency in clock cycles, input to output.",
                     (_f("CYCLES", 0, 8, "cycles"),)),
            Register("FEATURE", 0x0040, "RW", "Feature d of the sample a PUSH sends.",
                     (_f("VALUE", 0, p.in_bits, "signed feature", signed=True),), count=p.d),
            Register("TAG", 0x0080, "RW", "Tag of the sample a PUSH sends.",
                     (_f("TAG", 0, p.tag_bits, "tag"),)),
            Register("PUSH", 0x0084, "WO", "Any write sends FEATURE[*] and TAG as one sample; its result "
                                          "goes to RESULT_* (not to the output stream).",
                     (_f("PUSH", 0, 1, "strobe"),)),
            Register("RESULT_SCORE", 0x0088, "RO", "Score of the last pushed sample.",
                     (_f("SCORE", 0, 32, "unsigned"),)),
            Register("RESULT_TAG", 0x008C, "RO", "Tag of the last pushed sample.",
                     (_f("TAG", 0, p.tag_bits, "tag"),)),
            Register("RESULT_INFO", 0x0090, "RO", "Flag and explanation of the last pushed sample.",
                     (_f("ANOMALY", 0, 1, "score > threshold"),
                      _f("ARGMAX", 8, 8, "projection with the largest table value (lowest index on ties)"))),
            Register("OFFSET", 0x0100, "RW", "Bin offset of projection k (shadow).",
                     (_f("OFFSET", 0, p.offset_bits, "signed", signed=True),), count=p.k, shadow=True),
            Register("SHIFT", 0x0200, "RW", "Bin shift of projection k (shadow).",
                     (_f("SHIFT", 0, p.shift_bits, "right shift"),), count=p.k, shadow=True),
            Register("WEIGHTS", 0x0300, "RW", "Weights of projection k (shadow): field d is w[k][d].",
                     tuple(_f(f"W{d}", 2 * d, p.weight_bits, f"weight of feature {d}", signed=True)
                           for d in range(p.d)), count=p.k, shadow=True),
            Register("TABLE", TABLE_BASE, "WO", "Table entry (k, b) of the shadow bank at index k*B + b: "
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
                used |= f.mask

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
                    "name": r.name, "offset": r.offset, "access": r.access, "reset": r.reset,
                    "count": r.count, "stride": r.stride, "shadow": r.shadow, "doc": r.doc,
                    "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "signed": f.signed,
                                "doc": f.doc} for f in r.fields],
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
            "| offset | name | access | reset | count | shadow | description |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.registers:
            span = f"0x{r.offset:04X}" if r.count == 1 else f"0x{r.offset:04X}..0x{r.last_address:04X}"
            out.append(f"| {span} | `{r.name}` | {r.access} | 0x{r.reset:08X} | {r.count} | "
                       f"{'yes' if r.shadow else ''} | {r.doc} |")
        out += ["", "## Fields", ""]
        for r in self.registers:
            out.append(f"### `{r.name}`")
            out.append("")
            out.append("| bits | field | signed | description |")
            out.append("|---|---|---|---|")
            for f in r.fields:
                bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
                out.append(f"| {bits} | `{f.name}` | {'yes' if f.signed else ''} | {f.doc} |")
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
