"""The board wrapper of the ``mailpulse_spi`` top (and of the ``stream-bench`` top): pins from the
platform, the PLL that makes the core's clock, a power-on reset, a synchronised reset pin."""

from __future__ import annotations

from typing import Any

from amaranth.hdl import C, ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io

from .pll import ECP5PLL, ICE40PLL

__all__ = ["POR_SECONDS", "BoardTop"]

#: How long the board holds the core in reset after configuration: iCE40 block RAMs read as zero
#: for about 3 us after configuration (Amaranth's own iCE40 platforms wait 15 us; so do we).
POR_SECONDS = 15e-6
#: Flip-flops of the reset synchroniser in the core's clock domain (the last one drives the reset).
RESET_STAGES = 3


class BoardTop(Elaboratable):
    """Wraps a top for a board: pins from the platform, a PLL, a power-on reset, a synchronised reset.

    ``core`` must have the ports of ``mailpulse_spi``: ``clk``, ``rst`` (active high, synchronous),
    ``spi.sck``/``spi.cs_n``/``spi.mosi`` (inputs), ``spi.miso`` and ``irq`` (outputs); a ``sig``
    output (the ``stream-bench`` top's result signature) goes to the platform's ``sig`` pin.

    Clocks: with ``pll`` (an :class:`~mailpulse.hdl.pll.ICE40PLL` or
    :class:`~mailpulse.hdl.pll.ECP5PLL` from :func:`mailpulse.hdl.pll.pll_for`) the core runs from
    the PLL's output (``SB_PLL40_PAD`` when the board's clock pin is the PLL's own pad, see
    ``pll_pad``, else ``SB_PLL40_CORE``; ``EHXPLLL`` on ECP5), whose exact output frequency nextpnr
    derives from the oscillator's constraint; without, straight from the oscillator pin.

    Reset: a counter in a reset-less ``por`` domain on the oscillator (flip-flops start at 0 on
    iCE40 and ECP5) is ``ready`` after :data:`POR_SECONDS`.  The core's reset is requested while
    not ``ready``, while the PLL is not locked and while the board's ``rst`` pin is high; the
    request passes a :data:`RESET_STAGES`-flip-flop synchroniser in the core's clock domain, and
    the last flip-flop drives ``rst`` with no logic between it and the core's reset inputs (an OR
    gate there was the ECP5 build's critical path: a LUT in front of a net with thousands of loads).
    """

    def __init__(self, core: Any, pll: ICE40PLL | ECP5PLL | None = None, *, pll_pad: bool = False) -> None:
        self.core = core
        self.pll = pll
        self.pll_pad = pll_pad

    def elaborate(self, platform: Any) -> Any:
        m = Module()
        m.submodules.core = core = self.core
        names = ["clk", "rst", "spi", "irq"] + (["sig"] if hasattr(core, "sig") else [])
        pins = {name: platform.request(name, 0, dir="-") for name in names}
        use_pad = self.pll is not None and self.pll.family == "ice40" and self.pll_pad
        bufs = {
            "rst": io.Buffer("i", pins["rst"]),
            "sck": io.Buffer("i", pins["spi"].sck),
            "cs_n": io.Buffer("i", pins["spi"].cs_n),
            "mosi": io.Buffer("i", pins["spi"].mosi),
            "miso": io.Buffer("o", pins["spi"].miso),
            "irq": io.Buffer("o", pins["irq"]),
        }
        if not use_pad:
            bufs["clk"] = io.Buffer("i", pins["clk"])
        if "sig" in pins:
            bufs["sig"] = io.Buffer("o", pins["sig"])
        for name, buf in bufs.items():
            m.submodules[f"pin_{name}"] = buf

        osc = Signal(name="osc")          # the oscillator (the por domain's clock)
        core_clk = Signal(name="core_clk")
        locked = Signal(name="pll_locked")
        self._clocking(m, platform, pins, bufs, osc, core_clk, locked, use_pad)

        m.domains.por = por = ClockDomain("por", reset_less=True, local=True)
        por_hz = self.pll.f_out * 1e6 if use_pad and self.pll is not None else platform.default_clk_frequency
        delay = max(1, int(POR_SECONDS * por_hz))
        timer = Signal(range(delay + 1))
        ready = Signal()
        m.d.comb += por.clk.eq(osc)
        with m.If(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)

        # the reset request crosses into the core's clock through a synchroniser; its last stage
        # drives the core's reset directly
        m.domains.core = cd = ClockDomain("core", reset_less=True, local=True)
        m.d.comb += cd.clk.eq(core_clk)
        sync_rst = [Signal(init=1, name=f"rst_s{i}") for i in range(RESET_STAGES)]
        m.d.core += sync_rst[0].eq(~ready | ~locked | bufs["rst"].i)
        m.d.core += [sync_rst[i].eq(sync_rst[i - 1]) for i in range(1, RESET_STAGES)]

        m.d.comb += [
            core.clk.eq(core_clk),
            core.rst.eq(sync_rst[-1]),
            core.spi.sck.eq(bufs["sck"].i),
            core.spi.cs_n.eq(bufs["cs_n"].i),
            core.spi.mosi.eq(bufs["mosi"].i),
            bufs["miso"].o.eq(core.spi.miso),
            bufs["irq"].o.eq(core.irq),
        ]
        if "sig" in bufs:
            m.d.comb += bufs["sig"].o.eq(core.sig)
        return m

    def _clocking(self, m: Module, platform: Any, pins: dict[str, Any], bufs: dict[str, Any], osc: Signal,
                  core_clk: Signal, locked: Signal, use_pad: bool) -> None:
        """The oscillator, the core's clock and the PLL's lock (1 without a PLL)."""
        pll = self.pll
        if pll is None:
            m.d.comb += [osc.eq(bufs["clk"].i), core_clk.eq(bufs["clk"].i), locked.eq(1)]
            return
        # nextpnr derives the core clock's constraint from the PLL's settings and the oscillator's
        # constraint (mailpulse.hdl.build checks that it did)
        if isinstance(pll, ICE40PLL):
            common = dict(
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=C(pll.divr, 4), p_DIVF=C(pll.divf, 7), p_DIVQ=C(pll.divq, 3),
                p_FILTER_RANGE=C(pll.filter_range, 3),
                i_RESETB=C(1, 1), i_BYPASS=C(0, 1),
                o_PLLOUTGLOBAL=core_clk, o_LOCK=locked,
            )
            if use_pad:
                # the clock pin is the PLL's own pad, which then feeds nothing else: the por
                # domain runs from the PLL's output too (its delay counted at that frequency)
                m.submodules.pll = Instance("SB_PLL40_PAD", io_PACKAGEPIN=pins["clk"].io, **common)
                m.d.comb += osc.eq(core_clk)
            else:
                m.submodules.pll = Instance("SB_PLL40_CORE", i_REFERENCECLK=bufs["clk"].i, **common)
                m.d.comb += osc.eq(bufs["clk"].i)
            return
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{pll.f_in:g}",
            a_FREQUENCY_PIN_CLKOP=f"{pll.f_out:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=pll.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=bufs["clk"].i, o_CLKOP=core_clk, i_CLKFB=core_clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked,
        )
        m.d.comb += osc.eq(bufs["clk"].i)
