"""The board wrapper of the ``mailpulse_spi`` top: pins from the platform, a power-on reset, a
synchronised reset pin."""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io

__all__ = ["POR_SECONDS", "BoardTop"]

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
