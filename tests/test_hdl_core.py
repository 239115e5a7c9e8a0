"""The scorer core (mailpulse.hdl.core.ScorerCore) against the reference model, in Amaranth's simulator.

Every comparison is exact.  The core is driven directly through its ControlSignature (shadow
model as signals, tables poked into the memories), so each test spends its time on samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from _hdl_sim import Result, core_commit, core_load, load_active, pack_sample, random_samples, unpack_result
from amaranth.sim import Simulator
from mailpulse.hdl.core import MAX_LATENCY, ScorerCore, dsp_plan, pipeline_plan
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig, bins, score

SETS = sorted(PARAMETER_SETS)


def run(core: ScorerCore, tb) -> None:
    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


async def drive(ctx, core, x, tags, rng, p_valid=1.0, p_ready=1.0, lasts=None, on_cycle=None):
    """Stream all samples through with random idle (input) and back-pressure (output); return
    the results in output order.  ``on_cycle(ctx, cycle, n_in)`` runs before each edge."""
    p = core.params
    n = len(x)
    out: list[Result] = []
    i = cyc = 0
    while len(out) < n:
        if on_cycle is not None:
            await on_cycle(ctx, cyc, i)
        v = i < n and rng.random() < p_valid
        ctx.set(core.i_stream.valid, int(v))
        if v:
            last = 0 if lasts is None else int(lasts[i])
            ctx.set(core.i_stream.payload.as_value(), pack_sample(p, x[i], int(tags[i]), last))
        r = rng.random() < p_ready
        ctx.set(core.o_stream.ready, int(r))
        if v and ctx.get(core.i_stream.ready):
            i += 1
        if r and ctx.get(core.o_stream.valid):
            out.append(unpack_result(p, ctx.get(core.o_stream.payload.as_value())))
        await ctx.tick()
        cyc += 1
        assert cyc < 50 * n + 200, "the core stopped producing results"
    ctx.set(core.i_stream.valid, 0)
    return out


def check(p: CoreParams, cfg: CoreConfig, x, tags, out) -> None:
    exp = score(p, cfg, x, tags)
    assert len(out) == len(exp)
    for j, r in enumerate(out):
        assert r.row() == exp.row(j), f"sample {j}: RTL {r.row()} != model {exp.row(j)}"


@pytest.mark.parametrize("dsp", [False, True], ids=["lut", "dsp"])
@pytest.mark.parametrize("name", SETS)
def test_random_configs_with_backpressure(name: str, dsp: bool) -> None:
    """Random configurations over the whole register range, random idle and back-pressure, tags
    and tlast in order, bit-exact scores/flags/argmax (LUT terms and DSP multiply-add chains)."""
    p = get_params(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    core = ScorerCore(p, dsp=dsp)
    assert core.dsp == dsp
    n = 150
    cases = []
    for c in range(2):
        cfg = CoreConfig.random(p, rng)
        if c == 1:   # small table values: many argmax ties; threshold near the median score
            cfg.tables = rng.integers(0, 4, size=(p.k, p.b)).astype(np.int64)
        x = random_samples(p, rng, n)
        if c == 1:
            cfg.threshold = int(np.median(score(p, cfg, x).score))
        cases.append((cfg, x, rng.integers(0, 1 << 32, n), rng.integers(0, 2, n)))
    results = []

    async def tb(ctx):
        bank = 1
        for c, (cfg, x, tags, lasts) in enumerate(cases):
            await core_load(ctx, core, cfg, bank)
            await core_commit(ctx, core, cfg)
            assert ctx.get(core.ctrl.active_bank) == bank
            bank ^= 1
            pv, pr = [(1.0, 1.0), (0.7, 0.6)][c]
            results.append(await drive(ctx, core, x, tags, rng, pv, pr, lasts))

    run(core, tb)
    for (cfg, x, tags, lasts), out in zip(cases, results):
        check(p, cfg, x, tags, out)
        assert [r.last for r in out] == [int(v) for v in lasts]


def test_clamp_ends_and_threshold_equality() -> None:
    """Bins clamp at 0 and B-1 (negative and huge differences, shift 0 and 31), and a score equal
    to the threshold is not flagged while threshold - 1 is."""
    p = get_params("small")
    rng = np.random.default_rng(7)
    cfg = CoreConfig.random(p, rng)
    cfg.weights[:] = 0
    cfg.weights[:, 0] = 1                       # p[k] = x0 for every projection
    cfg.shifts[:] = [0, 0, 31, 31, 3, 0, 1, 2][:p.k]
    cfg.offsets[:] = [0, -5, 0, p.offset_min, 7, p.offset_max, p.in_max, p.in_min][:p.k]
    x = np.zeros((12, p.d), dtype=np.int64)
    x[:, 0] = [p.in_min, p.in_max, 0, -1, 1, p.b - 1, p.b, 5, -5, 63 * 8 + 7, 64 * 8 + 7, 100]
    x[:, 1:] = rng.integers(p.in_min, p.in_max + 1, size=(12, p.d - 1))
    b = bins(p, cfg, x)
    assert (b == 0).any() and (b == p.b - 1).any()
    s = score(p, cfg, x).score
    # threshold equal to sample 0's score: sample 0 is not flagged; one below: flagged
    core = ScorerCore(p)
    outs = []

    async def tb(ctx):
        for bank, thr in ((1, int(s[0])), (0, int(s[0]) - 1)):
            cfg.threshold = thr
            await core_load(ctx, core, cfg, bank)
            await core_commit(ctx, core, cfg)
            outs.append(await drive(ctx, core, x, np.arange(12), rng))

    run(core, tb)
    for thr, out in zip((int(s[0]), int(s[0]) - 1), outs):
        cfg.threshold = thr
        check(p, cfg, x, np.arange(12), out)
    assert outs[0][0].anomaly == 0 and outs[1][0].anomaly == 1


@pytest.mark.parametrize("dsp", [False, True], ids=["lut", "dsp"])
def test_latency_and_throughput(dsp: bool) -> None:
    """One sample takes exactly `latency` cycles from the input handshake to o_stream.valid; a
    continuous stream runs at one sample per clock; i_stream.ready never waits for o_stream.ready
    combinationally (it stays high for two cycles after the output stalls)."""
    p = get_params("full")
    core = ScorerCore(p, dsp=dsp)
    assert core.latency <= MAX_LATENCY
    plan = dsp_plan(p) if dsp else pipeline_plan(p)
    assert plan is not None, "the projection does not fit the DSP chains"
    assert core.latency == plan["latency"]
    rng = np.random.default_rng(3)
    cfg = CoreConfig.random(p, rng)
    x = random_samples(p, rng, 40)

    async def tb(ctx):
        await core_load(ctx, core, cfg, 1)
        await core_commit(ctx, core, cfg)
        ctx.set(core.o_stream.ready, 1)
        ctx.set(core.i_stream.payload.as_value(), pack_sample(p, x[0], 1))
        ctx.set(core.i_stream.valid, 1)
        assert ctx.get(core.i_stream.ready)
        await ctx.tick()
        ctx.set(core.i_stream.valid, 0)
        c = 1
        while not ctx.get(core.o_stream.valid) and c < 40:
            await ctx.tick()
            c += 1
        assert c == core.latency
        await ctx.tick()
        # throughput: 40 samples in 40 + latency cycles
        ctx.set(core.i_stream.valid, 1)
        got = 0
        for c in range(40 + core.latency + 1):
            if c < 40:
                ctx.set(core.i_stream.payload.as_value(), pack_sample(p, x[c], c))
                assert ctx.get(core.i_stream.ready)
            else:
                ctx.set(core.i_stream.valid, 0)
            got += ctx.get(core.o_stream.valid)
            await ctx.tick()
        assert got == 40
        # output stall: the pipeline keeps accepting until the buffer is full, then stops
        ctx.set(core.o_stream.ready, 0)
        ctx.set(core.i_stream.valid, 1)
        accepted = 0
        for _ in range(3 * core.latency):
            accepted += ctx.get(core.i_stream.ready)
            await ctx.tick()
        ctx.set(core.i_stream.valid, 0)
        # the pipeline holds latency - 1 samples plus two in the output buffer
        assert accepted == core.latency - 1 + 2
        ctx.set(core.o_stream.ready, 1)
        seen = 0
        for _ in range(3 * core.latency):
            seen += ctx.get(core.o_stream.valid)
            await ctx.tick()
        assert seen == accepted

    run(core, tb)


@pytest.mark.parametrize("name", ["small", "zynq"])
def test_commit_under_traffic(name: str) -> None:
    """COMMIT while samples flow: input stops until the pipeline is empty, the model switches
    between two samples, every result equals the old or the new model, switching exactly once,
    and no sample is lost or reordered (small: LUT terms, zynq: DSP chains as in the AXI top)."""
    p = get_params(name)
    rng = np.random.default_rng(11)
    core = ScorerCore(p, dsp=name == "zynq")
    old, new = CoreConfig.random(p, rng), CoreConfig.random(p, rng)
    n = 120
    x = random_samples(p, rng, n)
    tags = np.arange(n)
    ready_during_pending = []

    async def on_cycle(ctx, cyc, n_in):
        if cyc == 40:
            await core_load(ctx, core, new, 0)   # shadow threshold + shadow bank (0)
            ctx.set(core.ctrl.commit, 1)
        elif cyc == 41:
            ctx.set(core.ctrl.commit, 0)
        if ctx.get(core.ctrl.commit_pending):
            ready_during_pending.append(ctx.get(core.i_stream.ready))
        if ctx.get(core.ctrl.drained):
            # the front end's copy: hold the streams still meanwhile
            ctx.set(core.i_stream.valid, 0)
            ctx.set(core.o_stream.ready, 0)
            await load_active(ctx, core, new)

    out = []

    async def tb(ctx):
        await core_load(ctx, core, old, 1)
        await core_commit(ctx, core, old)
        out.extend(await drive(ctx, core, x, tags, rng, 0.9, 0.8, on_cycle=on_cycle))
        assert ctx.get(core.ctrl.active_bank) == 0

    run(core, tb)
    assert [r.tag for r in out] == list(range(n))
    eo, en = score(p, old, x, tags), score(p, new, x, tags)
    which = []
    for j, r in enumerate(out):
        is_old, is_new = r.row() == eo.row(j), r.row() == en.row(j)
        assert is_old or is_new, f"sample {j} matches neither model"
        which.append("o" if is_old and not is_new else "n" if is_new and not is_old else "?")
    seq = "".join(which).replace("?", "")
    assert "no" not in seq and "o" in seq and "n" in seq, seq
    assert ready_during_pending and not any(ready_during_pending)


def test_counters_and_push_port() -> None:
    """SAMPLES/ANOMALIES count every sample leaving the core (stream and push), CLEAR_COUNTERS
    zeroes them; a pushed sample has priority over the stream, does not appear on o_stream and
    its result comes out on the result strobe."""
    p = get_params("small")
    rng = np.random.default_rng(5)
    core = ScorerCore(p)
    cfg = CoreConfig.random(p, rng)
    x = random_samples(p, rng, 60)
    cfg.threshold = int(np.median(score(p, cfg, x).score))
    exp = score(p, cfg, x, np.arange(60))
    pushed = []

    async def tb(ctx):
        await core_load(ctx, core, cfg, 1)
        await core_commit(ctx, core, cfg)
        out = await drive(ctx, core, x[:50], np.arange(50), rng, 0.8, 0.8)
        for _ in range(3):
            await ctx.tick()
        assert len(out) == 50
        assert ctx.get(core.ctrl.samples) == 50
        assert ctx.get(core.ctrl.anomalies) == int(exp.anomaly[:50].sum())
        ctx.set(core.ctrl.clear_counters, 1)
        await ctx.tick()
        ctx.set(core.ctrl.clear_counters, 0)
        assert ctx.get(core.ctrl.samples) == 0 and ctx.get(core.ctrl.anomalies) == 0
        # push samples 50..59 while the stream offers something else: the push wins
        ctx.set(core.o_stream.ready, 1)
        for j in range(50, 60):
            ctx.set(core.ctrl.push_features, pack_sample(p, x[j], 0) & ((1 << (16 * p.d)) - 1))
            ctx.set(core.ctrl.push_tag, j)
            ctx.set(core.ctrl.push_valid, 1)
            ctx.set(core.i_stream.valid, 1)
            ctx.set(core.i_stream.payload.as_value(), pack_sample(p, x[0], 999))
            assert not ctx.get(core.i_stream.ready)
            while not ctx.get(core.ctrl.push_ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(core.ctrl.push_valid, 0)
            ctx.set(core.i_stream.valid, 0)
            for _ in range(core.latency + 2):
                assert not ctx.get(core.o_stream.valid)
                if ctx.get(core.ctrl.result_valid):
                    pushed.append((ctx.get(core.ctrl.result_score), ctx.get(core.ctrl.result_anomaly),
                                   ctx.get(core.ctrl.result_argmax), ctx.get(core.ctrl.result_tag)))
                await ctx.tick()
        assert ctx.get(core.ctrl.samples) == 10
        assert ctx.get(core.ctrl.anomalies) == int(exp.anomaly[50:].sum())

    run(core, tb)
    assert pushed == [exp.row(j) for j in range(50, 60)]


def test_pipeline_plan_limits() -> None:
    """Every legal parameter corner fits the latency bound."""
    for d in (1, 2, 3, 8, 16):
        for k in (1, 2, 5, 32, 64):
            for b in (2, 64, 128):
                if k * b <= 8192:
                    assert pipeline_plan(CoreParams("x", d=d, k=k, b=b))["latency"] <= MAX_LATENCY


def test_dsp_plan_limits() -> None:
    """The DSP chain plan is used exactly where it fits: D <= 8 (A port), latency bound kept."""
    for d in (1, 2, 3, 8, 9, 16):
        for k in (1, 2, 5, 32, 64):
            p = CoreParams("x", d=d, k=k, b=64)
            plan = dsp_plan(p)
            assert (plan is not None) == (d <= 8)
            if plan is not None:
                assert plan["latency"] <= MAX_LATENCY
                assert ScorerCore(p, dsp=True).latency == plan["latency"]
            else:
                assert not ScorerCore(p, dsp=True).dsp


@pytest.mark.parametrize("dsp", [False, True], ids=["lut", "dsp"])
def test_odd_parameters(dsp: bool) -> None:
    """Non-power-of-two D and K (an odd K leaves one DSP-chain lane unpaired), D = 1 and B = 2
    elaborate and score exactly."""
    for p in (CoreParams("odd", d=3, k=5, b=8), CoreParams("tiny", d=1, k=1, b=2)):
        rng = np.random.default_rng(p.d)
        core = ScorerCore(p, dsp=dsp)
        assert core.dsp == dsp
        cfg = CoreConfig.random(p, rng)
        x = random_samples(p, rng, 60)
        tags = rng.integers(0, 1 << 32, 60)
        out: list[Result] = []

        async def tb(ctx, core=core, cfg=cfg, x=x, tags=tags, rng=rng, out=out):
            await core_load(ctx, core, cfg, 1)
            await core_commit(ctx, core, cfg)
            out.extend(await drive(ctx, core, x, tags, rng, 0.8, 0.8))

        run(core, tb)
        check(p, cfg, x, tags, out)
