"""What the register front end and the cores do when something must wait (Amaranth simulator).

Regression tests of the post-reset window and the register-bus hang, each compared with
mailpulse.hdl.reference.EmulatedCore:

* the post-reset window: no stream sample enters while the tables are cleared after reset (block
  RAM keeps what it held before the reset);
* the bus never hangs: with the result stream stalled and the pipeline full, every access is
  answered within WAIT_LIMIT cycles (an error for the ones that would have to wait for the
  pipeline), STATUS always answers, and everything pending completes once the stream flows;
* a commit's copy runs while an access waits for it (an operand write behind a PUSH that waits
  for the commit deadlocked the front end);
* shadow writes and a second COMMIT between a COMMIT and its copy wait for the copy, so a COMMIT
  takes the shadow model as it was when written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _hdl_sim import Bench, Host, pack_sample, random_samples, unpack_result
from amaranth.sim import Simulator
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import CoreConfig, EmulatedCore, model_writes
from mailpulse.hdl.regmap import WAIT_LIMIT, RegisterMap

CTRL_BITS = {f.name: f.mask for f in RegisterMap(get_params("small"))["CTRL"].fields}


def simulate(bench: Bench, *benches: Any) -> list[tuple[int, int, int, int]]:
    """Run the testbenches (the first in the foreground); returns the stream results seen."""
    seen: list[tuple[int, int, int, int]] = []

    async def sink(ctx):
        async for _clk, _rst, valid, ready, payload in ctx.tick().sample(
                bench.o_stream.valid, bench.o_stream.ready, bench.o_stream.payload.as_value()):
            if valid and ready:
                seen.append(unpack_result(bench.params, payload).row())

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(benches[0])
    for b in benches[1:]:
        sim.add_testbench(b, background=True)
    if not bench.folded:
        sim.add_process(sink)
    sim.run()
    return seen


async def stream_stalled(ctx, bench: Bench, xs: np.ndarray, tag0: int, most: int) -> int:
    """With ``o_stream`` stalled, offer samples until ``most`` are taken or the input stops
    taking them (pipeline and output buffer full); returns how many were taken."""
    p = bench.params
    ctx.set(bench.o_stream.ready, 0)
    ctx.set(bench.i_stream.valid, 1)
    n = refused = 0
    while n < most and refused < 4:
        ctx.set(bench.i_stream.payload.as_value(), pack_sample(p, xs[n], tag0 + n))
        took = ctx.get(bench.i_stream.ready)
        await ctx.tick()
        n, refused = (n + 1, 0) if took else (n, refused + 1)
    ctx.set(bench.i_stream.valid, 0)
    return n


async def load(h: Host, cfg: CoreConfig) -> None:
    rm = h.model.regmap
    for a, v in model_writes(rm, cfg):
        await h.write(a, v)
    await h.write(rm["CTRL"].address(), CTRL_BITS["COMMIT"])
    await h.wait_status("COMMIT_PENDING", 0)


async def set_features(h: Host, x: np.ndarray, tag: int) -> None:
    rm = h.model.regmap
    for d, v in enumerate(x):
        await h.write(rm["FEATURE"].address(d), int(v))
    await h.write(rm["TAG"].address(), tag)


async def read_all(h: Host, *names: str) -> None:
    for name in names:
        await h.read(h.model.regmap[name].address())


@pytest.mark.parametrize("name", ["small", "full"])
def test_no_sample_enters_during_the_clear_after_reset(name: str) -> None:
    """Old table contents (what block RAM holds across a reset) never reach a score: samples
    offered from the first cycle after reset wait for the clear and score as the model's reset
    state does (0), and tready stays low for the whole clear."""
    p = get_params(name)
    bench = Bench(p)
    for mem in bench.core.table_data:   # bank 0 and bank 1 hold an old model
        mem.init = [(7919 * (i + 1)) & 0xFFFF or 1 for i in range(2 * p.b)]
    model = EmulatedCore(p)
    xs = random_samples(p, np.random.default_rng(5), 3 * bench.core.clear_cycles)
    first_ready: list[int] = []

    async def tb(ctx):
        ctx.set(bench.o_stream.ready, 1)
        ctx.set(bench.i_stream.valid, 1)
        n = cycle = 0
        while n < len(xs):
            ctx.set(bench.i_stream.payload.as_value(), pack_sample(p, xs[n], n))
            if ctx.get(bench.i_stream.ready):
                first_ready.append(cycle)
                n += 1
            await ctx.tick()
            cycle += 1
        ctx.set(bench.i_stream.valid, 0)
        await ctx.tick().repeat(bench.core.latency + 4)

    seen = simulate(bench, tb)
    assert first_ready[0] >= bench.core.clear_cycles, f"a sample entered in cycle {first_ready[0]}, during the clear"
    exp = model.stream(xs, np.arange(len(xs)))
    assert seen == [exp.row(i) for i in range(len(xs))]


def test_stalled_result_stream_bounds_every_access() -> None:
    """Result stream stalled, pipeline full: a PUSH and a COMMIT stay pending; every access that
    would wait for them (COMMIT_THRESHOLD too: it waits for the PUSH) is answered with an error
    after WAIT_LIMIT cycles and does nothing, the others (reads, CLEAR_ERROR) answer at once - all
    as the model says.  When
    the stream flows, the stream results come out intact, the commit happens, then the push."""
    p = get_params("small")
    bench = Bench(p)
    model = EmulatedCore(p)
    rm = model.regmap
    rng = np.random.default_rng(21)
    cfg = CoreConfig.random(p, rng)
    xs = random_samples(p, rng, 64)
    expected: list[tuple[int, int, int, int]] = []
    waited: list[int] = []

    async def tb(ctx):
        h = Host(ctx, bench, model)
        await load(h, cfg)
        await set_features(h, xs[-1], 0xC0DE)
        n = await stream_stalled(ctx, bench, xs, 100, len(xs) - 1)
        assert 0 < n < len(xs) - 1, "the pipeline never filled"
        exp = model.stream(xs[:n], np.arange(100, 100 + n))
        expected.extend(exp.row(i) for i in range(n))
        model.stall_results(True)
        await read_all(h, "STATUS")   # (SAMPLES counts results that left the pipeline: not yet)
        assert not await h.write(rm["PUSH"].address(), 1)       # taken, pending
        for a, v in [(rm["FEATURE"].address(0), 5), (rm["TAG"].address(), 6), (rm["PUSH"].address(), 1)]:
            t0 = clock[0]
            assert await h.write(a, v)                           # answered: an error after the time-out
            waited.append(clock[0] - t0)
            await read_all(h, "STATUS", "FEATURE", "TAG", "RESULT_SCORE")
        await h.write(rm["CTRL"].address(), CTRL_BITS["CLEAR_ERROR"])
        await h.write(rm["THRESHOLD"].address(), 12345)           # before the COMMIT: taken
        assert not await h.write(rm["CTRL"].address(), CTRL_BITS["COMMIT"])   # pending
        for a, v in [(rm["THRESHOLD"].address(), 7), (rm["OFFSET"].address(1), 9), (rm["TABLE"].address(3), 11),
                     (rm["CTRL"].address(), CTRL_BITS["COMMIT"] | CTRL_BITS["CLEAR_COUNTERS"])]:
            assert await h.write(a, v)
        t0 = clock[0]
        assert await h.write(rm["CTRL"].address(), CTRL_BITS["COMMIT_THRESHOLD"])   # behind the PUSH: an error
        waited.append(clock[0] - t0)
        await read_all(h, "STATUS", "THRESHOLD", "THRESHOLD_ACTIVE", "OFFSET")
        ctx.set(bench.o_stream.ready, 1)
        model.stall_results(False)
        await h.wait_status("RESULT_VALID", 1)
        await read_all(h, "STATUS", "RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "SAMPLES", "ANOMALIES",
                       "THRESHOLD_ACTIVE")

    clock = [0]
    seen = simulate(bench, tb, cycle_counter(clock))
    assert seen == expected
    assert all(WAIT_LIMIT <= w < WAIT_LIMIT + 40 for w in waited), waited


@pytest.mark.parametrize("core", ["streaming", "folded"])
def test_commit_copy_runs_while_an_access_waits(core: str) -> None:
    """COMMIT while samples are in flight, then a PUSH (it waits for the commit), then a FEATURE
    write (it waits for the PUSH): the copy must run while that write waits, then the push, then
    the write.  The front end used to wait for the write to end before it started the copy."""
    p = get_params("full")
    bench = Bench(p, folded=core == "folded")
    model = EmulatedCore(p)
    rm = model.regmap
    rng = np.random.default_rng(3)
    cfgs = [CoreConfig.random(p, rng) for _ in range(2)]
    xs = random_samples(p, rng, 8)
    expected: list[tuple[int, int, int, int]] = []
    stalled: list[int] = []

    async def tb(ctx):
        h = Host(ctx, bench, model)
        await load(h, cfgs[0])
        for a, v in model_writes(rm, cfgs[1]):
            await h.write(a, v)
        await set_features(h, xs[0], 41)
        if core == "folded":
            await h.write(rm["PUSH"].address(), 1)      # in flight while the COMMIT is written
        else:
            n = await stream_stalled(ctx, bench, xs, 10, 3)
            stalled.append(1)
            exp = model.stream(xs[:n], np.arange(10, 10 + n))
            expected.extend(exp.row(i) for i in range(n))
        await h.write(rm["CTRL"].address(), CTRL_BITS["COMMIT"])
        await h.write(rm["PUSH"].address(), 1)
        await h.write(rm["FEATURE"].address(0), 77)
        await read_all(h, "STATUS", "RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "FEATURE", "SAMPLES")

    seen = simulate(bench, tb, release_after(bench, stalled, 200))
    assert seen == expected


def test_shadow_writes_wait_for_the_commit_copy() -> None:
    """Between a COMMIT and its copy (the pipeline still draining), writes to shadow registers,
    the table window and a second COMMIT wait: the first commit takes the shadow model as it was,
    the late writes go to the next one, and the second COMMIT swaps again."""
    p = get_params("small")
    bench = Bench(p)
    model = EmulatedCore(p)
    rm = model.regmap
    rng = np.random.default_rng(8)
    cfgs = [CoreConfig.random(p, rng) for _ in range(2)]
    xs = random_samples(p, rng, 8)
    expected: list[tuple[int, int, int, int]] = []
    stalled: list[int] = []

    async def tb(ctx):
        h = Host(ctx, bench, model)
        await load(h, cfgs[0])
        for a, v in model_writes(rm, cfgs[1]):
            await h.write(a, v)
        n = await stream_stalled(ctx, bench, xs, 0, 3)
        stalled.append(1)
        expected.extend(model.stream(xs[:n], np.arange(n)).row(i) for i in range(n))
        await h.write(rm["CTRL"].address(), CTRL_BITS["COMMIT"])
        late = [(rm["THRESHOLD"].address(), 3), (rm["OFFSET"].address(0), 0xFFFF_FF00),
                (rm["SHIFT"].address(p.k - 1), 2), (rm["WEIGHTS"].address(1), 0x5555),
                (rm["TABLE"].address(0), 0xBEEF), (rm["TABLE"].address(p.b + 1), 0x1234)]
        for a, v in late:
            await h.write(a, v)
        await h.write(rm["CTRL"].address(), CTRL_BITS["COMMIT"])
        await h.wait_status("COMMIT_PENDING", 0)
        await read_all(h, "STATUS", "THRESHOLD", "THRESHOLD_ACTIVE")
        for x, tag in ((xs[5], 5), (np.zeros(p.d, dtype=np.int64), 6)):
            await set_features(h, x, tag)
            await h.write(rm["PUSH"].address(), 1)
            await h.wait_status("RESULT_VALID", 1)
            await read_all(h, "RESULT_SCORE", "RESULT_TAG", "RESULT_INFO")

    seen = simulate(bench, tb, release_after(bench, stalled, 300))
    assert seen == expected


def release_after(bench: Bench, stalled: list[int], cycles: int) -> Any:
    """A background testbench that sets ``o_stream.ready`` ``cycles`` after ``stalled`` gets an item."""
    async def release(ctx):
        while not stalled:
            await ctx.tick()
        await ctx.tick().repeat(cycles)
        ctx.set(bench.o_stream.ready, 1)
    return release


def cycle_counter(clock: list[int]) -> Any:
    """A background testbench that counts clock cycles into ``clock[0]``."""
    async def counter(ctx):
        while True:
            await ctx.tick()
            clock[0] += 1
    return counter
