"""AXI4-Lite register slave and AXI4-Stream adapters of the scorer (``docs/interfaces.md``).

Signatures are written from the master's side; a slave port is ``In(...)`` of them.  Member names
are the AXI signal names, so the Verilog ports of a top read ``s_axil__awaddr``, ``s_axis__tdata``
and cocotbext-axi finds them with ``bus_separator="__"``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .beats import RESULT_BEAT_BITS, result_beat, sample_beat
from .core import ResultLayout, SampleLayout
from .params import CoreParams
from .regmap import ADDR_BITS
from .regs import BusSignature

__all__ = [
    "RESP_OKAY",
    "RESP_SLVERR",
    "AXI4LiteSignature",
    "AXI4LiteSlave",
    "AXIStreamSignature",
    "ResultToAXIS",
    "SampleFromAXIS",
]

RESP_OKAY = 0b00
RESP_SLVERR = 0b10


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite, master's side: 32-bit data, ``addr_bits`` byte address, ``awprot``/``arprot``
    present (and ignored by the slave)."""

    def __init__(self, addr_bits: int = ADDR_BITS) -> None:
        super().__init__({
            "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class AXIStreamSignature(wiring.Signature):
    """AXI4-Stream, master's side: ``tdata``, ``tvalid``, ``tready``, ``tlast``."""

    def __init__(self, data_bits: int) -> None:
        super().__init__({
            "tdata": Out(data_bits), "tvalid": Out(1), "tready": In(1), "tlast": Out(1),
        })


class _State(IntEnum):
    IDLE = 0
    W_ACK = 1
    W_REQ = 2
    W_WAIT = 3
    W_RESP = 4
    R_ACK = 5
    R_REQ = 6
    R_WAIT = 7
    R_RESP = 8


class AXI4LiteSlave(wiring.Component):
    """AXI4-Lite slave in front of a :class:`mailpulse.hdl.regs.BusSignature` port.

    One transaction at a time; when both a read and a write wait, they alternate.  ``awready``,
    ``wready`` and ``arready`` are registered state, never a combinational function of
    ``*valid``.  A write starts when ``awvalid`` and ``wvalid`` are both high (AXI lets a slave
    wait for both; a master must not wait for a ready before raising its valid, so this cannot
    deadlock).

    Errors: ``wstrb != 0xF`` -> the write is ignored and answered ``SLVERR`` (STATUS.BUS_ERROR is
    not set: the register map was not at fault).  Unmapped addresses and writes to read-only
    registers -> ``SLVERR`` and STATUS.BUS_ERROR; reads of unmapped addresses return 0.
    """

    def __init__(self) -> None:
        #: Formal verification only (:mod:`mailpulse.hdl.formal`): called at the end of
        #: :meth:`elaborate` with the module and the transaction state.
        self.formal_hook: Callable[[Module, dict[str, Any]], None] | None = None
        super().__init__({
            "axil": In(AXI4LiteSignature()),
            "bus": Out(BusSignature()),
        })

    def elaborate(self, platform):
        m = Module()
        a = self.axil
        bus = self.bus
        state = Signal(range(len(_State)))
        addr = Signal(ADDR_BITS)
        wdata = Signal(32)
        resp = Signal(2)
        rdata = Signal(32)
        prefer_read = Signal()

        m.d.comb += [
            a.awready.eq(state == _State.W_ACK),
            a.wready.eq(state == _State.W_ACK),
            a.arready.eq(state == _State.R_ACK),
            a.bvalid.eq(state == _State.W_RESP),
            a.bresp.eq(resp),
            a.rvalid.eq(state == _State.R_RESP),
            a.rresp.eq(resp),
            a.rdata.eq(rdata),
            bus.req_valid.eq((state == _State.W_REQ) | (state == _State.R_REQ)),
            bus.req_write.eq(state == _State.W_REQ),
            bus.req_addr.eq(addr),
            bus.req_data.eq(wdata),
        ]
        m.d.sync += bus.err_set.eq(0)

        with m.Switch(state):
            with m.Case(_State.IDLE):
                want_w = a.awvalid & a.wvalid
                with m.If(want_w & ~(a.arvalid & prefer_read)):
                    m.d.sync += [state.eq(_State.W_ACK), prefer_read.eq(1)]
                with m.Elif(a.arvalid):
                    m.d.sync += [state.eq(_State.R_ACK), prefer_read.eq(0)]
            with m.Case(_State.W_ACK):
                m.d.sync += [addr.eq(a.awaddr), wdata.eq(a.wdata)]
                with m.If(a.wstrb == 0xF):
                    m.d.sync += state.eq(_State.W_REQ)
                with m.Else():
                    m.d.sync += [resp.eq(RESP_SLVERR), state.eq(_State.W_RESP)]
            with m.Case(_State.W_REQ), m.If(bus.req_ready):
                m.d.sync += state.eq(_State.W_WAIT)
            with m.Case(_State.W_WAIT), m.If(bus.resp_valid):
                m.d.sync += [state.eq(_State.W_RESP),
                             resp.eq(Cat(Const(0, 1), bus.resp_err))]
            with m.Case(_State.W_RESP), m.If(a.bready):
                m.d.sync += state.eq(_State.IDLE)
            with m.Case(_State.R_ACK):
                m.d.sync += [addr.eq(a.araddr), state.eq(_State.R_REQ)]
            with m.Case(_State.R_REQ), m.If(bus.req_ready):
                m.d.sync += state.eq(_State.R_WAIT)
            with m.Case(_State.R_WAIT), m.If(bus.resp_valid):
                m.d.sync += [state.eq(_State.R_RESP), rdata.eq(bus.resp_data),
                             resp.eq(Cat(Const(0, 1), bus.resp_err)), bus.err_set.eq(bus.resp_err)]
            with m.Case(_State.R_RESP), m.If(a.rready):
                m.d.sync += state.eq(_State.IDLE)
        if self.formal_hook is not None:
            self.formal_hook(m, {"state": state})
        return m


class SampleFromAXIS(wiring.Component):
    """``s_axis`` (the sample beat of :func:`mailpulse.hdl.beats.sample_beat`: tag and D features)
    to the core's sample stream.  Pure wiring."""

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        self.beat = sample_beat(params)   # raises ValueError when D features do not fit a beat
        super().__init__({
            "axis": In(AXIStreamSignature(self.beat.bits)),
            "o_stream": Out(stream.Signature(SampleLayout(params))),
        })

    def elaborate(self, platform):
        m = Module()
        tdata = self.axis.tdata
        m.d.comb += [
            self.o_stream.valid.eq(self.axis.tvalid),
            self.axis.tready.eq(self.o_stream.ready),
        ]
        for f in self.beat.fields:   # the payload's members are named after the beat's fields
            m.d.comb += self.o_stream.payload[f.name].eq(tdata[f.lsb:f.end])
        m.d.comb += self.o_stream.payload.last.eq(self.axis.tlast)
        return m


class ResultToAXIS(wiring.Component):
    """The core's result stream to ``m_axis`` (:func:`mailpulse.hdl.beats.result_beat`: score, tag,
    argmax, anomaly flag, with routes the below/above flags, every other bit 0).  Pure wiring."""

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(ResultLayout(params))),
            "axis": Out(AXIStreamSignature(RESULT_BEAT_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        r = self.i_stream.payload
        beat = result_beat(self.params)
        m.d.comb += [
            self.axis.tvalid.eq(self.i_stream.valid),
            self.i_stream.ready.eq(self.axis.tready),
            self.axis.tdata.eq(_place(beat.bits, [(f.lsb, f.width, r[f.name]) for f in beat.fields])),
            self.axis.tlast.eq(r.last),
        ]
        return m


def _place(bits: int, parts: list[tuple[int, int, Value]]) -> Value:
    """A ``bits``-wide value with each ``(lsb, width, value)`` zero-extended into its place, 0 elsewhere."""
    out: list[Value] = []
    pos = 0
    for lsb, width, v in sorted(parts, key=lambda t: t[0]):
        if lsb > pos:
            out.append(Const(0, lsb - pos))
        # a value narrower than its field is zero-extended; a wider one (the 8-bit argmax in its 7-bit
        # field: K <= 64) loses only bits that are always 0
        out.append(v.as_unsigned() if len(v) == width else v[:width] if len(v) > width else
                   Cat(v, Const(0, width - len(v))))
        pos = lsb + width
    return Cat(*out, Const(0, bits - pos)) if pos < bits else Cat(*out)
