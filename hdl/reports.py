"""Reports of the bitstream builds and of the xc7 estimate, and the parsers of the tools' outputs.

Pure Python: :mod:`mailpulse.hdl.build` runs the tools and fills these in; the CLI, the tests and
``bench/bench_fmax.py`` read them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "XC7Z020",
    "XC7_LUT_BUDGET_PCT",
    "BuildError",
    "BuildReport",
    "ClockTiming",
    "SynthReport",
    "Usage",
    "overfull_from_log",
    "parse_nextpnr_report",
    "parse_yosys_stat",
    "xc7_report",
]

#: The xc7z020 totals the xc7 estimate is compared with (LUTs, FFs, BRAM36 tiles, DSP48E1).
XC7Z020 = {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220}
#: The issue's target: the zynq parameter set must use at most this share of the xc7z020 LUTs.
XC7_LUT_BUDGET_PCT = 15.0


class BuildError(RuntimeError):
    """A tool of the flow failed; the message holds the tail of its log."""



@dataclass(frozen=True)
class Usage:
    """Use of one resource kind: ``used`` of ``available``."""

    used: int
    available: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.available if self.available else 0.0


@dataclass(frozen=True)
class ClockTiming:
    """One clock of a routed design: nextpnr's fmax for it and its constraint (MHz)."""

    achieved: float
    constraint: float

    @property
    def closed(self) -> bool:
        return self.achieved >= self.constraint


@dataclass
class BuildReport:
    """What one place-and-route build produced.

    Attributes
    ----------
    platform, device, config : str
        The board (CLI name), the device (part/package) and the parameter set.
    target_mhz : float
        The core clock: the PLL's output frequency, which is the core clock's timing constraint.
    fmax_mhz : float
        The fmax nextpnr reports for the core clock after routing.
    clocks : dict of str to ClockTiming
        Every constrained clock (the oscillator's power-on-reset domain, the core clock).
    top : str
        ``spi`` (``mailpulse_spi``) or ``stream-bench``.
    pll : str
        The PLL's settings (``""``: the core runs from the oscillator).
    osc_mhz : float
        The board's oscillator, the PLL's input.
    usage : dict of str to Usage
        ``lut`` (LUT4s; on iCE40 also ``lc``, the logic cells, each LUT4+FF+carry), ``ff``, ``ram``
        (EBR on iCE40, DP16KD on ECP5) and ``io``.
    bitstream : Path
        The bitstream (``.bin`` for iCE40, ``.bit`` for ECP5).
    critical_path : list of str
        The nets along the slowest register-to-register path, source first, each with the Amaranth
        source line that made it (for timing requests to the HDL side).
    seconds : float
        Wall time of the build.
    core : str
        ``folded`` or ``stream``: the core inside the SPI top (see :data:`CORES`).
    """

    platform: str
    device: str
    config: str
    target_mhz: float
    fmax_mhz: float
    usage: dict[str, Usage]
    bitstream: Path
    outdir: Path
    seed: int
    seconds: float
    critical_path: list[str] = field(default_factory=list)
    core: str = ""
    clocks: dict[str, ClockTiming] = field(default_factory=dict)
    top: str = "spi"
    pll: str = ""
    osc_mhz: float = 0.0

    @property
    def timing_met(self) -> bool:
        """Timing closes: every clock (the core clock at the PLL's frequency) meets its constraint."""
        if self.clocks:
            return all(c.closed for c in self.clocks.values())
        return self.fmax_mhz >= self.target_mhz

    @property
    def fits(self) -> bool:
        return all(u.used <= u.available for u in self.usage.values())

    @property
    def passed(self) -> bool:
        return self.timing_met and self.fits

    @property
    def critical_sources(self) -> list[str]:
        """The critical path in design terms, source first, without repeats: per net, the Amaranth
        source lines that made it or, when synthesis left only its own techmap files, the design
        signal the net was derived from (the net name up to the first cell-type suffix)."""
        seen: list[str] = []
        for item in self.critical_path:
            net, _, rest = item.partition(" (")
            srcs = [x for x in rest.rstrip(")").split(", ") if x and ".v:" not in x and not x.endswith(".v")]
            for name in srcs or [_design_name(net)]:
                if name and name not in seen:
                    seen.append(name)
        return seen

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bitstream"] = str(self.bitstream)
        d["outdir"] = str(self.outdir)
        d["usage"] = {k: {"used": u.used, "available": u.available, "percent": round(u.percent, 2)}
                      for k, u in self.usage.items()}
        d["clocks"] = {k: {"achieved": c.achieved, "constraint": c.constraint, "closed": c.closed}
                       for k, c in self.clocks.items()}
        d.update(timing_met=self.timing_met, fits=self.fits, passed=self.passed)
        return d

    def format(self) -> str:
        """The human report ``mailpulse hdl build`` prints."""
        core = f" ({self.core} core)" if self.core else ""
        top = "mailpulse_spi" if self.top == "spi" else self.top
        lines = [f"{top}{core} / {self.config} on {self.platform} ({self.device}), seed {self.seed}, "
                 f"{self.seconds:.0f} s"]
        names = {"lc": "LC", "lut": "LUT4", "ff": "FF", "ram": "EBR" if "ICE" in self.device.upper() else "DP16KD",
                 "io": "IO"}
        for key in ("lc", "lut", "ff", "ram", "io"):
            if key in self.usage:
                u = self.usage[key]
                lines.append(f"  {names[key]:<7}{u.used:>7} / {u.available:<7}{u.percent:6.1f} %")
        verdict = "closed" if self.timing_met else "NOT closed"
        source = self.pll or f"the {self.osc_mhz:g} MHz oscillator"
        lines.append(f"  clock  {self.target_mhz:7.2f} MHz from {source}")
        lines.append(f"  fmax   {self.fmax_mhz:7.1f} MHz: timing {verdict} at {self.target_mhz:.2f} MHz")
        for name, c in self.clocks.items():
            if not c.closed:
                lines.append(f"  clock {name}: {c.achieved:.1f} MHz < {c.constraint:.1f} MHz")
        if not self.fits:
            lines.append("  does NOT fit the device: FAIL")
        if not self.timing_met and self.critical_path:
            lines.append(f"  critical path ({len(self.critical_path)} nets) through: "
                         + " -> ".join(self.critical_sources))
        lines.append(f"  bitstream {self.bitstream}")
        return "\n".join(lines)


@dataclass
class SynthReport:
    """Yosys ``synth_xilinx`` resource estimate of the AXI top for the xc7z020.

    ``lut`` counts LUTs used as logic plus LUTs used as distributed RAM / shift registers
    (``lutram``, in LUT6 equivalents); ``bram36`` counts a RAMB18 as half a RAMB36.
    """

    config: str
    lut: int
    lutram: int
    ff: int
    bram36: float
    dsp: int
    cells: dict[str, int]
    outdir: Path
    seconds: float

    def percent(self, kind: str) -> float:
        value = {"lut": self.lut, "ff": self.ff, "bram36": self.bram36, "dsp": self.dsp}[kind]
        return 100.0 * value / XC7Z020[kind]

    @property
    def passed(self) -> bool:
        return self.percent("lut") <= XC7_LUT_BUDGET_PCT

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outdir"] = str(self.outdir)
        d["percent"] = {k: round(self.percent(k), 2) for k in ("lut", "ff", "bram36", "dsp")}
        d["passed"] = self.passed
        return d

    def format(self) -> str:
        lines = [f"mailpulse_axi / {self.config}: Yosys synth_xilinx estimate for xc7z020 "
                 f"(no open xc7 place-and-route: no fmax), {self.seconds:.0f} s"]
        rows = [("LUT", self.lut, "lut"), ("FF", self.ff, "ff"), ("BRAM36", self.bram36, "bram36"),
                ("DSP48", self.dsp, "dsp")]
        for label, value, key in rows:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            lines.append(f"  {label:<7}{shown:>7} / {XC7Z020[key]:<7}{self.percent(key):6.1f} %")
        lines.append(f"  (LUT includes {self.lutram} LUTs as distributed RAM/SRL)")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"  LUT budget {XC7_LUT_BUDGET_PCT:.0f} % of xc7z020: {verdict}")
        return "\n".join(lines)


def _design_name(net: str) -> str:
    """``core.regs.hits_SB_DFFESR_Q_11_D`` -> ``core.regs.hits``; ``$nextpnr_...`` -> ``""``."""
    if net.startswith("$"):
        return ""
    return re.split(r"_(?:SB|TRELLIS|CCU2C|LUT4|DFF|DP16KD)_|\$", net, maxsplit=1)[0]


def parse_nextpnr_report(path: Path, family: str) -> tuple[dict[str, Usage], dict[str, ClockTiming], list[str]]:
    """Read nextpnr's ``--report`` JSON: (usage by kind, each clock's fmax and constraint, critical path).

    Raises ``BuildError`` when the file lacks the utilisation or fmax sections.
    """
    data = json.loads(path.read_text())
    util = data.get("utilization") or {}
    fmax = data.get("fmax") or {}
    if not util or not fmax:
        raise BuildError(f"{path} has no utilization/fmax section (did nextpnr finish routing?)")

    def get(cell: str) -> Usage:
        u = util.get(cell, {"used": 0, "available": 0})
        return Usage(int(u["used"]), int(u["available"]))

    usage: dict[str, Usage] = {}
    if family == "ice40":
        usage["lc"] = get("ICESTORM_LC")
        usage["ram"] = get("ICESTORM_RAM")
        usage["io"] = get("SB_IO")
    else:
        usage["lut"] = get("TRELLIS_COMB")
        usage["ff"] = get("TRELLIS_FF")
        usage["ram"] = get("DP16KD")
        usage["io"] = get("TRELLIS_IO")
    clocks = {str(k): ClockTiming(float(v["achieved"]), float(v.get("constraint", 0.0))) for k, v in fmax.items()}
    # the path of the clock with the least margin (the core clock, on a design that closes)
    worst = min(clocks, key=lambda k: clocks[k].achieved / (clocks[k].constraint or 1.0))
    return usage, clocks, _critical_path(data.get("critical_paths") or [], worst)


def _critical_path(paths: list[dict[str, Any]], clock: str = "") -> list[str]:
    """The register-to-register critical path: the start cell, each net as ``net (source lines)``,
    the end cell.

    nextpnr lists one path per clock pair; a path between two edges of ``clock`` (else the first
    between two clock edges, not ``<async>``) is one an fmax is computed from.  Each routing segment
    names the net and the Amaranth source lines that created it, which is what a timing request to the HDL side needs.
    """
    regs = [p for p in paths if "<async>" not in (str(p.get("from")), str(p.get("to")))]
    if not regs:
        return []
    same = [p for p in regs if str(p.get("from")).endswith(f" {clock}") and str(p.get("to")).endswith(f" {clock}")]
    regs = same or regs
    items: list[str] = []
    segs = regs[0].get("path", [])
    for seg in segs:
        if seg.get("type") == "clk-to-q":
            items.append(str(seg["from"]["cell"]))
        if seg.get("type") != "routing":
            continue
        srcs = [str(x).rsplit("/", 1)[-1] for x in seg.get("sources", [])]
        items.append(f"{seg.get('net')}" + (f" ({', '.join(srcs[:2])})" if srcs else ""))
    if segs and segs[-1].get("type") == "setup":
        items.append(str(segs[-1]["to"]["cell"]))
    return items


def overfull_from_log(log: Path) -> list[str]:
    """The over-used resources from nextpnr's "Device utilisation" log block, e.g.
    ``["ICESTORM_LC 6352/5280 (120 %)"]``; empty when the log is absent or nothing is over-used."""
    if not log.is_file():
        return []
    over = []
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", log.read_text(errors="replace"), re.M):
        cell, used, avail = m.group(1), int(m.group(2)), int(m.group(3))
        if used > avail:
            over.append(f"{cell} {used}/{avail} ({100 * used // avail} %)")
    return over


def parse_yosys_stat(path: Path) -> dict[str, int]:
    """Cell counts of the top module from a Yosys ``stat -json`` file (flattened design)."""
    text = path.read_text()
    data = json.loads(text[text.index("{"):])
    design = data.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:
        modules = data.get("modules") or {}
        if not modules:
            raise BuildError(f"{path} has no cell statistics")
        cells = next(iter(modules.values())).get("num_cells_by_type", {})
    return {str(k): int(v) for k, v in cells.items()}


# -- the designs -----------------------------------------------------------------------------------


#: LUT6 equivalents of the xc7 distributed-RAM and shift-register primitives.
_LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM32M": 4, "RAM32M16": 8, "RAM64X1S": 1, "RAM64X1D": 2,
    "RAM64M": 4, "RAM64M8": 8, "RAM128X1S": 2, "RAM128X1D": 4, "RAM256X1S": 4, "SRL16E": 1,
    "SRLC32E": 1, "SRLC16E": 1,
}


def xc7_report(cells: dict[str, int], config: str, outdir: Path, seconds: float) -> SynthReport:
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    lutram = sum(v * _LUTRAM_LUTS[k] for k, v in cells.items() if k in _LUTRAM_LUTS)
    ff = sum(v for k, v in cells.items() if k in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"))
    bram36 = cells.get("RAMB36E1", 0) + 0.5 * cells.get("RAMB18E1", 0)
    dsp = cells.get("DSP48E1", 0)
    return SynthReport(config=config, lut=lut + lutram, lutram=lutram, ff=ff, bram36=bram36, dsp=dsp,
                       cells=cells, outdir=outdir, seconds=seconds)
