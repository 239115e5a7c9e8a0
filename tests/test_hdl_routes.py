"""The per-route latency intervals in both cores, bit-exact against the reference model (Amaranth
simulator).

Each core sits behind its register front end (:class:`_hdl_sim.Bench`) and every register access
goes to :class:`EmulatedCore` too: the route fields of ``ADAPT``, bounds seeded and read through
``ROUTE_BOUND`` (a seed above the cap included), events from the sample stream (streaming core,
random idle and back-pressure) or from the ``ROUTE`` register with a PUSH (both cores), route ids
past R, extreme latencies, the bounds seeded again mid-stream and the intervals switched off by a
commit.  A mutant unit (a below flag against a wrong bound) shows that the comparison catches it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _hdl_sim import Bench, random_samples
from amaranth.hdl import Module
from amaranth.lib.wiring import In
from amaranth.sim import Simulator
from mailpulse.hdl import control
from mailpulse.hdl.adapt import RouteIntervals
from mailpulse.hdl.core import ResultLayout, SampleLayout
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    CoreConfig,
    EmulatedCore,
    RouteConfig,
    random_route_events,
    route_intervals,
    route_seed,
    score,
)
from test_hdl_folded import Host

#: A small core with routes (the simulation of a shipped set takes longer and adds nothing here).
P = CoreParams("routes", d=4, k=4, b=16, r=4)
HI = 0xFFFF << ADAPT_FRAC


def run(dut: Any, tb: Any) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def _pack(p: CoreParams, x: np.ndarray, tag: int, route: int, lat: int) -> int:
    lay = SampleLayout(p)
    feats = 0
    for d in range(p.d):
        feats |= (int(x[d]) & 0xFFFF) << (16 * d)
    return ((feats << lay["features"].offset) | (tag << lay["tag"].offset) | (route << lay["route"].offset)
            | (lat << lay["latency"].offset))


def _unpack(p: CoreParams, v: int) -> tuple[int, ...]:
    lay = ResultLayout(p)
    return tuple((v >> lay[n].offset) & ((1 << lay[n].width) - 1)
                 for n in ("score", "anomaly", "argmax", "tag", "below", "above"))


async def stream(ctx, bench: Bench, x, tags, routes, lats, rng, p_valid: float, p_ready: float) -> list[tuple]:
    """All samples through the bench's stream with random idle and back-pressure; results in order."""
    out: list[tuple] = []
    i = cyc = 0
    n = len(x)
    while len(out) < n:
        v = i < n and rng.random() < p_valid
        ctx.set(bench.i_stream.valid, int(v))
        if v:
            ctx.set(bench.i_stream.payload.as_value(),
                    _pack(bench.params, x[i], int(tags[i]), int(routes[i]), int(lats[i])))
        r = rng.random() < p_ready
        ctx.set(bench.o_stream.ready, int(r))
        if v and ctx.get(bench.i_stream.ready):
            i += 1
        if r and ctx.get(bench.o_stream.valid):
            out.append(_unpack(bench.params, ctx.get(bench.o_stream.payload.as_value())))
        await ctx.tick()
        cyc += 1
        assert cyc < 50 * n + 200, "the core stopped producing results"
    ctx.set(bench.i_stream.valid, 0)
    ctx.set(bench.o_stream.ready, 0)
    return out


async def bound_mismatches(h: Host, p: CoreParams) -> int:
    """How many ROUTE_BOUND elements read over the bus differ from the model's."""
    addr = h.rm["ROUTE_BOUND"].address
    return sum([await h.read("ROUTE_BOUND", i) != h.model.read(addr(i)) for i in range(2 * p.r)])


async def push_event(h: Host, x, tag: int, route: int, lat: int) -> tuple[int, int]:
    """A PUSH with its ROUTE register; RESULT_INFO (with BELOW/ABOVE) compared inside ``h.push``."""
    await h.write(h.rm["ROUTE"].address(), h.rm["ROUTE"].value(ID=route, LATENCY=lat))
    await h.push(x, tag)
    info = await h.read("RESULT_INFO")
    reg = h.rm["RESULT_INFO"]
    return reg.get("BELOW", info), reg.get("ABOVE", info)


async def push_then_seed(h: Host, x, tag: int, route: int, lat: int, seed: int) -> None:
    """A PUSH, and at once (without waiting for its result) a seed of both bounds of its route: the
    seed waits for the pushed sample, whose event comes first, as in the model; RESULT_INFO and
    the bounds then equal the model's."""
    p = h.model.params
    await h.write(h.rm["ROUTE"].address(), h.rm["ROUTE"].value(ID=route, LATENCY=lat))
    for d in range(p.d):
        await h.write(h.rm["FEATURE"].address(d), int(x[d]))
    await h.write(h.rm["TAG"].address(), tag)
    await h.write(h.rm["PUSH"].address(), 1)
    await h.write(h.rm["ROUTE_BOUND"].address(2 * route), seed)
    await h.write(h.rm["ROUTE_BOUND"].address(2 * route + 1), seed + (0x200 << ADAPT_FRAC))
    for _ in range(p.k + 100):
        if (await h.read("STATUS")) & h.rm["STATUS"].field("RESULT_VALID").mask:
            break
    for name in ("RESULT_INFO", "RESULT_SCORE", "RESULT_TAG"):
        assert await h.read(name) == h.model.read(h.rm[name].address()), name
    assert await bound_mismatches(h, p) == 0


def _case(rng: np.random.Generator, n: int) -> tuple[CoreConfig, Any, Any, Any, Any]:
    cfg = CoreConfig.random(P, rng)
    x = random_samples(P, rng, n)
    cfg.threshold = int(np.median(score(P, cfg, x).score))
    cfg.routes = RouteConfig(1, 5, 9)
    routes, lats = random_route_events(rng, n, P.r)
    return cfg, x, np.arange(n) * 7 + 1, routes, lats


async def _seed(h: Host, rng: np.random.Generator, cap_too: bool) -> None:
    """Seed every bound around the event latencies (lower below upper), one above the cap."""
    for r in range(P.r):
        lo = int(rng.integers(0x0300, 0x0C00)) << ADAPT_FRAC | int(rng.integers(0, 256))
        await h.write(h.rm["ROUTE_BOUND"].address(2 * r), lo)
        await h.write(h.rm["ROUTE_BOUND"].address(2 * r + 1), lo + (int(rng.integers(0x100, 0x900)) << ADAPT_FRAC))
    if cap_too:
        await h.write(h.rm["ROUTE_BOUND"].address(2 * P.r - 1), HI + 77)


async def _started(ctx, bench: Bench, model: EmulatedCore, cfg, rng: np.random.Generator) -> Host:
    """A host on a core past its table clear, with ``cfg`` loaded and committed and the bounds seeded
    (one above the cap)."""
    h = Host(ctx, bench, model)
    await ctx.tick().repeat(bench.core.clear_cycles + 2)
    await h.load(cfg)
    await h.commit()
    await _seed(h, rng, cap_too=True)
    return h


def streaming_mismatches(seed: int) -> int:
    """The streaming core: two streamed batches around a mid-stream seed, pushes, then the
    intervals disabled by a commit.  Returns the number of results and bound reads that differ
    from the model (it stops at the first stage with a difference; the pushes assert RESULT_INFO
    equal inside; flags must fire on both sides)."""
    rng = np.random.default_rng(seed)
    bench = Bench(P)
    model = EmulatedCore(P)
    n = 160
    cfg, x, tags, routes, lats = _case(rng, n)
    bad = [0]
    fired = np.zeros(2, dtype=np.int64)

    async def batch(ctx, a: int, b: int, p_valid: float, p_ready: float) -> None:
        got = await stream(ctx, bench, x[a:b], tags[a:b], routes[a:b], lats[a:b], rng, p_valid, p_ready)
        exp = model.stream(x[a:b], tags[a:b], routes[a:b], lats[a:b])
        assert exp.below is not None and exp.above is not None
        rows = [(*exp.row(j), int(exp.below[j]), int(exp.above[j])) for j in range(b - a)]
        bad[0] += sum(g != e for g, e in zip(got, rows, strict=True))
        fired[:] += (exp.below.sum(), exp.above.sum())

    async def tb(ctx):
        h = await _started(ctx, bench, model, cfg, rng)
        bad[0] += await bound_mismatches(h, P)
        await batch(ctx, 0, 70, 0.8, 0.6)
        bad[0] += await bound_mismatches(h, P)
        await _seed(h, rng, cap_too=False)       # seeded again between two batches of one stream
        await batch(ctx, 70, 140, 1.0, 0.9)
        bad[0] += await bound_mismatches(h, P)
        if bad[0]:
            return
        for j in range(140, 146):                 # PUSH events, route ids past R included
            await push_event(h, x[j], int(tags[j]), int(routes[j]) if j % 3 else P.r + j, int(lats[j]))
        bad[0] += await bound_mismatches(h, P)
        await push_then_seed(h, x[0], 5, 2, 0xFFFF, 0x0500 << ADAPT_FRAC)   # flags above, then seeded
        cfg.routes = RouteConfig(0, 5, 9)         # switched off by a commit: no flags, bounds hold
        await h.load(cfg)
        await h.commit()
        await batch(ctx, 146, n, 0.7, 0.7)
        bad[0] += await bound_mismatches(h, P)

    run(bench, tb)
    assert fired.min() > 0, f"the case never flagged both sides ({fired})"
    return bad[0]


def test_streaming_core_route_intervals() -> None:
    assert streaming_mismatches(3) == 0


def test_folded_core_route_intervals() -> None:
    folded_session(5)


def folded_session(seed: int) -> None:
    """The folded core (samples only by PUSH): seeds, pushes with route ids in and past the range
    and extreme latencies, a mid-stream seed; RESULT_INFO and every bound as the model (asserted)."""
    rng = np.random.default_rng(seed)
    bench = Bench(P, folded=True)
    model = EmulatedCore(P)
    n = 36
    cfg, x, tags, routes, lats = _case(rng, n)
    cfg.routes = RouteConfig(1, 2, 12)            # big steps: the bounds move within a few pushes
    lats[:4] = [0, 0xFFFF, 0xFFFF, 0]
    routes[:4] = [0, 1, P.r, 0xFFFF]
    flags = np.zeros(2, dtype=np.int64)

    async def tb(ctx):
        h = await _started(ctx, bench, model, cfg, rng)
        for j in range(n):
            if j == n // 2:
                await _seed(h, rng, cap_too=False)
            flags[:] += await push_event(h, x[j], int(tags[j]), int(routes[j]), int(lats[j]))
        assert await bound_mismatches(h, P) == 0
        await push_then_seed(h, x[0], 5, 2, 0xFFFF, 0x0500 << ADAPT_FRAC)

    run(bench, tb)
    assert flags.min() > 0, f"the pushes never flagged both sides ({flags})"


class _MutantIntervals(RouteIntervals):
    """A route unit with a plausible bug: ``below`` compares with the upper bound's accumulator."""

    def elaborate(self, platform: Any) -> Module:
        m = super().elaborate(platform)
        m.d.comb += self.below.eq(self.valid & self.enable & (self.value < self.rd_value[ADAPT_FRAC:]))
        return m


def test_a_mutant_route_unit_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "RouteIntervals", _MutantIntervals)
    assert streaming_mismatches(3) > 0


class _RatioOffByOne(RouteIntervals):
    """A route unit whose trackers see the miss ratio plus one (a slip in the field's decode): the
    real unit inside, every port passed through but ``ratio``."""

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        inner = m.submodules.inner = RouteIntervals(self.routes, len(self.route), self.value_bits,
                                                    pipelined=self.pipelined)
        for name, member in self.signature.members.items():
            outer, port = getattr(self, name), getattr(inner, name)
            if member.flow == In:
                m.d.comb += port.eq(outer + 1 if name == "ratio" else outer)
            else:
                m.d.comb += outer.eq(port)
        return m


@pytest.mark.parametrize("core", ["streaming", "folded"])
def test_a_ratio_off_by_one_is_caught(core: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The miss ratio one too large in one core's unit: the comparison with the model fails."""
    monkeypatch.setattr(control, "RouteIntervals", _RatioOffByOne)
    if core == "streaming":
        assert streaming_mismatches(3) > 0
    else:
        with pytest.raises(AssertionError):
            folded_session(5)


def test_pipelined_unit_with_seeds_in_flight() -> None:
    """The pipelined unit (the folded core's): events ``PIPE_CYCLES`` or more cycles apart, each
    bound seeded at a random cycle between an event's start and its result (then the seed wins,
    as in the model: the event comes first), route ids past R; flags and every bound exact."""
    routes = 4
    rng = np.random.default_rng(11)
    unit = RouteIntervals(routes, pipelined=True)
    rc = RouteConfig(1, 6, 11)
    n = 300
    ev_routes, lats = random_route_events(rng, n, routes)
    lower = np.full(routes, 0x0600 << ADAPT_FRAC, dtype=np.int64)
    upper = np.full(routes, 0x0A00 << ADAPT_FRAC, dtype=np.int64)
    plan = []   # per event: (gap after start until valid, seed (cycle offset, route, side, value) or None)
    for _ in range(n):
        gap = RouteIntervals.PIPE_CYCLES + int(rng.integers(0, 3))
        seed = None
        if rng.random() < 0.3:
            seed = (int(rng.integers(0, gap + 1)), int(rng.integers(0, routes)), int(rng.integers(0, 2)),
                    int(rng.integers(0x0300, 0x0D00)) << ADAPT_FRAC)
        plan.append((gap, seed))
    exp_flags, lo, up = [], lower.copy(), upper.copy()
    for i, (_gap, seed) in enumerate(plan):
        res = route_intervals(ev_routes[i:i + 1], lats[i:i + 1], lo, up, rc)
        exp_flags.append((int(res.below[0]), int(res.above[0])))
        lo, up = res.lower.copy(), res.upper.copy()
        if seed is not None:
            (up if seed[2] else lo)[seed[1]] = route_seed(seed[3])
    got_flags: list[tuple[int, int]] = []
    bounds: list[list[int]] = []

    async def tb(ctx):
        ctx.set(unit.enable, rc.enable)
        ctx.set(unit.ratio, rc.ratio)
        ctx.set(unit.step_exp, rc.step_exp)
        for r in range(routes):
            for side, v in ((0, lower[r]), (1, upper[r])):
                ctx.set(unit.seed_we, 1)
                ctx.set(unit.seed_route, r)
                ctx.set(unit.seed_side, side)
                ctx.set(unit.seed_value, int(v))
                await ctx.tick()
        ctx.set(unit.seed_we, 0)
        await ctx.tick().repeat(3)
        for i, (gap, seed) in enumerate(plan):
            ctx.set(unit.route, int(ev_routes[i]))
            ctx.set(unit.value, int(lats[i]))
            await ctx.tick()                        # they hold still from the cycle before start
            for c in range(gap + 1):
                ctx.set(unit.start, int(c == 0))
                ctx.set(unit.valid, int(c == gap))
                on = seed is not None and seed[0] == c
                ctx.set(unit.seed_we, int(on))
                if on and seed is not None:
                    ctx.set(unit.seed_route, seed[1])
                    ctx.set(unit.seed_side, seed[2])
                    ctx.set(unit.seed_value, seed[3])
                if c == gap:
                    got_flags.append((ctx.get(unit.below), ctx.get(unit.above)))
                await ctx.tick()
            ctx.set(unit.valid, 0)
            ctx.set(unit.seed_we, 0)
        for r in range(routes):
            ctx.set(unit.rd_route, r)
            for side in (0, 1):
                ctx.set(unit.rd_side, side)
                await ctx.tick()                    # the pipelined form answers a cycle later
                bounds.append([r, side, ctx.get(unit.rd_value)])

    run(unit, tb)
    assert got_flags == exp_flags
    assert [b[2] for b in bounds] == [int((up if s else lo)[r]) for r, s, _ in bounds]
    assert {f for f in exp_flags} >= {(1, 0), (0, 1)}, "both flags fire"
