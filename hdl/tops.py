"""The generated tops: ``mailpulse_axi`` (Zynq IP, cocotb, Verilator) and ``mailpulse_spi``
(iCE40/ECP5 boards with a Pi as SPI master).  Ports are listed in ``docs/interfaces.md``."""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from mailpulse.errors import UserError

from .axi import (
    AXI4LiteSignature,
    AXI4LiteSlave,
    AXIStreamSignature,
    ResultToAXIS,
    SampleFromAXIS,
)
from .beats import RESULT_BEAT_BITS, sample_beat_bits
from .core import ScorerCore
from .folded import FoldedScorerCore
from .params import CoreParams, params_or_error
from .regs import RegisterFile
from .spi import SPIRegisterBridge, SPISignature

__all__ = ["TOPS", "AXITop", "SPITop", "generate_verilog", "write_verilog"]


class AXITop(wiring.Component):
    """Core + register front end + AXI4-Lite slave + AXI4-Stream sample/result ports.

    ``aclk`` clocks everything; ``aresetn`` is an active-low synchronous reset.
    """

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        # the Zynq IP: the projections go to DSP48 multiply-add chains where they fit
        self.core = ScorerCore(params, dsp=True)
        super().__init__({
            "aclk": In(1),
            "aresetn": In(1),
            "s_axil": In(AXI4LiteSignature()),
            "s_axis": In(AXIStreamSignature(sample_beat_bits(params))),
            "m_axis": Out(AXIStreamSignature(RESULT_BEAT_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        cd = ClockDomain("sync")
        m.domains.sync = cd
        m.d.comb += [cd.clk.eq(self.aclk), cd.rst.eq(~self.aresetn)]
        core = m.submodules.core = self.core
        regs = m.submodules.regs = RegisterFile(self.params, core.latency, core.clear_cycles)
        axil = m.submodules.axil = AXI4LiteSlave()
        sin = m.submodules.s_axis = SampleFromAXIS(self.params)
        sout = m.submodules.m_axis = ResultToAXIS(self.params)
        wiring.connect(m, regs.ctrl, core.ctrl)
        wiring.connect(m, axil.bus, regs.bus)
        wiring.connect(m, wiring.flipped(self.s_axil), axil.axil)
        wiring.connect(m, wiring.flipped(self.s_axis), sin.axis)
        wiring.connect(m, sin.o_stream, core.i_stream)
        wiring.connect(m, core.o_stream, sout.i_stream)
        wiring.connect(m, sout.axis, wiring.flipped(self.m_axis))
        return m


class SPITop(wiring.Component):
    """Core + register front end + SPI register bridge; ``irq`` = ``STATUS.RESULT_VALID``.

    ``clk`` clocks everything; ``rst`` is an active-high synchronous reset.  Samples arrive
    through ``PUSH`` only, at SPI speed, so the core is the folded one
    (:class:`mailpulse.hdl.folded.FoldedScorerCore`, one projection per clock): bit-exact and a fraction
    of the size.  ``core="stream"`` builds the pipelined core without its stream ports instead
    (for comparison builds).
    """

    def __init__(self, params: CoreParams, core: str = "folded") -> None:
        self.params = params
        if core == "folded":
            self.core: FoldedScorerCore | ScorerCore = FoldedScorerCore(params)
        elif core == "stream":
            self.core = ScorerCore(params, stream=False)
        else:
            raise ValueError(f"unknown SPI top core {core!r}; use 'folded' or 'stream'")
        super().__init__({
            "clk": In(1),
            "rst": In(1),
            "spi": In(SPISignature()),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cd = ClockDomain("sync")
        m.domains.sync = cd
        m.d.comb += [cd.clk.eq(self.clk), cd.rst.eq(self.rst)]
        core = m.submodules.core = self.core
        regs = m.submodules.regs = RegisterFile(self.params, core.latency, core.clear_cycles)
        bridge = m.submodules.spi = SPIRegisterBridge()
        wiring.connect(m, regs.ctrl, core.ctrl)
        wiring.connect(m, bridge.bus, regs.bus)
        wiring.connect(m, wiring.flipped(self.spi), bridge.spi)
        m.d.comb += self.irq.eq(regs.irq)
        return m


#: Top name -> (class, Verilog module name).
TOPS: dict[str, tuple[type[AXITop] | type[SPITop], str]] = {
    "axi": (AXITop, "mailpulse_axi"),
    "spi": (SPITop, "mailpulse_spi"),
}


def generate_verilog(params: CoreParams, top: str = "axi") -> str:
    """Verilog text of one top for one parameter set (module name ``mailpulse_<top>``)."""
    try:
        cls, name = TOPS[top]
    except KeyError:
        raise ValueError(f"unknown top {top!r}; known tops: {', '.join(TOPS)}") from None
    return verilog.convert(cls(params), name=name, emit_src=False)


def write_verilog(config: str, top: str, out: Path | None) -> str:
    """Generate the Verilog of ``top`` for parameter set ``config`` (names, as a user gives them);
    write it to ``out`` if given.  Bad names and unwritable files are :class:`UserError`."""
    params = params_or_error(config)
    if top not in TOPS:
        raise UserError(f"unknown top {top!r}; use one of {', '.join(TOPS)}")
    text = generate_verilog(params, top)
    if out is not None:
        try:
            out.write_text(text)
        except OSError as e:
            raise UserError(f"cannot write {out}: {e.strerror}") from None
    return text
