"""The AXI4-Lite slave and the SPI register bridge in front of the register file (Amaranth
simulator), checked against mailpulse.hdl.reference.EmulatedCore and docs/interfaces.md."""

from __future__ import annotations

import numpy as np
from _hdl_sim import Bench, axil_read, axil_write, spi_xfer
from amaranth.sim import Simulator
from mailpulse.hdl.axi import RESP_OKAY, RESP_SLVERR
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import CoreConfig, EmulatedCore, bins, model_writes
from mailpulse.hdl.regmap import CORE_ID, RegisterMap
from mailpulse.hdl.spiproto import CMD_READ, CMD_WRITE, SYNC_BYTE

P = get_params("small")
RM = RegisterMap(P)


def run(bench: Bench, tb) -> None:
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def status_bit(value: int, name: str) -> int:
    return (value >> RM["STATUS"].field(name).lsb) & 1


def test_axil_reads_writes_and_errors() -> None:
    bench = Bench(P, "axil")

    async def tb(ctx):
        a = bench.axil
        assert await axil_read(ctx, a, RM["ID"].address()) == (CORE_ID, RESP_OKAY)
        thr = RM["THRESHOLD"].address()
        assert await axil_write(ctx, a, thr, 1234) == RESP_OKAY
        assert await axil_read(ctx, a, thr) == (1234, RESP_OKAY)
        # partial strobes: ignored, SLVERR, BUS_ERROR untouched
        assert await axil_write(ctx, a, thr, 99, strb=0x3) == RESP_SLVERR
        assert await axil_read(ctx, a, thr) == (1234, RESP_OKAY)
        st, _ = await axil_read(ctx, a, RM["STATUS"].address())
        assert not status_bit(st, "BUS_ERROR")
        # signed field read back sign-extended
        off = RM["OFFSET"].address(3)
        assert await axil_write(ctx, a, off, (1 << P.offset_bits) - 5) == RESP_OKAY
        assert await axil_read(ctx, a, off) == ((-5) & 0xFFFFFFFF, RESP_OKAY)
        # RO write and unmapped read: SLVERR + sticky BUS_ERROR, reads 0
        assert await axil_write(ctx, a, RM["ID"].address(), 0) == RESP_SLVERR
        assert await axil_read(ctx, a, RM["ID"].address()) == (CORE_ID, RESP_OKAY)
        st, _ = await axil_read(ctx, a, RM["STATUS"].address())
        assert status_bit(st, "BUS_ERROR")
        assert await axil_write(ctx, a, RM["CTRL"].address(), 1 << RM["CTRL"].field("CLEAR_ERROR").lsb) == RESP_OKAY
        gap = next(a for a in range(RM["LATENCY"].address(), 0x100, 4) if RM.decode(a) is None)
        assert RM.decode(gap) is None
        assert await axil_read(ctx, a, gap) == (0, RESP_SLVERR)
        st, _ = await axil_read(ctx, a, RM["STATUS"].address())
        assert status_bit(st, "BUS_ERROR")
        # WO read: 0, OKAY
        assert await axil_read(ctx, a, RM["CTRL"].address()) == (0, RESP_OKAY)

    run(bench, tb)


def test_axil_read_and_write_waiting_together() -> None:
    """A read and a write offered in the same cycle are both served (alternating)."""
    bench = Bench(P, "axil")

    async def tb(ctx):
        a = bench.axil
        for _ in range(4):
            await ctx.tick()
        ctx.set(a.araddr, RM["ID"].address())
        ctx.set(a.arvalid, 1)
        ctx.set(a.rready, 1)
        ctx.set(a.awaddr, RM["TAG"].address())
        ctx.set(a.awvalid, 1)
        ctx.set(a.wdata, 77)
        ctx.set(a.wstrb, 0xF)
        ctx.set(a.wvalid, 1)
        ctx.set(a.bready, 1)
        got_r = got_b = False
        for _ in range(60):
            if ctx.get(a.arready):
                ctx.set(a.arvalid, 0)
            if ctx.get(a.awready):
                ctx.set(a.awvalid, 0)
                ctx.set(a.wvalid, 0)
            if ctx.get(a.rvalid):
                assert ctx.get(a.rdata) == CORE_ID
                got_r = True
            if ctx.get(a.bvalid):
                assert ctx.get(a.bresp) == RESP_OKAY
                got_b = True
            await ctx.tick()
            ctx.set(a.arvalid, 0) if got_r else None
        assert got_r and got_b
        ctx.set(a.arvalid, 0)
        assert await axil_read(ctx, a, RM["TAG"].address()) == (77, RESP_OKAY)

    run(bench, tb)


def word_bytes(v: int) -> bytes:
    return int(v & 0xFFFFFFFF).to_bytes(4, "big")


def spi_read_frame(addr: int, n: int) -> bytes:
    return bytes([CMD_READ]) + addr.to_bytes(2, "big") + b"\0" + b"\0" * (4 * n)


def spi_write_frame(addr: int, words: list[int]) -> bytes:
    return bytes([CMD_WRITE]) + addr.to_bytes(2, "big") + b"".join(word_bytes(w) for w in words)


def words_of(miso: bytes, n: int) -> list[int]:
    return [int.from_bytes(miso[4 + 4 * i:8 + 4 * i], "big") for i in range(n)]


def test_spi_protocol_burst_errors_and_push() -> None:
    """Sync byte, burst read with auto-increment, burst write, BUS_ERROR only for words actually
    clocked out (a prefetch past the end of a register block does not count), unknown command
    ignored, a whole model load + PUSH over SPI equal to the model, irq = RESULT_VALID."""
    bench = Bench(P, "spi", folded=True)
    model = EmulatedCore(P)
    rng = np.random.default_rng(8)
    cfg = CoreConfig.random(P, rng)
    x = rng.integers(P.in_min, P.in_max + 1, size=P.d)
    cfg.threshold = 5   # flagged (the score is a sum of K random 16-bit values)

    async def tb(ctx):
        spi = bench.spi
        ctx.set(spi.cs_n, 1)
        for _ in range(4):
            await ctx.tick()
        # ID..PARAMS in one burst, right after reset
        miso = await spi_xfer(ctx, spi, spi_read_frame(RM["ID"].address(), 3))
        assert miso[0] == SYNC_BYTE and miso[1:4] == b"\0\0\0"
        assert words_of(miso, 3) == [model.read(RM[n].address()) for n in ("ID", "VERSION", "PARAMS")]
        # one word at the end of a block (the last register before the gap after LATENCY): the
        # prefetched unmapped word must not set BUS_ERROR
        end = next(a for a in range(RM["LATENCY"].address(), 0x100, 4) if RM.decode(a + 4) is None)
        want = bench.core.latency if end == RM["LATENCY"].address() else model.read(end)
        miso = await spi_xfer(ctx, spi, spi_read_frame(end, 1))
        assert words_of(miso, 1) == [want]
        miso = await spi_xfer(ctx, spi, spi_read_frame(RM["STATUS"].address(), 1))
        assert not status_bit(words_of(miso, 1)[0], "BUS_ERROR")
        # clocking the unmapped word out does set it
        miso = await spi_xfer(ctx, spi, spi_read_frame(end, 2))
        assert words_of(miso, 2) == [want, 0]
        miso = await spi_xfer(ctx, spi, spi_read_frame(RM["STATUS"].address(), 1))
        assert status_bit(words_of(miso, 1)[0], "BUS_ERROR")
        await spi_xfer(ctx, spi, spi_write_frame(RM["CTRL"].address(), [1 << RM["CTRL"].field("CLEAR_ERROR").lsb]))
        # unknown command: nothing happens, no error
        await spi_xfer(ctx, spi, bytes([0x55]) + spi_write_frame(RM["THRESHOLD"].address(), [1])[1:])
        miso = await spi_xfer(ctx, spi, spi_read_frame(RM["THRESHOLD"].address(), 1))
        assert words_of(miso, 1) == [0xFFFFFFFF]
        # a model: bursts of consecutive addresses in one frame each, then COMMIT.  Of the
        # tables only the entries the pushed sample looks up (the rest stay 0 in RTL and model).
        b = bins(P, cfg, x[None, :])[0]
        tab = RM["TABLE"]
        writes = [w for w in model_writes(RM, cfg)
                  if not tab.offset <= w[0] <= tab.last_address
                  or (w[0] - tab.offset) // 4 in {k * P.b + int(b[k]) for k in range(P.k)}]
        i = 0
        while i < len(writes):
            j = i + 1
            while j < len(writes) and writes[j][0] == writes[j - 1][0] + 4 and j - i < 64:
                j += 1
            await spi_xfer(ctx, spi, spi_write_frame(writes[i][0], [v for _, v in writes[i:j]]))
            i = j
        for a, v in writes:
            model.write(a, v)
        await spi_xfer(ctx, spi, spi_write_frame(RM["CTRL"].address(), [1 << RM["CTRL"].field("COMMIT").lsb]))
        model.write(RM["CTRL"].address(), 1)
        # burst read back the weights (signed fields, whole array) and offsets
        for name in ("WEIGHTS", "OFFSET", "SHIFT"):
            r = RM[name]
            miso = await spi_xfer(ctx, spi, spi_read_frame(r.address(), r.count))
            assert words_of(miso, r.count) == [model.read(r.address(k)) for k in range(r.count)]
        # push one sample: FEATURE[0..D-1], TAG, PUSH in one frame (consecutive addresses)
        await spi_xfer(ctx, spi, spi_write_frame(RM["FEATURE"].address(), [int(v) for v in x]))
        await spi_xfer(ctx, spi, spi_write_frame(RM["TAG"].address(), [0xCAFE, 1]))   # TAG, PUSH
        for d in range(P.d):
            model.write(RM["FEATURE"].address(d), int(x[d]))
        model.write(RM["TAG"].address(), 0xCAFE)
        model.write(RM["PUSH"].address(), 1)
        for _ in range(bench.core.latency + 10):
            await ctx.tick()
        assert ctx.get(bench.irq) == 1
        names = ("RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "STATUS", "SAMPLES", "ANOMALIES")
        for n in names:
            miso = await spi_xfer(ctx, spi, spi_read_frame(RM[n].address(), 1))
            assert words_of(miso, 1) == [model.read(RM[n].address())], n
        assert model.read(RM["RESULT_INFO"].address()) & 1 == 1

    run(bench, tb)


def test_spi_writes_right_after_reset_survive_the_clear() -> None:
    """The clear after reset (2*K*B clocks on the SPI top) runs beside the bus: a model load that
    starts at once (weights, then tables in address order) is neither lost nor cleared away."""
    bench = Bench(P, "spi", folded=True)
    rng = np.random.default_rng(12)
    weights = [int(v) for v in rng.integers(0, 1 << (2 * P.d), size=P.k)]
    table = [int(v) for v in rng.integers(0, 1 << 16, size=24)]

    async def tb(ctx):
        spi = bench.spi
        ctx.set(spi.cs_n, 1)
        await ctx.tick().repeat(3)
        await spi_xfer(ctx, spi, spi_write_frame(RM["WEIGHTS"].address(), weights))
        await spi_xfer(ctx, spi, spi_write_frame(RM["TABLE"].address(), table))
        miso = await spi_xfer(ctx, spi, spi_read_frame(RM["WEIGHTS"].address(), P.k))
        assert words_of(miso, P.k) == weights
        await ctx.tick().repeat(bench.core.clear_cycles)
        kb = P.k * P.b
        # shadow bank (1) holds the writes, everything else is zero
        got = [ctx.get(bench.core.table_data[kb + i]) for i in range(len(table) + 8)]
        assert got == [*table, *[0] * 8]

    run(bench, tb)
