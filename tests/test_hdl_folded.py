"""The folded core of the SPI top (mailpulse.hdl.folded.FoldedScorerCore) behind the register front end,
against mailpulse.hdl.reference.EmulatedCore: random configurations on every parameter set, clamp ends, ties,
threshold equality, commits, counters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _hdl_sim import Bench, bus_access, random_samples
from amaranth.sim import Simulator
from mailpulse.hdl.folded import FoldedScorerCore, sample_period
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams, get_params
from mailpulse.hdl.reference import BusError, CoreConfig, EmulatedCore, model_writes, score
from mailpulse.hdl.regmap import RegisterMap


class Host:
    def __init__(self, ctx, bench: Bench, model: EmulatedCore) -> None:
        self.ctx, self.bench, self.model = ctx, bench, model
        self.rm: RegisterMap = model.regmap

    async def write(self, addr: int, value: int) -> None:
        _, err = await bus_access(self.ctx, self.bench.bus, addr, True, value)
        try:
            self.model.write(addr, value)
        except BusError:
            assert err
        else:
            assert not err

    async def read(self, name: str, i: int = 0) -> int:
        rdata, err = await bus_access(self.ctx, self.bench.bus, self.rm[name].address(i), False)
        assert not err
        return rdata

    async def load(self, cfg: CoreConfig) -> None:
        """Shadow registers over the bus; tables poked into the shadow bank (the model gets the
        same writes)."""
        p = self.model.params
        bank = 1 - self.model.active_bank
        tab = self.rm["TABLE"]
        for a, v in model_writes(self.rm, cfg):
            if tab.offset <= a <= tab.last_address:
                self.model.write(a, v)
                i = (a - tab.offset) // 4
                td = self.bench.core.table_data
                if isinstance(td, list):    # pipelined core: one memory per projection
                    self.ctx.set(td[i // p.b][bank * p.b + i % p.b], v)
                else:
                    self.ctx.set(td[bank * p.k * p.b + i], v)
            else:
                await self.write(a, v)

    async def commit(self) -> None:
        await self.write(self.rm["CTRL"].address(), 1 << self.rm["CTRL"].field("COMMIT").lsb)
        for _ in range(200):
            if not (await self.read("STATUS")) & 1:
                return
        raise AssertionError("commit never completed")

    async def push(self, x, tag: int) -> tuple[int, int, int, int]:
        p = self.model.params
        for d in range(p.d):
            await self.write(self.rm["FEATURE"].address(d), int(x[d]))
        await self.write(self.rm["TAG"].address(), tag)
        await self.write(self.rm["PUSH"].address(), 1)
        rv = 1 << self.rm["STATUS"].field("RESULT_VALID").lsb
        for _ in range(p.k + 100):
            if (await self.read("STATUS")) & rv:
                break
        else:
            raise AssertionError("no result")
        info = await self.read("RESULT_INFO")
        out = (await self.read("RESULT_SCORE"), info & 1, (info >> 8) & 0xFF, await self.read("RESULT_TAG"))
        for name in ("RESULT_SCORE", "RESULT_INFO", "RESULT_TAG", "SAMPLES", "ANOMALIES", "STATUS"):
            assert await self.read(name) == self.model.read(self.rm[name].address()), name
        return out


def run(bench: Bench, tb) -> None:
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("name", [*sorted(PARAMETER_SETS), "odd", "small-push-only"])
def test_folded_random_configs(name: str) -> None:
    """(``small-push-only``: the pipelined core built without stream ports, same checks.)"""
    p = CoreParams("odd", d=3, k=5, b=8) if name == "odd" else get_params(name.split("-")[0])
    rng = np.random.default_rng(sum(map(ord, name)))
    bench = Bench(p, folded=name != "small-push-only", push_only=name == "small-push-only")
    model = EmulatedCore(p)
    cfgs = [CoreConfig.random(p, rng) for _ in range(2)]
    cfgs[1].tables = rng.integers(0, 3, size=(p.k, p.b)).astype(np.int64)   # ties
    xs = random_samples(p, rng, 24)
    for cfg in cfgs:
        cfg.threshold = int(np.median(score(p, cfg, xs).score))

    async def tb(ctx):
        h = Host(ctx, bench, model)
        await ctx.tick().repeat(bench.core.clear_cycles + 2)   # tables are poked, not written
        for c, cfg in enumerate(cfgs):
            await h.load(cfg)
            await h.commit()
            assert await h.read("STATUS") == model.read(h.rm["STATUS"].address())
            exp = score(p, cfg, xs[12 * c:12 * c + 12], np.arange(12))
            for j in range(12):
                got = await h.push(xs[12 * c + j], j)
                assert got == exp.row(j), f"config {c} sample {j}"
            # equality: threshold == score of the next push -> not flagged; minus one -> flagged
            s0 = int(exp.score[0])
            for thr, flag in ((s0, 0), (s0 - 1, 1)):
                await h.write(h.rm["THRESHOLD"].address(), thr)
                await h.write(h.rm["CTRL"].address(), 1 << h.rm["CTRL"].field("COMMIT_THRESHOLD").lsb)
                got = await h.push(xs[12 * c], 0)
                assert got[1] == flag

    run(bench, tb)


def test_folded_latency_constant() -> None:
    """LATENCY of the folded core = cycles from the push handshake to the result strobe."""
    p = get_params("small")
    bench = Bench(p, folded=True)
    rm = RegisterMap(p)

    async def tb(ctx):
        for _ in range(bench.core.clear_cycles + 2):
            await ctx.tick()
        c = bench.core.ctrl
        b = bench.bus
        ctx.set(b.req_valid, 1)
        ctx.set(b.req_write, 1)
        ctx.set(b.req_addr, rm["PUSH"].address())
        for _ in range(20):
            if ctx.get(c.push_ready):
                break
            ready = ctx.get(b.req_ready)
            await ctx.tick()
            if ready:
                ctx.set(b.req_valid, 0)
        assert ctx.get(c.push_ready)
        await ctx.tick()
        n = 1
        while not ctx.get(c.result_valid) and n < 500:
            await ctx.tick()
            n += 1
        assert n == bench.core.latency
        rdata, _ = await bus_access(ctx, bench.bus, rm["LATENCY"].address(), False)
        assert rdata == n

    run(bench, tb)


@pytest.mark.parametrize("name", ["small", "full"])
def test_back_to_back_period(name: str) -> None:
    """With a PUSH always waiting, a result comes every ``sample_period`` clocks (latency + 1): the
    figure bench/bench_fmax.py turns into the folded core's hardware rate."""
    p = get_params(name)
    core = FoldedScorerCore(p)
    sim = Simulator(core)
    sim.add_clock(1e-8)
    strobes: list[int] = []

    async def tb(ctx):
        ctx.set(core.ctrl.push_valid, 1)
        for cyc in range(6 * sample_period(p)):
            await ctx.tick()
            if ctx.get(core.ctrl.result_valid):
                strobes.append(cyc)

    sim.add_testbench(tb)
    sim.run()
    assert len(strobes) >= 4
    assert {b - a for a, b in itertools.pairwise(strobes)} == {sample_period(p)}
    assert sample_period(p) == core.latency + 1
