"""The generated tops: ``mailpulse_axi`` (Zynq IP, cocotb, Verilator) and ``mailpulse_spi``
(iCE40/ECP5 boards with a Pi as SPI master).  Ports are listed in ``docs/interfaces.md``.

Three more tops exist for verification only (``mailpulse sim verify --core``, ``docs/verification.md``):
``mailpulse_axi_lut`` is the AXI top with the LUT projections (``AXITop(dsp=False)``: the streaming
core as the ECP5 carries it), and ``mailpulse_bus`` / ``mailpulse_bus_stream`` are the SPI top without
its SPI bridge (:class:`BusTop`): the same register front end and core, the front end's register port
on the top's pins, so that a simulator pushes a sample in tens of clocks instead of an SPI frame's
thousands."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

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
from .bus import BusSignature
from .core import ScorerCore
from .folded import FoldedScorerCore
from .params import CoreParams, params_or_error
from .regs import RegisterFile
from .spi import SPIRegisterBridge, SPISignature

__all__ = ["TOPS", "AXITop", "BusTop", "SPITop", "generate_verilog", "write_verilog"]


class AXITop(wiring.Component):
    """Core + register front end + AXI4-Lite slave + AXI4-Stream sample/result ports.

    ``aclk`` clocks everything; ``aresetn`` is an active-low synchronous reset.
    """

    def __init__(self, params: CoreParams, *, dsp: bool = True) -> None:
        self.params = params
        # the Zynq IP: the projections go to DSP48 multiply-add chains where they fit; dsp=False
        # is the LUT variant of the streaming core (as the ECP5 builds carry it)
        self.core = ScorerCore(params, dsp=dsp)
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


def register_side(m: Module, top: wiring.Component, params: CoreParams, core: Any) -> RegisterFile:
    """What every register-bus top elaborates first: the ``sync`` domain from the top's ``clk`` and
    ``rst``, the core, its register front end (connected to the core) and ``irq``; returns the front
    end, whose ``bus`` the top connects (SPI bridge, ``bus__*`` pins)."""
    cd = ClockDomain("sync")
    m.domains.sync = cd
    m.d.comb += [cd.clk.eq(top.clk), cd.rst.eq(top.rst)]
    m.submodules.core = core
    regs = m.submodules.regs = RegisterFile(params, core.latency, core.clear_cycles)
    wiring.connect(m, regs.ctrl, core.ctrl)
    m.d.comb += top.irq.eq(regs.irq)
    return regs


def spi_top_core(params: CoreParams, core: str = "folded") -> FoldedScorerCore | ScorerCore:
    """The core inside the SPI top (and inside :class:`BusTop`, which verifies it): ``folded``
    (:class:`mailpulse.hdl.folded.FoldedScorerCore`, the iCE40 boards) or ``stream`` (the pipelined
    core without stream ports, LUT projections: the ECP5 boards)."""
    if core == "folded":
        return FoldedScorerCore(params)
    if core == "stream":
        return ScorerCore(params, stream=False)
    raise ValueError(f"unknown SPI top core {core!r}; use 'folded' or 'stream'")


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
        self.core = spi_top_core(params, core)
        super().__init__({
            "clk": In(1),
            "rst": In(1),
            "spi": In(SPISignature()),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        regs = register_side(m, self, self.params, self.core)
        bridge = m.submodules.spi = SPIRegisterBridge()
        wiring.connect(m, bridge.bus, regs.bus)
        wiring.connect(m, wiring.flipped(self.spi), bridge.spi)
        return m


class BusTop(wiring.Component):
    """The SPI top without its SPI bridge, for verification: the same register front end and the
    same core (:func:`spi_top_core`), with the front end's register port
    (:class:`mailpulse.hdl.bus.BusSignature`) as the top's ``bus__*`` pins in place of
    :class:`mailpulse.hdl.spi.SPIRegisterBridge`.  A sample costs its register accesses (about 4
    clocks each) plus the core's latency, not an SPI frame per register; the SPI bridge itself is
    verified on the SPI top (``sim/tb_spi.py``, ``hdl prove``).  ``clk``, ``rst`` (active high,
    synchronous) and ``irq`` as on the SPI top.
    """

    def __init__(self, params: CoreParams, core: str = "folded") -> None:
        self.params = params
        self.core = spi_top_core(params, core)
        super().__init__({
            "clk": In(1),
            "rst": In(1),
            "bus": In(BusSignature()),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        regs = register_side(m, self, self.params, self.core)
        wiring.connect(m, wiring.flipped(self.bus), regs.bus)
        return m


#: Top name -> (constructor from the parameters, Verilog module name).  ``axi`` and ``spi`` are
#: what ships; the others are verification tops (see the module docstring).
TOPS: dict[str, tuple[Callable[[CoreParams], wiring.Component], str]] = {
    "axi": (AXITop, "mailpulse_axi"),
    "spi": (SPITop, "mailpulse_spi"),
    "axi_lut": (partial(AXITop, dsp=False), "mailpulse_axi_lut"),
    "bus": (BusTop, "mailpulse_bus"),
    "bus_stream": (partial(BusTop, core="stream"), "mailpulse_bus_stream"),
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
