"""AXI4-Lite register slave and AXI4-Stream adapters of the scorer (``docs/interfaces.md``).

Signatures are written from the master's side; a slave port is ``In(...)`` of them.  Member names
are the AXI signal names, so the Verilog ports of a top read ``s_axil__awaddr``, ``s_axis__tdata``
and cocotbext-axi finds them with ``bus_separator="__"``.
"""

from __future__ import annotations

from enum import IntEnum

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .core import ResultLayout, SampleLayout
from .params import CoreParams
from .regmap import ADDR_BITS
from .regs import BusSignature

__all__ = [
    "RESP_OKAY",
    "RESP_SLVERR",
    "RESULT_TDATA_BITS",
    "SAMPLE_TDATA_BITS",
    "AXI4LiteSignature",
    "AXI4LiteSlave",
    "AXIStreamSignature",
    "ResultToAXIS",
    "SampleFromAXIS",
]

RESP_OKAY = 0b00
RESP_SLVERR = 0b10
#: Width of the sample stream's ``tdata`` (tag + up to 14 features).
SAMPLE_TDATA_BITS = 256
#: Width of the result stream's ``tdata``.
RESULT_TDATA_BITS = 128


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
        return m


class SampleFromAXIS(wiring.Component):
    """``s_axis`` (256-bit beats: tag in ``tdata[31:0]``, feature d in ``tdata[32+16d+15:32+16d]``)
    to the core's sample stream.  Pure wiring."""

    def __init__(self, params: CoreParams) -> None:
        if 32 + params.in_bits * params.d > SAMPLE_TDATA_BITS:
            raise ValueError(f"D={params.d} features do not fit the {SAMPLE_TDATA_BITS}-bit sample beat")
        self.params = params
        super().__init__({
            "axis": In(AXIStreamSignature(SAMPLE_TDATA_BITS)),
            "o_stream": Out(stream.Signature(SampleLayout(params))),
        })

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.d.comb += [
            self.o_stream.valid.eq(self.axis.tvalid),
            self.axis.tready.eq(self.o_stream.ready),
            self.o_stream.payload.tag.eq(self.axis.tdata[:32]),
            self.o_stream.payload.features.eq(self.axis.tdata[32:32 + p.in_bits * p.d]),
            self.o_stream.payload.last.eq(self.axis.tlast),
        ]
        return m


class ResultToAXIS(wiring.Component):
    """The core's result stream to ``m_axis`` (128-bit beats: score in ``tdata[31:0]``, tag in
    ``tdata[63:32]``, argmax in ``tdata[71:64]``, anomaly flag in ``tdata[72]``, other bits 0).
    Pure wiring."""

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(ResultLayout(params))),
            "axis": Out(AXIStreamSignature(RESULT_TDATA_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        r = self.i_stream.payload
        m.d.comb += [
            self.axis.tvalid.eq(self.i_stream.valid),
            self.i_stream.ready.eq(self.axis.tready),
            self.axis.tdata.eq(Cat(r.score, Const(0, 32 - len(r.score)), r.tag, r.argmax, r.anomaly)),
            self.axis.tlast.eq(r.last),
        ]
        return m
