"""cocotb tests of the ``mailpulse_spi`` top, driven by the bit-level :class:`mailpulse.sim.tb.SpiMaster`.

Register reads and writes (single and burst), read-only and bad addresses (``STATUS.BUS_ERROR``,
no per-access error on SPI), a whole model load, PUSH/RESULT and ``irq``, bad command bytes and
partial words, all checked against :class:`mailpulse.hdl.reference.EmulatedCore`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import ADAPT_FRAC, BusError, CoreConfig, EmulatedCore, bins, model_writes, score
from mailpulse.hdl.spiproto import CMD_WRITE

from . import plans
from .codec import random_samples
from .tb import CLK_NS, SpiMaster, settings


def bursts(writes: Sequence[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """Group (address, value) writes into runs of consecutive word addresses."""
    out: list[tuple[int, list[int]]] = []
    for a, v in writes:
        if out and out[-1][0] + 4 * len(out[-1][1]) == a:
            out[-1][1].append(v)
        else:
            out.append((a, [v]))
    return out


class SpiTB:
    """Clock, reset, SPI master and the register model of the SPI top."""

    def __init__(self, dut: Any, params: CoreParams, seed: int) -> None:
        self.dut = dut
        self.params = params
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.model = EmulatedCore(params)
        self.regmap = self.model.regmap
        Clock(dut.clk, CLK_NS, unit="ns").start()
        self.spi = SpiMaster(dut, half_period_ns=2 * CLK_NS)  # sck = clk / 4, the fastest allowed

    async def reset(self) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 10)
        self.model.reset()

    def _model_read(self, a: int) -> int:
        try:
            return self.model.read(a)
        except BusError:
            return 0

    async def read(self, addr: int, count: int = 1) -> list[int]:
        """Burst read checked word by word against the model, and the sync byte."""
        got = await self.spi.read(addr, count)
        assert self.spi.last_sync == SpiMaster.SYNC, f"sync byte 0x{self.spi.last_sync:02X}, not 0xA5"
        for i, v in enumerate(got):
            a = addr + 4 * i
            try:
                want = self._model_read(a)
            except NotImplementedError:  # LATENCY
                continue
            assert v == want, f"SPI read of 0x{a:04X}: 0x{v:08X}, the model says 0x{want:08X}"
        return got

    async def write(self, addr: int, words: Sequence[int]) -> None:
        await self.spi.write(addr, words)
        assert self.spi.last_sync == SpiMaster.SYNC, f"sync byte 0x{self.spi.last_sync:02X}, not 0xA5"
        for i, v in enumerate(words):
            try:
                self.model.write(addr + 4 * i, v)
            except BusError:
                pass

    async def status(self) -> int:
        return (await self.read(self.regmap["STATUS"].address()))[0]

    async def ctrl(self, *fields: str) -> None:
        reg = self.regmap["CTRL"]
        await self.write(reg.address(), [sum(reg.field(f).mask for f in fields)])

    async def load(self, cfg: CoreConfig, x: np.ndarray) -> None:
        """Load ``cfg`` in bursts and commit it.

        Bit-level SPI is slow in simulation: every register of the model is written, but of the
        table only the entries samples ``x`` use plus one 64-word burst (the rest stays as it was,
        in the model too), unless ``MAILPULSE_SIM_FULL_TABLE`` is set.
        """
        params, rm = self.params, self.regmap
        writes = model_writes(rm, cfg)
        table = rm["TABLE"]
        if not os.environ.get("MAILPULSE_SIM_FULL_TABLE"):
            used = {int(k) * params.b + int(b) for row in bins(params, cfg, x) for k, b in enumerate(row)}
            used |= set(range(64))
            writes = [(a, v) for a, v in writes
                      if not table.offset <= a <= table.last_address or (a - table.offset) // 4 in used]
        for a, words in bursts(writes):
            await self.write(a, words)
        await self.ctrl("COMMIT")
        await self.wait_quiet()

    async def push(self, x: np.ndarray, tag: int) -> None:
        """Push one sample and wait for its result (``FEATURE`` burst, ``TAG``, ``PUSH``)."""
        rm = self.regmap
        await self.write(rm["FEATURE"].address(0), [int(v) & 0xFFFFFFFF for v in x])
        await self.write(rm["TAG"].address(), [int(tag)])
        await self.write(rm["PUSH"].address(), [1])
        await self.wait_quiet()

    async def wait_quiet(self) -> None:
        reg = self.regmap["STATUS"]
        busy = reg.field("COMMIT_PENDING").mask | reg.field("BUSY").mask | reg.field("PUSH_PENDING").mask
        for _ in range(100):
            (v,) = await self.spi.read(reg.address())
            if not v & busy:
                return
        raise AssertionError(f"STATUS stayed busy: 0x{v:08X}")


async def start(dut: Any) -> SpiTB:
    params, seed, _n, _m = settings()
    tb = SpiTB(dut, params, seed)
    await tb.reset()
    return tb


@cocotb.test()
async def test_spi_registers(dut: Any) -> None:
    """Reset values, RW write/read (single and burst), RO and bad addresses, protocol errors."""
    tb = await start(dut)
    rm = tb.regmap
    # reset values: one burst over the fixed registers, single reads of the rest
    await tb.read(rm["ID"].address(), 11)
    for reg in rm:
        if reg.name != "TABLE":
            await tb.read(reg.address(), reg.count)
    await tb.read(rm["TABLE"].address(0), 2)
    # RW registers with random 32-bit values, written as bursts per array and read back as bursts
    for reg in rm:
        if reg.access == "RW":
            await tb.write(reg.address(), [tb.rng.getrandbits(32) for _ in range(reg.count)])
    for reg in rm:
        if reg.access == "RW":
            await tb.read(reg.address(), reg.count)
    # a read-only write sets BUS_ERROR; CLEAR_ERROR clears it
    await tb.write(rm["ID"].address(), [0])
    await tb.read(rm["ID"].address())
    assert (await tb.status()) & rm["STATUS"].field("BUS_ERROR").mask, "RO write did not set BUS_ERROR"
    await tb.ctrl("CLEAR_ERROR")
    await tb.status()
    # bad addresses: read 0 and set BUS_ERROR; writes too
    gap = next(a for a in range(0, rm["TABLE"].offset, 4) if rm.decode(a) is None)
    for a in (gap, rm["TABLE"].last_address + 4, 0xFFFC):
        await tb.read(a)
        await tb.status()
        await tb.ctrl("CLEAR_ERROR")
        await tb.write(a, [0x12345678])
        await tb.status()
        await tb.ctrl("CLEAR_ERROR")
    # an unknown command byte: the rest of the transaction is ignored
    thr = rm["THRESHOLD"].address()
    await tb.spi.raw(bytes([0x55, thr >> 8, thr & 0xFF, 1, 2, 3, 4]))
    await tb.read(thr)
    # a partial word at the end of a write is discarded (the whole words before it are written)
    await tb.spi.raw(bytes([CMD_WRITE, thr >> 8, thr & 0xFF, 0, 0, 0, 7, 9, 9]))
    tb.model.write(thr, 7)
    await tb.read(thr)
    # the threshold commit and a full commit, read back
    await tb.ctrl("COMMIT_THRESHOLD")
    await tb.wait_quiet()
    await tb.read(rm["THRESHOLD_ACTIVE"].address())
    await tb.ctrl("COMMIT")
    await tb.wait_quiet()
    await tb.read(rm["ID"].address(), 11)


@cocotb.test()
async def test_spi_model_push(dut: Any) -> None:
    """Model load over SPI (bursts), COMMIT, PUSH/RESULT with irq, counters.

    ``MAILPULSE_SIM_FULL_TABLE=1`` writes the whole table (slow on Icarus: ~K*B*32 SPI bits).
    """
    tb = await start(dut)
    params = tb.params
    rm = tb.regmap
    cfg = CoreConfig.random(params, tb.nrng)
    x, tags = random_samples(params, tb.nrng, 10)
    cfg.threshold = int(np.median(score(params, cfg, x, tags).score))
    await tb.load(cfg, x)
    assert int(dut.irq.value) == 0, "irq is high before any PUSH"
    for i in range(len(x)):
        await tb.push(x[i], int(tags[i]))
        await tb.read(rm["RESULT_SCORE"].address(), 3)
        await tb.read(rm["STATUS"].address())
        assert int(dut.irq.value) == 1, "irq is low while STATUS.RESULT_VALID is set"
    await tb.read(rm["SAMPLES"].address(), 2)
    await tb.ctrl("CLEAR_COUNTERS")
    await tb.read(rm["SAMPLES"].address(), 2)
    await tb.read(rm["OFFSET"].address(), params.k)


@cocotb.test()
async def test_spi_adaptive(dut: Any) -> None:
    """The adaptive threshold on the folded core through SPI, bit for bit against the model: a
    setting from :func:`mailpulse.sim.plans.adaptive_config` (on these pushed samples the threshold
    moves, steps freely, has a fraction, is clamped at T_MIN and at T_MAX); after each PUSH the
    result (flag in RESULT_INFO) and THRESHOLD_ACTIVE/THRESHOLD_FRAC are read; COMMIT_THRESHOLD
    reseeds it (fraction 0); a second adaptive model committed with a fraction in the accumulator
    reseeds it again and adapts from its own seed."""
    tb = await start(dut)
    params = tb.params
    rm = tb.regmap
    count = 24
    frac_mask = (1 << ADAPT_FRAC) - 1
    x, tags = random_samples(params, tb.nrng, count)
    cfg = plans.adaptive_config(params, x, tb.nrng)
    await tb.load(cfg, x)
    await tb.read(rm["ADAPT"].address(), 3)   # ADAPT, T_MIN, T_MAX
    state = [rm[name].address() for name in plans.state_registers(cfg)]

    async def push_all(xs: np.ndarray, ts: np.ndarray, until_fraction: bool = False) -> None:
        for i in range(len(xs)):
            if until_fraction and i and tb.model.acc & frac_mask:
                return
            await tb.push(xs[i], int(ts[i]))
            await tb.read(rm["RESULT_SCORE"].address(), 3)
            for a in state:
                await tb.read(a)
        assert not until_fraction or tb.model.acc & frac_mask, "the pushes left no fraction in the accumulator"

    await push_all(x, tags)
    await push_all(x, tags, until_fraction=True)
    await tb.write(rm["THRESHOLD"].address(), [cfg.threshold])
    await tb.ctrl("COMMIT_THRESHOLD")
    await tb.wait_quiet()
    for a in state:
        await tb.read(a)
    await push_all(x, tags, until_fraction=True)
    x2, tags2 = random_samples(params, tb.nrng, count)
    new = plans.adaptive_config(params, x2, tb.nrng)
    await tb.load(new, x2)
    for a in state:
        await tb.read(a)
    await push_all(x2, tags2)


@cocotb.test()
async def test_spi_routes(dut: Any) -> None:
    """The per-route latency intervals on the folded core through SPI (a set with routes), bit for
    bit against the model: a setting and events from :func:`mailpulse.sim.plans.route_plan` (below,
    above and inside the intervals, route ids past R); each event written to ROUTE before its PUSH,
    RESULT_INFO.BELOW/ABOVE and every ROUTE_BOUND read after it; a bound seeded between pushes
    (:func:`mailpulse.sim.plans.route_seed_showing`: the flags after it must differ from those
    without it, ``routes:seeded``)."""
    tb = await start(dut)
    params = tb.params
    assert params.r, f"parameter set {params.name} has no routes"
    rm = tb.regmap
    count = 24
    route = rm["ROUTE"]
    bounds = rm["ROUTE_BOUND"].address(0)
    # On Verilator the very first access after power-up is a ROUTE_BOUND read (the model's 0).  On
    # Icarus it would read X: a simulation race, not the design: the bound multiplexer is a Yosys
    # ``always @*`` block whose inputs (read index, bounds) keep their initial values until an access
    # changes them, and Icarus does not run such a block at time 0; any earlier access runs it.
    if os.environ.get("MAILPULSE_SIM_SIMULATOR") != "verilator":
        await tb.status()
    for i in range(2 * params.r):
        await tb.read(bounds + 4 * i)
    await tb.read(bounds, 2 * params.r)
    await tb.write(bounds, [(0x0800 if i % 2 == 0 else 0x0C00) << ADAPT_FRAC for i in range(2 * params.r)])
    await tb.read(bounds, 2 * params.r)
    x, tags = random_samples(params, tb.nrng, count)
    cfg = CoreConfig.random(params, tb.nrng)
    rcfg, routes, lat = plans.route_plan(params, tb.nrng, count, tb.model.lower, tb.model.upper)
    cfg.routes = rcfg
    await tb.load(cfg, x)
    await tb.read(rm["ADAPT"].address())

    async def push_all(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            await tb.write(route.address(), [route.value(ID=int(routes[i]), LATENCY=int(lat[i]))])
            await tb.push(x[i], int(tags[i]))
            await tb.read(rm["ROUTE"].address())
            await tb.read(rm["RESULT_SCORE"].address(), 3)   # RESULT_SCORE, RESULT_INFO, RESULT_TAG
            await tb.read(bounds, 2 * params.r)

    half = count // 2
    await push_all(0, half)
    # seed a bound so that the flags of the next events change (a lost seed would not pass)
    unseeded = (tb.model.lower.copy(), tb.model.upper.copy())
    showing = plans.route_seed_showing(routes[half:], lat[half:], *unseeded, rcfg)
    assert showing is not None, "no ROUTE_BOUND seed changes a flag of these events"
    await tb.write(rm["ROUTE_BOUND"].address(showing[0]), [showing[1]])
    await tb.read(bounds, 2 * params.r)
    assert "routes:seeded" in plans.route_reached(routes[half:], lat[half:], tb.model.lower, tb.model.upper, rcfg,
                                                  unseeded=unseeded), "the seed changes no flag: a lost seed would pass"
    await push_all(half, count)
