"""The adaptive threshold in both cores, bit-exact against the reference model (Amaranth simulator).

The cores are driven through their ControlSignature (as in test_hdl_core.py): the adaptation
registers as shadow signals, committed with the model; random streams with extreme features, a
threshold pushed to both clamps, the host seeding the threshold mid-stream (COMMIT_THRESHOLD between
two samples), and THRESHOLD_ACTIVE/THRESHOLD_FRAC compared with the model's accumulator.  One
register-level case runs through the front end against :class:`EmulatedCore`.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from _hdl_sim import Bench, core_commit, core_load, load_active, random_samples
from amaranth.sim import Simulator
from mailpulse.hdl.adapt import QuantileTracker, RouteIntervals
from mailpulse.hdl.core import ScorerCore
from mailpulse.hdl.folded import FoldedScorerCore
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    AdaptConfig,
    CoreConfig,
    EmulatedCore,
    RouteConfig,
    clamp,
    route_intervals,
    route_seed,
    route_steps,
    score,
    tracker_step,
    tracker_steps,
)
from mailpulse.hdl.regmap import ROUTE_RATIO_BITS, RegisterMap
from test_hdl_core import drive
from test_hdl_folded import Host


def run(dut, tb) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def set_adapt(ctx, core, a: AdaptConfig) -> None:
    """The shadow adaptation registers, as the front end drives them."""
    reg = RegisterMap(core.params)["ADAPT"]
    ctx.set(core.ctrl.shadow_adapt, reg.value(ENABLE=a.enable, ALPHA_EXP=a.alpha_exp, STEP_EXP=a.step_exp))
    ctx.set(core.ctrl.shadow_t_min, a.t_min)
    ctx.set(core.ctrl.shadow_t_max, a.t_max)


def acc_of(ctx, core) -> int:
    return (ctx.get(core.ctrl.threshold_active) << ADAPT_FRAC) | ctx.get(core.ctrl.threshold_frac)


def adaptive_cases(p: CoreParams, rng: np.random.Generator, n: int) -> list[tuple[CoreConfig, np.ndarray, int]]:
    """(configuration, samples, seed of the mid-stream COMMIT_THRESHOLD): a large step that drives
    the threshold into T_MAX and T_MIN, an ordinary one, and the extremes of the register fields."""
    out = []
    for c in range(3):
        cfg = CoreConfig.random(p, rng)
        x = random_samples(p, rng, n)
        s = score(p, cfg, x).score
        med = int(np.median(s))
        if c == 0:     # clamps inside the score range, huge steps: T sits at both clamps
            cfg.adapt = AdaptConfig(1, 1, 15, max(0, med - 300), med + 300)
        elif c == 1:
            cfg.adapt = AdaptConfig(1, 3, 13, 0, (1 << p.score_bits) - 1)
        else:          # field extremes: alpha 2**-15, T_MAX = 2**32 - 1, step 2**0
            cfg.adapt = AdaptConfig(1, 15, 0, int(rng.integers(0, 1 << p.score_bits)), 0xFFFFFFFF)
        cfg.threshold = med if c != 2 else 0xFFFFFFFF
        out.append((cfg, x, int(rng.integers(0, 1 << p.score_bits)) if c != 1 else 0))
    return out


def clamps_reached(scores: np.ndarray, a: AdaptConfig, acc: int) -> set[str]:
    """Which clamps the model's accumulator sits at after some sample of ``scores``."""
    big, small = tracker_steps(a.alpha_exp, a.step_exp)
    lo, hi = a.t_min << ADAPT_FRAC, a.t_max << ADAPT_FRAC
    out = set()
    for v in scores.tolist():
        acc = tracker_step(acc, v > acc >> ADAPT_FRAC, big, small, lo, hi)
        out |= {"T_MIN"} if acc == lo else {"T_MAX"} if acc == hi else set()
    return out


def expected(p: CoreParams, cfg: CoreConfig, x: np.ndarray, seed: int, split: int):
    """The model: the first ``split`` samples from the committed threshold, the rest from the seed."""
    a = score(p, cfg, x[:split], np.arange(split))
    b = score(p, cfg, x[split:], np.arange(split, len(x)), acc=seed << ADAPT_FRAC)
    return a, b


@pytest.mark.parametrize("ratio", [False, True], ids=["exponent", "ratio"])
@pytest.mark.parametrize(("pipelined", "fast"), [(False, False), (True, False), (True, True)],
                         ids=["single-cycle", "pipelined-deep", "pipelined-fast"])
def test_tracker_unit_matches_the_reference(pipelined: bool, fast: bool, ratio: bool) -> None:
    """The shared tracker alone: random accumulators, steps and clamps (lo > hi included); the
    threshold's exponent (``tracker_steps``) or the route intervals' ratio (``route_steps``, the
    ends 0 and 255 included)."""
    rng = np.random.default_rng(1)
    tr = QuantileTracker(24, ratio_bits=ROUTE_RATIO_BITS if ratio else 0, pipelined=pipelined, fast=fast)
    rate_port = tr.ratio if ratio else tr.rate_exp
    cases = []
    for _ in range(400):
        lo, hi = (int(v) for v in rng.integers(0, 1 << 24, 2))
        if rng.random() < 0.5:
            lo, hi = min(lo, hi), max(lo, hi)
        acc = int(rng.choice([0, (1 << 24) - 1, lo, hi, int(rng.integers(0, 1 << 24))]))
        rate = int(rng.choice([0, 1, 19, 255, int(rng.integers(0, 256))])) if ratio else int(rng.integers(0, 16))
        cases.append((acc, int(rng.integers(0, 2)), rate, int(rng.integers(0, 16)), lo, hi))

    async def tb(ctx):
        for acc, up, re, se, lo, hi in cases:
            for sig, v in ((rate_port, re), (tr.step_exp, se), (tr.lo, lo), (tr.hi, hi), (tr.acc, acc), (tr.up, up)):
                ctx.set(sig, v)
            await ctx.tick().repeat(4 + tr.latency)    # the registered steps, limits, pipeline
            big, small = route_steps(re, se) if ratio else tracker_steps(re, se)
            want = clamp(acc + big if up else acc - small, lo, hi)
            assert ctx.get(tr.next) == want, (acc, up, re, se, lo, hi)

    run(tr, tb)


@pytest.mark.parametrize("dsp", [False, True], ids=["lut", "dsp"])
@pytest.mark.parametrize("name", ["small", "zynq"])
def test_streaming_core_adaptive_threshold(name: str, dsp: bool) -> None:
    p = get_params(name)
    rng = np.random.default_rng(sum(map(ord, name)) + dsp)
    core = ScorerCore(p, dsp=dsp)
    n, split = 160, 90
    cases = adaptive_cases(p, rng, n)
    got: list[tuple[list, list, int, int]] = []

    async def tb(ctx):
        bank = 1
        for c, (cfg, x, seed) in enumerate(cases):
            await core_load(ctx, core, cfg, bank)
            set_adapt(ctx, core, cfg.adapt)
            await core_commit(ctx, core, cfg)
            bank ^= 1
            pv, pr = [(1.0, 1.0), (0.7, 0.6), (0.9, 0.3)][c]
            first = await drive(ctx, core, x[:split], np.arange(split), rng, pv, pr)
            acc1 = acc_of(ctx, core)
            # the host seeds the threshold between two samples (the pipeline is empty)
            ctx.set(core.ctrl.shadow_threshold, seed)
            ctx.set(core.ctrl.commit_threshold, 1)
            await ctx.tick()
            ctx.set(core.ctrl.commit_threshold, 0)
            second = await drive(ctx, core, x[split:], np.arange(split, n), rng, pv, pr)
            got.append((first, second, acc1, acc_of(ctx, core)))

    run(core, tb)
    reached: set[str] = set()
    for (cfg, x, seed), (first, second, acc1, acc2) in zip(cases, got):
        a, b = expected(p, cfg, x, seed, split)
        assert [r.row() for r in first] == [a.row(j) for j in range(len(a))]
        assert [r.row() for r in second] == [b.row(j) for j in range(len(b))]
        assert (acc1, acc2) == (a.acc, b.acc)
        flags = np.concatenate([a.anomaly, b.anomaly])
        assert 0 < flags.sum() < n or cfg.adapt.alpha_exp == 15
        reached |= clamps_reached(a.score, cfg.adapt, int(cfg.threshold) << ADAPT_FRAC)
        reached |= clamps_reached(b.score, cfg.adapt, seed << ADAPT_FRAC)
    # the threshold sat at both clamps during the checked samples
    assert reached == {"T_MIN", "T_MAX"}


def test_folded_core_adaptive_threshold() -> None:
    p = get_params("small")
    rng = np.random.default_rng(4)
    core = FoldedScorerCore(p)
    n, split = 60, 35
    cases = adaptive_cases(p, rng, n)
    got: list[tuple[list, int, int]] = []

    async def push(ctx, x, tag):
        c = core.ctrl
        ctx.set(c.push_features, sum((int(v) & 0xFFFF) << (16 * d) for d, v in enumerate(x)))
        ctx.set(c.push_tag, tag)
        ctx.set(c.push_valid, 1)
        while not ctx.get(c.push_ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(c.push_valid, 0)
        while not ctx.get(c.result_valid):
            await ctx.tick()
        row = (ctx.get(c.result_score), ctx.get(c.result_anomaly), ctx.get(c.result_argmax), ctx.get(c.result_tag))
        # the pipelined step lands four cycles after the result (a host's next access is later)
        await ctx.tick().repeat(4)
        return row

    async def tb(ctx):
        await ctx.tick().repeat(core.clear_cycles + 2)
        bank = 1
        for cfg, x, seed in cases:
            ctx.set(core.ctrl.shadow_threshold, int(cfg.threshold))
            for k in range(p.k):
                for b in range(p.b):
                    ctx.set(core.table_data[bank * p.k * p.b + k * p.b + b], int(cfg.tables[k, b]))
            set_adapt(ctx, core, cfg.adapt)
            ctx.set(core.ctrl.commit, 1)
            await ctx.tick()
            ctx.set(core.ctrl.commit, 0)
            await load_active(ctx, core, cfg)
            await ctx.tick().repeat(4)      # the active memory's two-stage write
            bank ^= 1
            rows = []
            for j in range(split):
                rows.append(await push(ctx, x[j], j))
            acc1 = acc_of(ctx, core)
            ctx.set(core.ctrl.shadow_threshold, seed)
            ctx.set(core.ctrl.commit_threshold, 1)
            await ctx.tick()
            ctx.set(core.ctrl.commit_threshold, 0)
            for j in range(split, n):
                rows.append(await push(ctx, x[j], j))
            got.append((rows, acc1, acc_of(ctx, core)))

    run(core, tb)
    for (cfg, x, seed), (rows, acc1, acc2) in zip(cases, got):
        a, b = expected(p, cfg, x, seed, split)
        assert rows == [a.row(j) for j in range(split)] + [b.row(j) for j in range(n - split)]
        assert (acc1, acc2) == (a.acc, b.acc)


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "streaming"])
def test_adaptation_registers_through_the_front_end(folded: bool) -> None:
    """ADAPT/T_MIN/T_MAX written over the bus, committed, pushes scored with the adaptive threshold;
    every read (THRESHOLD_ACTIVE, THRESHOLD_FRAC, the counters, RESULT_*) equals the model's."""
    p = get_params("small")
    rng = np.random.default_rng(9)
    bench = Bench(p, folded=folded)
    model = EmulatedCore(p)
    cfg = CoreConfig.random(p, rng)
    xs = random_samples(p, rng, 14)
    cfg.threshold = int(np.median(score(p, cfg, xs).score))
    cfg.adapt = AdaptConfig(1, 2, 14, cfg.threshold - 2000 if cfg.threshold > 2000 else 0, cfg.threshold + 3000)
    rm = RegisterMap(p)

    async def tb(ctx):
        h = Host(ctx, bench, model)
        await ctx.tick().repeat(bench.core.clear_cycles + 2)
        await h.write(rm["ADAPT"].address(), 0xFFFFFFFF)          # the gaps between the fields are not stored
        assert await h.read("ADAPT") == model.read(rm["ADAPT"].address())
        await h.load(cfg)
        await h.commit()
        for j, x in enumerate(xs):
            if j == 7:    # seed mid-stream
                await h.write(rm["THRESHOLD"].address(), cfg.threshold + 111)
                await h.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT_THRESHOLD").mask)
            await h.push(x, j)
            for name in ("THRESHOLD_ACTIVE", "THRESHOLD_FRAC", "ADAPT", "T_MIN", "T_MAX"):
                assert await h.read(name) == model.read(rm[name].address()), (j, name)
        assert model.read(rm["THRESHOLD_FRAC"].address()) or model.read(rm["THRESHOLD_ACTIVE"].address()) != (
            cfg.threshold + 111)

    run(bench, tb)


@pytest.mark.parametrize("routes", [4, 16])
def test_route_intervals_unit_matches_the_reference(routes: int) -> None:
    """The gateware route intervals, one event per cycle (same route back to back included),
    route ids at and past the range ends, extreme values, enable switched, bounds seeded
    mid-stream (one seed above the cap): flags and every bound exactly as the model."""
    rng = np.random.default_rng(routes)
    unit = RouteIntervals(routes)
    hi = 0xFFFF << ADAPT_FRAC
    n = 1500
    route = rng.integers(0, routes, n)
    ends = rng.random(n) < 0.05
    route[ends] = rng.choice([0, routes - 1, routes, 0xFFFF], size=int(ends.sum()))
    value = np.clip(np.round(rng.normal(3000 + 200 * route % 4000, 300)), 0, 0xFFFF).astype(np.int64)
    ext = rng.random(n) < 0.03
    value[ext] = rng.choice([0, 0xFFFF], size=int(ext.sum()))
    gap = rng.random(n) < 0.2                # an idle cycle before the event
    # (start, stop, enable, ratio, step_exp): the collector's 19, the register's ends (255 with the
    # largest step, 0: a miss leaves its bound), disabled, and a small ratio for the equality cases
    phases = [(0, 400, 1, 19, 9), (400, 700, 1, 255, 15), (700, 1000, 1, 0, 10), (1000, 1200, 0, 4, 4),
              (1200, n, 1, 6, 8)]
    seeds = {700: [(0, 0, 12345), (routes - 1, 1, hi + 99)], 1300: [(1, 1, 0), (1, 0, hi)]}
    lower = np.zeros(routes, dtype=np.int64)
    upper = np.full(routes, hi, dtype=np.int64)
    exp_below, exp_above = [], []
    exp_bounds = {}
    for start, stop, en, ratio, se in phases:
        cuts = sorted({start, stop, *(s for s in seeds if start < s < stop)})
        for a, b in pairwise(cuts):
            for r, side, v in seeds.get(a, []):
                (upper if side else lower)[r] = route_seed(v)
            if start == phases[-1][0]:
                # the last phase: each value at (or one past) its route's current bound, so the
                # compares are decided by their equality cases
                for i in range(a, b):
                    r = int(route[i])
                    if r < routes:
                        bound = int((upper if rng.random() < 0.5 else lower)[r]) >> ADAPT_FRAC
                        value[i] = min(0xFFFF, max(0, bound + int(rng.integers(-1, 2))))
                    res = route_intervals(route[i:i + 1], value[i:i + 1], lower, upper, RouteConfig(en, ratio, se))
                    exp_below += res.below.tolist()
                    exp_above += res.above.tolist()
                    lower, upper = res.lower, res.upper
            else:
                res = route_intervals(route[a:b], value[a:b], lower, upper, RouteConfig(en, ratio, se))
                exp_below += res.below.tolist()
                exp_above += res.above.tolist()
                lower, upper = res.lower, res.upper
            exp_bounds[b] = (lower.tolist(), upper.tolist())
    got_below, got_above, got_bounds = [], [], {}

    async def read_bounds(ctx):
        lo: list[int] = []
        up: list[int] = []
        for r in range(routes):
            ctx.set(unit.rd_route, r)
            for side, out in ((0, lo), (1, up)):
                ctx.set(unit.rd_side, side)
                out.append(ctx.get(unit.rd_value))
        return lo, up

    async def tb(ctx):
        for r in range(routes):      # the bounds start at 0 .. HI: seed the uppers
            ctx.set(unit.seed_we, 1)
            ctx.set(unit.seed_route, r)
            ctx.set(unit.seed_side, 1)
            ctx.set(unit.seed_value, hi)
            await ctx.tick()
        ctx.set(unit.seed_we, 0)
        for start, stop, en, ratio, se in phases:
            ctx.set(unit.enable, en)
            ctx.set(unit.ratio, ratio)
            ctx.set(unit.step_exp, se)
            await ctx.tick().repeat(2)
            for i in range(start, stop):
                if i in seeds:
                    for r, side, v in seeds[i]:
                        ctx.set(unit.seed_we, 1)
                        ctx.set(unit.seed_route, r)
                        ctx.set(unit.seed_side, side)
                        ctx.set(unit.seed_value, v)
                        await ctx.tick()
                    ctx.set(unit.seed_we, 0)
                if gap[i]:
                    await ctx.tick()
                ctx.set(unit.valid, 1)
                ctx.set(unit.route, int(route[i]))
                ctx.set(unit.value, int(value[i]))
                got_below.append(ctx.get(unit.below))
                got_above.append(ctx.get(unit.above))
                await ctx.tick()
                ctx.set(unit.valid, 0)
                if i + 1 in exp_bounds:
                    got_bounds[i + 1] = await read_bounds(ctx)

    run(unit, tb)
    assert got_below == exp_below
    assert got_above == exp_above
    assert got_bounds == {k: (lo, up) for k, (lo, up) in exp_bounds.items()}
    assert sum(exp_below) > 20 and sum(exp_above) > 20
