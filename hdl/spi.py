"""SPI slave register bridge (mode 0, MSB first), exactly as ``docs/interfaces.md`` describes.

The command bytes and the frame layout are declared in :mod:`mailpulse.hdl.spiproto`.

The bridge runs in the system clock domain and oversamples ``sck``, ``cs_n`` and ``mosi`` through
two-flip-flop synchronizers, so ``sck`` must stay at or below ``clk / 4``.  A transaction::

    byte 0      command (0x02 write, 0x0B read)         MISO: 0xA5 (sync)
    bytes 1-2   byte address, big-endian                MISO: 0x00
    write: 32-bit big-endian words, address += 4 after each (a partial last word is discarded)
    read:  one dummy byte, then 32-bit big-endian words on MISO, address += 4 after each

MISO changes a few clocks after each *rising* edge of ``sck`` (the master has just sampled the
previous bit), so the data is stable for most of a ``sck`` period before the next rising edge.
Reads are prefetched one word ahead (the next word must be ready when the current one ends), so
a read request goes to the front end before the host clocks the word out; a read error is
reported to ``STATUS.BUS_ERROR`` only when the host clocks the first bit of that word.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .regmap import ADDR_BITS
from .regs import BusSignature
from .spiproto import ADDR_BYTES, CMD_READ, CMD_WRITE, SYNC_BYTE, WORD_BYTES

__all__ = ["Phase", "SPIRegisterBridge", "SPISignature"]

#: Value of the bit counter on the last bit of a command (or dummy) byte, of the address, of a word.
_BYTE_END = 7
_ADDR_END = 8 * ADDR_BYTES - 1
_WORD_END = 8 * WORD_BYTES - 1


class SPISignature(wiring.Signature):
    """SPI, master's side: ``sck``, ``cs_n``, ``mosi`` out, ``miso`` in."""

    def __init__(self) -> None:
        super().__init__({"sck": Out(1), "cs_n": Out(1, init=1), "mosi": Out(1), "miso": In(1)})


class Phase(IntEnum):
    """The frame state machine's phase (the formal invariants of :mod:`mailpulse.hdl.formal` name it)."""

    CMD = 0
    ADDR = 1
    DUMMY = 2
    WDATA = 3
    RDATA = 4
    IGNORE = 5


class SPIRegisterBridge(wiring.Component):
    """SPI slave that turns transactions into :class:`mailpulse.hdl.regs.BusSignature` accesses.

    Attributes
    ----------
    spi : In(SPISignature)
    bus : Out(BusSignature)

    How it fails: with ``sck`` faster than ``clk / 4`` edges are missed and words are garbled (the
    sync byte then reads wrong, which the host checks).  A request issued while the previous one
    has not been accepted replaces it; at ``clk / 4`` the front end answers in well under one
    word time, so this does not happen.
    """

    def __init__(self) -> None:
        super().__init__({"spi": In(SPISignature()), "bus": Out(BusSignature())})
        #: Formal verification only (:mod:`mailpulse.hdl.formal`): called at the end of
        #: :meth:`elaborate` with the module and the frame state machine's signals.
        self.formal_hook: Callable[[Module, dict[str, Any]], None] | None = None

    def _pins(self, m: Module) -> tuple[Signal, Signal, Signal]:
        """The pins through two-flip-flop synchronisers: ``(rise, cs_n, mosi)``, ``rise`` a
        one-clock pulse on each rising ``sck`` edge while ``cs_n`` is low."""
        spi = self.spi
        sck = Signal()
        cs_n = Signal(init=1)
        mosi = Signal()
        m.submodules.sync_sck = FFSynchronizer(spi.sck, sck)
        m.submodules.sync_cs = FFSynchronizer(spi.cs_n, cs_n, init=1)
        m.submodules.sync_mosi = FFSynchronizer(spi.mosi, mosi)
        sck_d = Signal()
        m.d.sync += sck_d.eq(sck)
        rise = Signal()
        m.d.comb += rise.eq(sck & ~sck_d & ~cs_n)
        return rise, cs_n, mosi

    def elaborate(self, platform):
        """The frame state machine (one state machine: command, address, dummy, data phases and
        the bus requests they issue, in one ``Switch``)."""
        m = Module()
        spi = self.spi
        bus = self.bus
        rise, cs_n, mosi = self._pins(m)

        phase = Signal(range(len(Phase)))
        cnt = Signal(5)
        is_read = Signal()
        rx = Signal(32)
        tx = Signal(32, init=SYNC_BYTE << 24)
        addr = Signal(ADDR_BITS)
        rbuf = Signal(32)
        rbuf_err = Signal()
        m.d.comb += spi.miso.eq(tx[31])

        req_valid = Signal()
        req_write = Signal()
        req_addr = Signal(ADDR_BITS)
        req_data = Signal(32)
        m.d.comb += [
            bus.req_valid.eq(req_valid),
            bus.req_write.eq(req_write),
            bus.req_addr.eq(req_addr),
            bus.req_data.eq(req_data),
        ]
        with m.If(req_valid & bus.req_ready):
            m.d.sync += req_valid.eq(0)
        with m.If(bus.resp_valid):
            m.d.sync += [rbuf.eq(bus.resp_data), rbuf_err.eq(bus.resp_err)]
        m.d.sync += bus.err_set.eq(0)

        rxn = Signal(32)
        m.d.comb += rxn.eq(Cat(mosi, rx[:31]))

        # the bit counter's compares, registered: cnt changes only on a rising sck edge (or while
        # cs_n is high), and the next edge comes at least four clocks later (sck <= clk / 4), so
        # the flags are settled when they are used; they keep the compare off the path into the
        # request registers' enables
        at = {n: Signal(name=f"cnt_is{n}") for n in (_BYTE_END, _ADDR_END, _WORD_END)}
        for n, flag in at.items():
            m.d.sync += flag.eq(cnt == n)

        # whether the next rising edge issues a request (a read or a write), registered for the
        # same reason: phase, cnt and is_read change only on an edge, so the enables of the
        # request registers are rise & a flip-flop
        iss_r = Signal()
        iss_w = Signal()
        m.d.sync += [
            iss_w.eq((phase == Phase.WDATA) & (cnt == _WORD_END)),
            iss_r.eq(((phase == Phase.ADDR) & (cnt == _ADDR_END) & is_read)
                     | ((phase == Phase.DUMMY) & (cnt == _BYTE_END))
                     | ((phase == Phase.RDATA) & (cnt == _WORD_END))),
        ]

        # the error of a prefetched word counts once the host clocks its first bit
        tx_err = Signal()

        def load_word():
            m.d.sync += [tx.eq(rbuf), tx_err.eq(rbuf_err), cnt.eq(0), addr.eq(addr + 4)]

        with m.If(cs_n):
            m.d.sync += [phase.eq(Phase.CMD), cnt.eq(0), tx.eq(SYNC_BYTE << 24), tx_err.eq(0)]
        with m.Elif(rise):
            m.d.sync += [rx.eq(rxn), cnt.eq(cnt + 1), tx.eq(Cat(Const(0, 1), tx[:31])),
                         bus.err_set.eq(tx_err), tx_err.eq(0)]
            with m.Switch(phase):
                with m.Case(Phase.CMD), m.If(at[_BYTE_END]):
                    m.d.sync += cnt.eq(0)
                    with m.If(rxn[:8] == CMD_WRITE):
                        m.d.sync += [phase.eq(Phase.ADDR), is_read.eq(0)]
                    with m.Elif(rxn[:8] == CMD_READ):
                        m.d.sync += [phase.eq(Phase.ADDR), is_read.eq(1)]
                    with m.Else():
                        m.d.sync += phase.eq(Phase.IGNORE)
                with m.Case(Phase.ADDR), m.If(at[_ADDR_END]):
                    m.d.sync += cnt.eq(0)
                    with m.If(is_read):
                        m.d.sync += [phase.eq(Phase.DUMMY), addr.eq(rxn[:ADDR_BITS] + 4)]
                    with m.Else():
                        m.d.sync += [phase.eq(Phase.WDATA), addr.eq(rxn[:ADDR_BITS])]
                with m.Case(Phase.DUMMY), m.If(at[_BYTE_END]):
                    m.d.sync += phase.eq(Phase.RDATA)
                    load_word()
                with m.Case(Phase.RDATA), m.If(at[_WORD_END]):
                    load_word()
                with m.Case(Phase.WDATA), m.If(at[_WORD_END]):
                    m.d.sync += [cnt.eq(0), addr.eq(addr + 4)]
                with m.Case(Phase.IGNORE):
                    m.d.sync += cnt.eq(0)
            # the request (after the clear on req_ready above: a new request wins)
            with m.If(iss_r | iss_w):
                m.d.sync += [req_valid.eq(1), req_write.eq(iss_w),
                             req_addr.eq(Mux(phase == Phase.ADDR, rxn[:ADDR_BITS], addr)),
                             req_data.eq(Mux(iss_w, rxn, 0))]
        if self.formal_hook is not None:
            self.formal_hook(m, {"rise": rise, "cs_n": cs_n, "mosi": mosi, "phase": phase, "cnt": cnt,
                                 "is_read": is_read, "rx": rx, "tx": tx, "tx_err": tx_err, "addr": addr,
                                 "rbuf": rbuf, "req_valid": req_valid, "at": at, "iss_r": iss_r, "iss_w": iss_w})
        return m
