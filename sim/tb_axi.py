"""cocotb tests of the ``mailpulse_axi`` top (run by ``tests/test_sim_axi.py`` through ``mailpulse.sim.runner``).

Every check compares the RTL with :class:`mailpulse.hdl.reference.EmulatedCore` / :func:`mailpulse.hdl.reference.score`.
Settings from the environment: see :mod:`mailpulse.sim.tb`.
"""

from __future__ import annotations

import copy

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi.constants import AxiResp
from mailpulse.hdl.reference import ADAPT_FRAC, CoreConfig, bins, model_writes, random_route_events, score
from mailpulse.hdl.regmap import WAIT_LIMIT

from . import plans
from .codec import random_samples
from .tb import CLK_NS, TB, settings


async def start(dut: object) -> TB:
    params, seed, _n, _m = settings()
    tb = TB(dut, params, seed)
    await tb.reset()
    return tb


def addresses(tb: TB, table_sample: int = 8) -> list[int]:
    """Every register address (a sample of the TABLE window)."""
    out = []
    for reg in tb.regmap:
        idx = range(reg.count) if reg.name != "TABLE" else sorted(
            {0, reg.count - 1, *(tb.rng.randrange(reg.count) for _ in range(table_sample))})
        out += [reg.address(i) for i in idx]
    return out


def bad_addresses(tb: TB) -> list[int]:
    """Unmapped word addresses: every gap below the table window, and a few above the ends."""
    rm = tb.regmap
    out = [a for a in range(0, rm["TABLE"].offset, 4) if rm.decode(a) is None]
    out = out[:: max(1, len(out) // 40)]
    out += [rm["TABLE"].last_address + 4, 0xFFFC]
    return sorted(set(out))


@cocotb.test()
async def test_registers(dut: object) -> None:
    """Reset values, write/read of every RW register, read-only and bad addresses, wstrb, CTRL."""
    tb = await start(dut)
    rm = tb.regmap
    # reset values of everything (reads checked against the model inside tb.read)
    for a in addresses(tb):
        await tb.read(a)
    # LATENCY: a constant that matches the measured pipeline latency
    lat = await tb.read(rm["LATENCY"].address())
    measured = await tb.measure_latency()
    assert measured == lat, f"LATENCY register says {lat} cycles, the pipeline takes {measured}"
    await tb.ctrl("CLEAR_COUNTERS")
    # random values (all 32 bits, so truncation and sign extension are checked) into every RW register
    for _round in range(2):
        rw = [a for a in addresses(tb) if rm.decode(a) and rm.decode(a)[0].access == "RW"]  # type: ignore[index]
        for a in rw:
            await tb.write(a, tb.rng.getrandbits(32))
        edge = [(rm["OFFSET"].address(0), 1 << (rm.params.offset_bits - 1)),
                (rm["FEATURE"].address(0), 0x8000), (rm["WEIGHTS"].address(0), 0xAAAAAAAA)]
        for a, v in edge:
            await tb.write(a, v)
        for a in rw:
            await tb.read(a)
    # read-only registers: writes answer SLVERR, set BUS_ERROR, change nothing
    for reg in rm:
        if reg.access == "RO":
            await tb.write(reg.address(), tb.rng.getrandbits(32))
            await tb.read(rm["STATUS"].address())
            await tb.read(reg.address()) if reg.name != "LATENCY" else None
            await tb.ctrl("CLEAR_ERROR")
            await tb.read(rm["STATUS"].address())
    # unmapped addresses: SLVERR on read and write, read as 0, BUS_ERROR sticky until CLEAR_ERROR
    for a in bad_addresses(tb):
        await tb.read(a)
        await tb.write(a, 0xDEADBEEF)
        await tb.read(rm["STATUS"].address())
    await tb.ctrl("CLEAR_ERROR")
    await tb.read(rm["STATUS"].address())
    # a write with wstrb != 0xF is ignored and answered SLVERR
    thr = rm["THRESHOLD"].address()
    before = await tb.read(thr)
    resp = await tb.raw_write(thr, 0x12345678, nbytes=2)
    assert resp == AxiResp.SLVERR, f"a 2-byte write answered {resp}, not SLVERR"
    after, _ = await tb.raw_read(thr)
    assert after == before, f"a 2-byte write changed THRESHOLD from 0x{before:08X} to 0x{after:08X}"
    await tb.ctrl("CLEAR_ERROR")
    tb.model.bus_error = False
    # COMMIT_THRESHOLD copies the threshold only
    await tb.write(thr, 0x00C0FFEE)
    await tb.ctrl("COMMIT_THRESHOLD")
    await tb.wait_quiet()
    await tb.read(rm["THRESHOLD_ACTIVE"].address())
    await tb.read(rm["STATUS"].address())
    # COMMIT swaps banks; everything reads back as the model says
    await tb.ctrl("COMMIT")
    await tb.wait_quiet()
    for a in addresses(tb):
        await tb.read(a)


@cocotb.test()
async def test_random_configs(dut: object) -> None:
    """Random configurations loaded over AXI4-Lite; random samples under idle and back-pressure."""
    tb = await start(dut)
    params, _seed, n, m = settings()
    stress = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3), (0.5, 0.5)]
    for c in range(m):
        cfg = CoreConfig.random(params, tb.nrng)
        await tb.load(cfg)
        idle, bp = stress[c % len(stress)]
        tb.set_stress(idle, bp)
        x, tags = random_samples(params, tb.nrng, n)
        await tb.stream_check(x, tags)
        tb.set_stress(0, 0)
        await tb.wait_quiet()
        await tb.read(tb.addr("SAMPLES"))
        await tb.read(tb.addr("ANOMALIES"))
        await tb.read(tb.addr("STATUS"))
    await tb.ctrl("CLEAR_COUNTERS")
    await tb.read(tb.addr("SAMPLES"))
    await tb.read(tb.addr("ANOMALIES"))


@cocotb.test()
async def test_clamp_and_threshold(dut: object) -> None:
    """Bins clamp at 0 and at B-1 (with shift 0 and with large shifts); flag is score > threshold."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    rng = tb.nrng
    cfg = CoreConfig.random(params, rng)
    # projections 0..3: shift 0 with small offsets -> most samples clamp at one end or the other
    for k in range(min(4, params.k)):
        cfg.weights[k] = rng.integers(-2, 2, size=params.d)
        cfg.weights[k, 0] = 1
        cfg.shifts[k] = [0, 0, params.shift_max, 3][k]
        cfg.offsets[k] = [0, -params.b // 2, 0, params.offset_min][k]
    x, tags = random_samples(params, rng, max(n // 2, 200))
    x[:8] = params.in_max
    x[8:16] = params.in_min
    b = bins(params, cfg, x)
    raw = (x @ cfg.weights.T - cfg.offsets[None, :]) >> cfg.shifts[None, :]
    assert (raw < 0).any() and (raw > params.b - 1).any() and (b == 0).any() and (b == params.b - 1).any()
    # threshold equal to the score of sample 20: that sample must not be flagged
    s = score(params, cfg, x, tags).score
    cfg.threshold = int(s[20])
    await tb.load(cfg)
    await tb.stream_check(x, tags)
    exp = score(params, cfg, x, tags)
    assert (exp.score == cfg.threshold).any() and exp.anomaly.any() and not exp.anomaly.all()
    # threshold one below: now flagged; via COMMIT_THRESHOLD only
    await tb.write(tb.addr("THRESHOLD"), int(s[20]) - 1)
    await tb.ctrl("COMMIT_THRESHOLD")
    await tb.wait_quiet()
    await tb.stream_check(x[:64], tags[:64])
    # extremes of the threshold range: 0 and 2**32-1
    for thr in (0, 0xFFFFFFFF):
        await tb.write(tb.addr("THRESHOLD"), thr)
        await tb.ctrl("COMMIT_THRESHOLD")
        await tb.wait_quiet()
        await tb.stream_check(x[:64], tags[:64])
    await tb.read(tb.addr("ANOMALIES"))
    # all-maximum tables: the score is K * (2**16 - 1), no wrap; argmax ties -> lowest index
    cfg.tables[:] = params.table_max
    await tb.load(cfg)
    await tb.stream_check(x[:64], tags[:64])


@cocotb.test()
async def test_push(dut: object) -> None:
    """PUSH/RESULT path: results go to RESULT_*, never to m_axis; counters count them; also mid-stream."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    rm = tb.regmap
    await tb.read(rm["STATUS"].address())
    cfg = CoreConfig.random(params, tb.nrng)
    cfg.threshold = int(np.median(score(params, cfg, *random_samples(params, tb.nrng, 100)).score))
    await tb.load(cfg)
    x, tags = random_samples(params, tb.nrng, 12)
    for i in range(len(x)):
        for d in range(params.d):
            await tb.write(rm["FEATURE"].address(d), int(x[i, d]) & 0xFFFFFFFF)
        await tb.write(rm["TAG"].address(), int(tags[i]))
        await tb.write(rm["PUSH"].address(), 1)
        await tb.wait_quiet()
        for name in ("STATUS", "RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "SAMPLES", "ANOMALIES"):
            await tb.read(rm[name].address())
    # pushes while the stream flows: the stream results are unaffected, nothing extra on m_axis
    tb.set_stress(0.2, 0.2)
    xs, ts = random_samples(params, tb.nrng, max(200, n // 4))
    tb.send(xs, ts, tb.random_frames(len(xs)))
    for i in range(4):
        await tb.write(rm["TAG"].address(), 0xA0 + i)
        await tb.write(rm["PUSH"].address(), 0)
        await ClockCycles(dut.aclk, 7)  # type: ignore[attr-defined]
    got = await tb.receive(len(xs))
    tb.scoreboard.check(got)
    tb.set_stress(0, 0)
    await tb.wait_quiet()
    for name in ("RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "SAMPLES", "ANOMALIES"):
        await tb.read(rm[name].address())
    await ClockCycles(dut.aclk, 20)  # type: ignore[attr-defined]
    assert tb.sink_empty(), "a pushed sample's result appeared on m_axis"


@cocotb.test()
async def test_reset_midstream(dut: object) -> None:
    """aresetn in the middle of a stream: everything returns to reset values, then works again."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    cfg = CoreConfig.random(params, tb.nrng)
    await tb.load(cfg)
    tb.set_stress(0.2, 0.4)
    x, tags = random_samples(params, tb.nrng, max(300, n // 4))
    tb.send(x, tags, tb.random_frames(len(x)), check=False)
    await ClockCycles(dut.aclk, 40 + tb.rng.randrange(40))  # type: ignore[attr-defined]
    await FallingEdge(dut.aclk)  # type: ignore[attr-defined]
    await tb.reset(cycles=3)
    tb.drop_results()
    tb.set_stress(0, 0)
    for a in addresses(tb):
        await tb.read(a)
    await RisingEdge(dut.aclk)  # type: ignore[attr-defined]
    assert tb.sink_empty(), "results appeared after reset with no input"
    await tb.load(cfg)
    tb.set_stress(0.2, 0.2)
    x, tags = random_samples(params, tb.nrng, max(300, n // 4))
    await tb.stream_check(x, tags)
    tb.set_stress(0, 0)
    await tb.wait_quiet()
    await tb.read(tb.addr("SAMPLES"))


@cocotb.test()
async def test_commit_under_traffic(dut: object) -> None:
    """Table commit while samples flow: each result is model(old) or model(new), switching once."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    old = CoreConfig.random(params, tb.nrng)
    new = CoreConfig.random(params, tb.nrng)
    await tb.load(old)
    for stress in ((0.0, 0.0), (0.3, 0.3)):
        tb.set_stress(*stress)
        count = max(n, 600)
        x, tags = random_samples(params, tb.nrng, count)
        writes = model_writes(tb.regmap, new)
        await tb.write_many(writes[:-40])
        tlast = tb.send(x, tags, tb.random_frames(count), check=False)
        # shadow writes while the stream flows must not change any result; then commit mid-stream
        await ClockCycles(dut.aclk, tb.rng.randrange(10, 300))  # type: ignore[attr-defined]
        await tb.write_many(writes[-40:])
        await tb.ctrl("COMMIT")
        got = await tb.receive(count)
        a = score(params, old, x, tags)
        b = score(params, new, x, tags)
        ok_a = np.ones(count, dtype=bool)
        ok_b = np.ones(count, dtype=bool)
        for name in ("score", "anomaly", "argmax", "tag"):
            ok_a &= getattr(a, name) == getattr(got, name)
            ok_b &= getattr(b, name) == getattr(got, name)
        # the switch point s: got[:s] == old, got[s:] == new
        prefix_a = int(np.argmin(ok_a)) if not ok_a.all() else count
        suffix_ok = ok_b[prefix_a:].all()
        assert suffix_ok, (f"results are not old-then-new: first non-old result at {prefix_a}, but result "
                           f"{prefix_a + int(np.argmin(ok_b[prefix_a:]))} matches neither model (x="
                           f"{x[prefix_a].tolist()})")
        assert prefix_a < count, "the commit never took effect during the stream"
        assert np.array_equal(got.tlast, tlast), "tlast was not carried through"
        tb.model.samples = (tb.model.samples + count) & 0xFFFFFFFF
        tb.model.anomalies = (tb.model.anomalies + int(a.anomaly[:prefix_a].sum())
                              + int(b.anomaly[prefix_a:].sum())) & 0xFFFFFFFF
        await tb.wait_quiet()
        for name in ("SAMPLES", "ANOMALIES", "STATUS", "THRESHOLD_ACTIVE"):
            await tb.read(tb.addr(name))
        old, new = new, CoreConfig.random(params, tb.nrng)
    # a second COMMIT with no writes swaps the table banks back (weights etc. stay): model agrees
    tb.set_stress(0, 0)
    await tb.ctrl("COMMIT")
    await tb.wait_quiet()
    x, tags = random_samples(params, tb.nrng, 200)
    await tb.stream_check(x, tags)


@cocotb.test()
async def test_shadow_writes_between_commit_and_copy(dut: object) -> None:
    """COMMIT while samples flow (pending until the pipeline drains, then the copy), and at once
    shadow writes of a third model: they wait until the copy is done, so the results switch once
    from the old model to the committed one, never to the third; the next COMMIT then gives what
    EmulatedCore says of the writes (weights, offsets, shifts, sampled table entries, threshold)."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    old, new, third = (CoreConfig.random(params, tb.nrng) for _ in range(3))
    await tb.load(old)
    await tb.write_many(model_writes(tb.regmap, new))
    writes = model_writes(tb.regmap, third)
    table = tb.regmap["TABLE"].offset
    tables = [w for w in writes if w[0] >= table]
    picked = [w for w in writes if w[0] < table] + [tables[i] for i in tb.rng.sample(range(len(tables)), 48)]
    tb.set_stress(0.2, 0.3)
    count = max(n, 600)
    x, tags = random_samples(params, tb.nrng, count)
    tlast = tb.send(x, tags, tb.random_frames(count), check=False)
    await ClockCycles(dut.aclk, tb.rng.randrange(20, 120))  # type: ignore[attr-defined]
    await tb.ctrl("COMMIT")
    status, _ = await tb.raw_read(tb.addr("STATUS"))
    assert status & tb.regmap["STATUS"].field("COMMIT_PENDING").mask, "the COMMIT did not wait for the pipeline"
    await tb.write_many(picked)         # between COMMIT and its copy
    got = await tb.receive(count)
    a, b = score(params, old, x, tags), score(params, new, x, tags)
    ok_a = np.ones(count, dtype=bool)
    ok_b = np.ones(count, dtype=bool)
    for name in ("score", "anomaly", "argmax", "tag"):
        ok_a &= getattr(a, name) == getattr(got, name)
        ok_b &= getattr(b, name) == getattr(got, name)
    switch = int(np.argmin(ok_a)) if not ok_a.all() else count
    assert 0 < switch < count, f"the commit took effect at sample {switch} of {count}"
    assert ok_b[switch:].all(), (f"result {switch + int(np.argmin(ok_b[switch:]))} is neither the old nor the "
                                 "committed model: a shadow write after COMMIT reached the committed model")
    assert np.array_equal(got.tlast, tlast)
    tb.model.samples = (tb.model.samples + count) & 0xFFFFFFFF
    tb.model.anomalies = (tb.model.anomalies + int(a.anomaly[:switch].sum()) + int(b.anomaly[switch:].sum())) \
        & 0xFFFFFFFF
    tb.set_stress(0, 0)
    await tb.wait_quiet()
    for name in ("SAMPLES", "ANOMALIES", "THRESHOLD", "THRESHOLD_ACTIVE", "STATUS"):
        await tb.read(tb.addr(name))
    for k in range(params.k):
        for name in ("WEIGHTS", "OFFSET", "SHIFT"):
            await tb.read(tb.addr(name, k))
    await tb.ctrl("COMMIT")
    await tb.wait_quiet()
    x, tags = random_samples(params, tb.nrng, 300)
    await tb.stream_check(x, tags)


@cocotb.test()
async def test_stream_right_after_reset(dut: object) -> None:
    """Samples offered from the first cycle after a reset score as the model's reset state (all
    tables 0), though block RAM still holds the last model in bank 0: no sample enters while the
    clear after reset runs."""
    tb = await start(dut)
    params, _seed, _n, _m = settings()
    for _ in range(2):   # after two commits the active bank is 0 again, holding the second model
        cfg = CoreConfig.random(params, tb.nrng)
        cfg.tables[:, 0] = params.table_max   # bin 0: where every sample lands after reset
        await tb.load(cfg)
    x, tags = random_samples(params, tb.nrng, 4 * params.b + 64)
    await FallingEdge(dut.aclk)  # type: ignore[attr-defined]
    await tb.reset(cycles=2)
    await tb.stream_check(x, tags)
    await tb.wait_quiet()
    await tb.read(tb.addr("SAMPLES"))


@cocotb.test()
async def test_stalled_results_keep_the_bus_alive(dut: object) -> None:
    """m_axis stalled with the pipeline full and a PUSH pending: the next FEATURE write is answered
    SLVERR after WAIT_LIMIT cycles, STATUS answers, a COMMIT stays pending and a shadow write
    behind it is refused; once m_axis flows, the stream results, the commit and the push complete
    as the model says."""
    tb = await start(dut)
    params, _seed, _n, _m = settings()
    rm = tb.regmap
    await tb.load(CoreConfig.random(params, tb.nrng))
    await tb.write_many(model_writes(rm, CoreConfig.random(params, tb.nrng)))
    x, tags = random_samples(params, tb.nrng, 40)
    assert tb.sink is not None
    tb.sink.pause = True
    tb.send(x, tags, [len(x)], check=False)
    while int(dut.s_axis__tready.value) or not int(dut.s_axis__tvalid.value):  # type: ignore[attr-defined]
        await RisingEdge(dut.aclk)  # type: ignore[attr-defined]
    await ClockCycles(dut.aclk, 8)  # type: ignore[attr-defined]
    assert not int(dut.s_axis__tready.value), "the pipeline did not fill"  # type: ignore[attr-defined]
    # how many samples went in: the source queue holds the rest of the frame
    tb.model.stall_results(True)
    await tb.write(rm["PUSH"].address(), 1)
    await tb.read(rm["STATUS"].address())
    t0 = get_sim_time("ns")
    # SLVERR (checked against the model); a bus that hangs fails here instead of hanging the test
    await with_timeout(tb.write(rm["FEATURE"].address(0), 1), (WAIT_LIMIT + 1000) * CLK_NS, "ns")
    waited = int(get_sim_time("ns") - t0) // CLK_NS
    assert WAIT_LIMIT <= waited < WAIT_LIMIT + 64, f"the refused write took {waited} cycles"
    await tb.read(rm["STATUS"].address())
    await tb.ctrl("CLEAR_ERROR")
    await tb.ctrl("COMMIT")
    await tb.write(rm["THRESHOLD"].address(), 99)        # SLVERR: a commit is pending
    for name in ("STATUS", "THRESHOLD", "RESULT_TAG"):
        await tb.read(rm[name].address())
    tb.sink.pause = False
    got = await tb.receive(len(x))
    assert list(got.tag) == [int(t) for t in tags], "stream results lost or reordered"
    tb.model.stall_results(False)
    await tb.wait_quiet()
    for name in ("STATUS", "RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "THRESHOLD_ACTIVE"):
        await tb.read(rm[name].address())


@cocotb.test()
async def test_adaptive_threshold(dut: object) -> None:
    """The adaptive threshold on the streaming core, bit for bit against the model, with settings
    from :func:`mailpulse.sim.plans.adaptive_config` that reach on their samples what each step
    needs.  A setting whose steps are below one score unit (the threshold moves, steps freely, has
    a fraction, is clamped at T_MIN and at T_MAX) streamed in two batches under idle and
    back-pressure on m_axis, then PUSHes (they adapt it too) until THRESHOLD_FRAC is not 0;
    COMMIT_THRESHOLD reseeds it (fraction 0); a second setting that sweeps over many scores,
    committed with the pipeline idle, reseeds it; COMMIT_THRESHOLD again while samples flow at one
    per clock (a step in flight when it lands); a third setting committed while samples flow
    reseeds it at the switch point (:func:`mailpulse.sim.plans.commit_switch`).  THRESHOLD_ACTIVE
    and THRESHOLD_FRAC are read back after every batch, push and commit."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    rm = tb.regmap
    count = max(n, 400)
    frac_mask = (1 << ADAPT_FRAC) - 1

    async def check_state() -> None:
        for name in plans.state_registers(tb.model.active):
            await tb.read(tb.addr(name))

    async def push_until_fraction(x: np.ndarray) -> None:
        """Push samples of ``x`` (at least 4) until the accumulator has a fraction."""
        for i in range(len(x)):
            if i >= 4 and tb.model.acc & frac_mask:
                return
            for d in range(params.d):
                await tb.write(rm["FEATURE"].address(d), int(x[i, d]) & 0xFFFFFFFF)
            await tb.write(rm["PUSH"].address(), 1)
            await tb.wait_quiet()
            for name in ("RESULT_SCORE", "RESULT_INFO"):
                await tb.read(tb.addr(name))
            await check_state()
        assert tb.model.acc & frac_mask, f"{len(x)} pushes left no fraction in the accumulator"

    async def commit_in_stream(old: CoreConfig, new: CoreConfig, x: np.ndarray, tags: np.ndarray,
                               writes: list[tuple[int, int]], what: str, wait: tuple[int, int] = (40, 200)) -> None:
        """Stream ``x`` and, while it flows, write ``writes`` and ``CTRL.<what>``; check the
        results old-then-new and sync the model to the switch point the threshold read shows."""
        tlast = tb.send(x, tags, tb.random_frames(len(x)), check=False)
        acc = tb.model.acc
        await ClockCycles(dut.aclk, tb.rng.randrange(*wait))  # type: ignore[attr-defined]
        await tb.write_many(writes)
        await tb.ctrl(what)
        got = await tb.receive(len(x))
        found = [f for f in plans.commit_switch(params, old, new, x, tags, got, acc) if 0 < f[0] < len(x)]
        assert found, f"{what} did not take effect during the {len(x)} samples"
        assert np.array_equal(got.tlast, tlast), "tlast was not carried through"
        await tb.wait_quiet()
        rtl_acc = ((await tb.raw_read(tb.addr("THRESHOLD_ACTIVE")))[0] << ADAPT_FRAC
                   | (await tb.raw_read(tb.addr("THRESHOLD_FRAC")))[0])
        _s, before, after = next((f for f in found if f[2].acc == rtl_acc), found[0])
        m = tb.model
        m.samples = (m.samples + len(x)) & 0xFFFFFFFF
        m.anomalies = (m.anomalies + int(before.anomaly.sum()) + int(after.anomaly.sum())) & 0xFFFFFFFF
        assert after.acc is not None
        m.acc = after.acc
        m.active.threshold = after.acc >> ADAPT_FRAC
        await check_state()

    x, tags = random_samples(params, tb.nrng, count)
    cfg = plans.adaptive_config(params, x, tb.nrng)
    await tb.load(cfg)
    for name in ("ADAPT", "T_MIN", "T_MAX", "THRESHOLD"):
        await tb.read(tb.addr(name))
    await check_state()
    tb.set_stress(0.2, 0.5)
    half = count // 2
    for part in (slice(0, half), slice(half, count)):
        await tb.stream_check(x[part], tags[part])
        await tb.wait_quiet()
        await check_state()
    await push_until_fraction(x[::-1])
    # COMMIT_THRESHOLD reseeds the accumulator (fraction 0); the threshold adapts from there
    await tb.write(tb.addr("THRESHOLD"), cfg.threshold)
    await tb.ctrl("COMMIT_THRESHOLD")
    await tb.wait_quiet()
    await check_state()
    await tb.stream_check(x[:64], tags[:64])
    await push_until_fraction(x[64:])
    # a commit with the pipeline idle reseeds it from the new THRESHOLD
    wide, x2, tags2, x4, tags4, seed4 = plans.threshold_commit_plan(
        params, tb.nrng, count, 200, 5, 180, frozenset({"adapt:moved", "adapt:free", "adapt:sweep"}))
    await tb.load(wide)
    await check_state()
    await tb.stream_check(x2, tags2)
    await tb.wait_quiet()
    await check_state()
    # COMMIT_THRESHOLD while samples flow at one per clock (a step in flight every cycle): a seed
    # that shows wherever it lands takes over at one sample
    tb.set_stress(0, 0)
    reseed = wide.copy()
    reseed.threshold = seed4
    await commit_in_stream(wide, reseed, x4, tags4, [(tb.addr("THRESHOLD"), seed4)], "COMMIT_THRESHOLD",
                           wait=(10, 80))
    # a third setting committed while samples flow under stress: its seed takes over at the switch
    tb.set_stress(0.2, 0.5)
    x3, tags3 = random_samples(params, tb.nrng, count)
    new = plans.adaptive_config(params, x3, tb.nrng)
    writes = model_writes(rm, new)
    await tb.write_many(writes[:-40])
    # the last 40 writes (ADAPT, T_MIN, T_MAX, THRESHOLD among them) while the stream flows: shadow only
    await commit_in_stream(reseed, new, x3, tags3, writes[-40:], "COMMIT")
    tb.set_stress(0, 0)


@cocotb.test()
async def test_route_intervals(dut: object) -> None:
    """The per-route latency intervals on the streaming core (a set with routes), bit for bit
    against the model: a setting and route events from :func:`mailpulse.sim.plans.route_plan`
    (latencies below, above and inside their route's interval, route ids past R) streamed in the
    s_axis beats under idle and back-pressure, BELOW/ABOVE checked in every m_axis result beat and
    every ROUTE_BOUND read back; a bound seeded over AXI4-Lite with the pipeline idle, then one
    seeded while samples flow (the results must fit the model with the seed landing between two
    samples, and the flags must show it: ``routes:seeded``); PUSHes with ROUTE set
    (RESULT_INFO.BELOW/ABOVE)."""
    tb = await start(dut)
    params, _seed, n, _m = settings()
    assert params.r, f"parameter set {params.name} has no routes"
    rm = tb.regmap
    count = max(n, 200)
    bounds = [rm["ROUTE_BOUND"].address(i) for i in range(2 * params.r)]

    async def check_bounds() -> None:
        for a in bounds:
            await tb.read(a)

    # the reset bounds, then a setting whose events reach every route event from seeded bounds
    await check_bounds()
    cfg = CoreConfig.random(params, tb.nrng)
    for i, a in enumerate(bounds):   # seed each route's interval around its events' centre
        await tb.write(a, (0x0800 if i % 2 == 0 else 0x0C00) << ADAPT_FRAC)
    rcfg, routes, lat = plans.route_plan(params, tb.nrng, count, tb.model.lower, tb.model.upper)
    cfg.routes = rcfg
    await tb.load(cfg)
    await tb.read(tb.addr("ADAPT"))
    await check_bounds()
    x, tags = random_samples(params, tb.nrng, count)
    tb.set_stress(0.2, 0.5)
    half = count // 2
    for part in (slice(0, half), slice(half, count)):
        await tb.stream_check(x[part], tags[part], routes=routes[part], latencies=lat[part])
        await tb.wait_quiet()
        await check_bounds()
    # seeding with the pipeline idle: the next events of that route see the new bound
    r0 = int(routes[0]) if routes[0] < params.r else 0
    await tb.write(bounds[2 * r0], 0xFFFF_FFFF)   # capped at 0xFFFF << ADAPT_FRAC: everything is below
    await tb.read(bounds[2 * r0])
    await tb.stream_check(x[:64], tags[:64], routes=routes[:64], latencies=lat[:64])
    await tb.wait_quiet()
    await check_bounds()
    # seeding while samples flow: find where the seed landed
    tb.set_stress(0, 0.3)
    x2, tags2 = random_samples(params, tb.nrng, count)
    routes2, lat2 = random_route_events(tb.nrng, count, params.r)
    showing = plans.route_seed_showing(routes2, lat2, tb.model.lower, tb.model.upper, rcfg)
    assert showing is not None, "no ROUTE_BOUND seed changes a flag of these events"
    seed_addr, seed_value = bounds[showing[0]], showing[1]
    tlast = tb.send(x2, tags2, tb.random_frames(count), check=False, routes=routes2, latencies=lat2)
    await ClockCycles(dut.aclk, tb.rng.randrange(30, 120))  # type: ignore[attr-defined]
    resp = await tb.raw_write(seed_addr, seed_value)
    assert resp == AxiResp.OKAY, f"the ROUTE_BOUND write answered {resp}"
    got = await tb.receive(count)
    assert np.array_equal(got.tlast, tlast), "tlast was not carried through"
    await tb.wait_quiet()
    rtl_bounds = [(await tb.raw_read(a))[0] for a in bounds]
    before = copy.deepcopy(tb.model)
    assert got.below is not None and got.above is not None
    fits = []
    for s in range(count + 1):
        m = copy.deepcopy(tb.model)
        head = m.stream(x2[:s], tags2[:s], routes2[:s], lat2[:s])
        m.write(seed_addr, seed_value)
        tail = m.stream(x2[s:], tags2[s:], routes2[s:], lat2[s:])
        assert head.below is not None and tail.below is not None and head.above is not None and tail.above is not None
        if (np.array_equal(np.concatenate([head.below, tail.below]), got.below)
                and np.array_equal(np.concatenate([head.above, tail.above]), got.above)
                and [m.read(q) for q in bounds] == rtl_bounds):
            fits.append((s, m, head, tail))
    exp = copy.deepcopy(tb.model).stream(x2, tags2, routes2, lat2)   # without the seed, for the message
    assert exp.below is not None and exp.above is not None
    assert fits, (f"the results fit no point where the ROUTE_BOUND seed could have landed: below "
                  f"{np.flatnonzero(exp.below != got.below)[:5].tolist()} above "
                  f"{np.flatnonzero(exp.above != got.above)[:5].tolist()} differ from the unseeded model; "
                  f"bounds read {rtl_bounds}")
    inside = [f for f in fits if 0 < f[0] < count]   # several points can fit: one in the stream must
    assert inside, f"the seed landed at {[f[0] for f in fits]}: not while the {count} samples flowed"
    s, tb.model, head, tail = inside[0]
    for name in ("score", "anomaly", "argmax", "tag"):
        want = np.concatenate([np.asarray(getattr(head, name)), np.asarray(getattr(tail, name))])
        assert np.array_equal(want, np.asarray(getattr(got, name))), f"{name} of the results differs from the model"
    at = copy.deepcopy(before)
    at.stream(x2[:s], tags2[:s], routes2[:s], lat2[:s])
    seeded = copy.deepcopy(at)
    seeded.write(seed_addr, seed_value)
    assert "routes:seeded" in plans.route_reached(routes2[s:], lat2[s:], seeded.lower, seeded.upper, rcfg,
                                                  unseeded=(at.lower, at.upper)), \
        f"the seed that landed at {s} changed no flag: a lost seed would pass"
    tb.set_stress(0, 0)
    await check_bounds()
    # PUSH with ROUTE: RESULT_INFO.BELOW/ABOVE, the bounds adapt
    route = rm["ROUTE"]
    for i in range(12):
        rid = int(routes[i]) if i % 4 else params.r + i   # every fourth past R: not tracked
        await tb.write(route.address(), route.value(ID=rid & 0xFFFF, LATENCY=int(lat[i])))
        for d in range(params.d):
            await tb.write(rm["FEATURE"].address(d), int(x[i, d]) & 0xFFFFFFFF)
        await tb.write(rm["PUSH"].address(), 1)
        await tb.wait_quiet()
        for name in ("ROUTE", "RESULT_SCORE", "RESULT_INFO"):
            await tb.read(tb.addr(name))
        await check_bounds()
