"""Helpers shared by the tests/test_hdl_*.py simulator tests (Amaranth's Python simulator).

Transaction-level only: pack/unpack stream payloads, load a model into the core's shadow
registers and tables, drive a stream with random idle/back-pressure, and do register accesses on
the front end's internal bus port.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from mailpulse.hdl.axi import AXI4LiteSignature, AXI4LiteSlave
from mailpulse.hdl.core import ResultLayout, SampleLayout, ScorerCore
from mailpulse.hdl.folded import FoldedScorerCore
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import BusError, CoreConfig, EmulatedCore
from mailpulse.hdl.regmap import WAIT_LIMIT, pack_weights
from mailpulse.hdl.regs import BusSignature, RegisterFile
from mailpulse.hdl.spi import SPIRegisterBridge, SPISignature


def pack_sample(p: CoreParams, x: np.ndarray, tag: int, last: int = 0) -> int:
    lay = SampleLayout(p)
    feats = 0
    for d in range(p.d):
        feats |= (int(x[d]) & 0xFFFF) << (16 * d)
    return (feats << lay["features"].offset) | ((tag & 0xFFFFFFFF) << lay["tag"].offset) | (
        (last & 1) << lay["last"].offset)


@dataclass(frozen=True)
class Result:
    score: int
    anomaly: int
    argmax: int
    tag: int
    last: int

    def row(self) -> tuple[int, int, int, int]:
        return self.score, self.anomaly, self.argmax, self.tag


def unpack_result(p: CoreParams, v: int) -> Result:
    lay = ResultLayout(p)

    def f(name: str) -> int:
        fl = lay[name]
        return (v >> fl.offset) & ((1 << fl.width) - 1)

    return Result(f("score"), f("anomaly"), f("argmax"), f("tag"), f("last"))


async def core_load(ctx, core: ScorerCore, cfg: CoreConfig, bank: int) -> None:
    """Poke ``cfg``'s tables into table ``bank`` and its threshold into the shadow threshold."""
    p = core.params
    ctx.set(core.ctrl.shadow_threshold, int(cfg.threshold))
    for k in range(p.k):
        for b in range(p.b):
            ctx.set(core.table_data[k][bank * p.b + b], int(cfg.tables[k, b]))


async def core_commit(ctx, core: ScorerCore, cfg: CoreConfig) -> None:
    """Commit ``cfg``'s weights/offsets/shifts the way the front end does: strobe commit, wait
    for ``drained``, load one projection per cycle, strobe ``commit_done``."""
    c = core.ctrl
    ctx.set(c.commit, 1)
    await ctx.tick()
    ctx.set(c.commit, 0)
    while not ctx.get(c.drained):
        await ctx.tick()
    await load_active(ctx, core, cfg)


async def load_active(ctx, core: ScorerCore, cfg: CoreConfig) -> None:
    """The copy phase of a commit (the core is drained): loads, then ``commit_done``."""
    p = core.params
    c = core.ctrl
    for k in range(p.k):
        ctx.set(c.load_valid, 1)
        ctx.set(c.load_index, k)
        ctx.set(c.load_weights, pack_weights(p, [int(v) for v in cfg.weights[k]]))
        ctx.set(c.load_offset, int(cfg.offsets[k]) & ((1 << p.offset_bits) - 1))
        ctx.set(c.load_shift, int(cfg.shifts[k]))
        await ctx.tick()
    ctx.set(c.load_valid, 0)      # commit_done right after the last load, as the front end does
    ctx.set(c.commit_done, 1)
    await ctx.tick()
    ctx.set(c.commit_done, 0)
    assert not ctx.get(c.commit_pending)


def random_samples(p: CoreParams, rng: np.random.Generator, n: int) -> np.ndarray:
    """Random features, with a share of extreme values (both ends of the 16-bit range)."""
    x = rng.integers(p.in_min, p.in_max + 1, size=(n, p.d))
    ext = rng.random((n, p.d)) < 0.1
    x[ext] = rng.choice([p.in_min, p.in_max, 0, -1], size=int(ext.sum()))
    return x.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Register front end benches: core + RegisterFile behind the internal bus, AXI4-Lite or SPI.
# ---------------------------------------------------------------------------------------------


#: Cycles a register access may take before a test calls it hung: the front end answers every
#: access within WAIT_LIMIT cycles of waiting (plus a commit's copy and a few cycles of its own).
BUS_TIMEOUT = WAIT_LIMIT + 1000


class Bench(wiring.Component):
    """ScorerCore + RegisterFile, with the register port as ``bus``, ``axil`` or ``spi``."""

    def __init__(self, p: CoreParams, front: str = "bus", folded: bool = False, push_only: bool = False) -> None:
        self.params = p
        self.front = front
        self.folded = folded or push_only
        self.core: FoldedScorerCore | ScorerCore = (
            FoldedScorerCore(p) if folded else ScorerCore(p, stream=False) if push_only else ScorerCore(p))
        port = {"bus": In(BusSignature()), "axil": In(AXI4LiteSignature()), "spi": In(SPISignature())}[front]
        super().__init__({
            front: port,
            "i_stream": In(stream.Signature(SampleLayout(p))),
            "o_stream": Out(stream.Signature(ResultLayout(p))),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = m.submodules.core = self.core
        regs = m.submodules.regs = RegisterFile(self.params, core.latency, core.clear_cycles)
        wiring.connect(m, regs.ctrl, core.ctrl)
        if self.folded:
            m.d.comb += [self.i_stream.ready.eq(0), self.o_stream.valid.eq(0)]
        else:
            wiring.connect(m, wiring.flipped(self.i_stream), core.i_stream)
            wiring.connect(m, core.o_stream, wiring.flipped(self.o_stream))
        m.d.comb += self.irq.eq(regs.irq)
        if self.front == "bus":
            wiring.connect(m, wiring.flipped(self.bus), regs.bus)
        elif self.front == "axil":
            br = m.submodules.axil = AXI4LiteSlave()
            wiring.connect(m, wiring.flipped(self.axil), br.axil)
            wiring.connect(m, br.bus, regs.bus)
        else:
            sb = m.submodules.spi = SPIRegisterBridge()
            wiring.connect(m, wiring.flipped(self.spi), sb.spi)
            wiring.connect(m, sb.bus, regs.bus)
        return m


async def bus_access(ctx, bus, addr: int, write: bool, data: int = 0) -> tuple[int, int]:
    """One access on the internal port, behaving like a bridge (read errors -> err_set)."""
    ctx.set(bus.req_valid, 1)
    ctx.set(bus.req_write, int(write))
    ctx.set(bus.req_addr, addr)
    ctx.set(bus.req_data, data & 0xFFFFFFFF)
    for _ in range(BUS_TIMEOUT):
        ready = ctx.get(bus.req_ready)
        # the front end answers only a request it took (a latch without req_ready would run it twice)
        assert not ctx.get(bus.resp_valid), f"an answer to 0x{addr:04X} before the front end took it"
        await ctx.tick()
        if ready:
            break
    else:
        raise AssertionError(f"the front end never accepted the access to 0x{addr:04X}")
    ctx.set(bus.req_valid, 0)
    for _ in range(BUS_TIMEOUT):
        if ctx.get(bus.resp_valid):
            rdata, err = ctx.get(bus.resp_data), ctx.get(bus.resp_err)
            ctx.set(bus.err_set, int(err and not write))
            await ctx.tick()
            ctx.set(bus.err_set, 0)
            return rdata, err
        await ctx.tick()
    raise AssertionError(f"the front end never answered the access to 0x{addr:04X}")


async def axil_write(ctx, a, addr: int, data: int, strb: int = 0xF) -> int:
    """AXI4-Lite write; returns ``bresp``."""
    ctx.set(a.awaddr, addr)
    ctx.set(a.awvalid, 1)
    ctx.set(a.wdata, data & 0xFFFFFFFF)
    ctx.set(a.wstrb, strb)
    ctx.set(a.wvalid, 1)
    ctx.set(a.bready, 1)
    while True:
        ready = ctx.get(a.awready)
        assert ready == ctx.get(a.wready)
        await ctx.tick()
        if ready:
            break
    ctx.set(a.awvalid, 0)
    ctx.set(a.wvalid, 0)
    while True:
        if ctx.get(a.bvalid):
            resp = ctx.get(a.bresp)
            await ctx.tick()
            ctx.set(a.bready, 0)
            return resp
        await ctx.tick()


async def axil_read(ctx, a, addr: int) -> tuple[int, int]:
    """AXI4-Lite read; returns ``(rdata, rresp)``."""
    ctx.set(a.araddr, addr)
    ctx.set(a.arvalid, 1)
    ctx.set(a.rready, 1)
    while True:
        ready = ctx.get(a.arready)
        await ctx.tick()
        if ready:
            break
    ctx.set(a.arvalid, 0)
    while True:
        if ctx.get(a.rvalid):
            out = ctx.get(a.rdata), ctx.get(a.rresp)
            await ctx.tick()
            ctx.set(a.rready, 0)
            return out
        await ctx.tick()


async def spi_xfer(ctx, spi, mosi: bytes, half: int = 2) -> bytes:
    """One SPI mode-0 transaction (cs_n low for its length), ``half`` clocks per sck half period."""
    ctx.set(spi.cs_n, 0)
    await ctx.tick().repeat(half)
    out = bytearray()
    for byte in mosi:
        got = 0
        for bit in range(7, -1, -1):
            ctx.set(spi.mosi, (byte >> bit) & 1)
            await ctx.tick().repeat(half)
            got = (got << 1) | ctx.get(spi.miso)
            ctx.set(spi.sck, 1)
            await ctx.tick().repeat(half)
            ctx.set(spi.sck, 0)
        out.append(got)
    await ctx.tick().repeat(half)
    ctx.set(spi.cs_n, 1)
    await ctx.tick().repeat(4)
    return bytes(out)


class Host:
    """Does every access on the RTL and on the model and compares the answers."""

    def __init__(self, ctx, bench: Bench, model: EmulatedCore) -> None:
        self.ctx, self.bench, self.model = ctx, bench, model
        self.latency = bench.core.latency

    async def read(self, addr: int) -> int:
        rdata, err = await bus_access(self.ctx, self.bench.bus, addr, False)
        reg = self.model.regmap.decode(addr)
        if reg is not None and reg[0].name == "LATENCY":
            exp, exp_err = self.latency, 0
        else:
            try:
                exp, exp_err = self.model.read(addr), 0
            except BusError:
                exp, exp_err = 0, 1
        assert (rdata, err) == (exp, exp_err), f"read 0x{addr:04X}: RTL {(rdata, err)} != model {(exp, exp_err)}"
        return rdata

    async def write(self, addr: int, value: int) -> int:
        """Write on both; returns the RTL's error bit."""
        _, err = await bus_access(self.ctx, self.bench.bus, addr, True, value)
        try:
            self.model.write(addr, value)
            exp_err = 0
        except BusError:
            exp_err = 1
        assert err == exp_err, f"write 0x{addr:04X}: RTL err {err} != model {exp_err}"
        return int(err)

    async def wait_status(self, field: str, value: int) -> None:
        st = self.model.regmap["STATUS"]
        f = st.field(field)
        for _ in range(500):
            rdata, _ = await bus_access(self.ctx, self.bench.bus, st.address(), False)
            if (rdata >> f.lsb) & 1 == value:
                return
        raise AssertionError(f"STATUS.{field} never became {value}")
