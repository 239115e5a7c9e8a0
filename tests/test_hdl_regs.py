"""The register front end (mailpulse.hdl.regs.RegisterFile + ScorerCore) against mailpulse.hdl.reference.EmulatedCore.

Accesses go through the internal register port the bridges use; every read value, every error
and the STATUS bits are compared with the register-level model.
"""

from __future__ import annotations

from typing import Any

import _hdl_sim
import numpy as np
import pytest
from _hdl_sim import Bench, Host, bus_access, pack_sample, random_samples, unpack_result
from amaranth.sim import Simulator
from mailpulse.hdl.params import FORMAL_PARAMS, CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig, EmulatedCore, model_writes, score
from mailpulse.hdl.regmap import TABLE_BASE, RegisterMap
from mailpulse.hdl.regs import RegisterFile


def run(bench: Bench, tb) -> None:
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def bad_addresses(rm: RegisterMap) -> list[int]:
    """Addresses that decode to nothing: after each register, unaligned, gaps, the far end."""
    cands = {rm["TABLE"].last_address + 4, 0xFFFC, TABLE_BASE - 4, 0x0002, 0x0041, 0x7FFC}
    for r in rm:
        cands.add(r.last_address + 4)
        cands.add(r.offset + 2)
    return sorted(a for a in cands if a < 0x10000 and rm.decode(a) is None)


def all_scalar_addresses(rm: RegisterMap) -> list[int]:
    """Every register address, arrays at both ends (TABLE included)."""
    out = []
    for r in rm:
        out += sorted({r.address(0), r.address(r.count - 1), r.address(r.count // 2)})
    return out


@pytest.mark.parametrize("name", ["small", "zynq"])
def test_reset_values_errors_and_rw(name: str) -> None:
    """Reset values, RW round trips with truncation and sign extension, RO writes, WO reads, bad
    addresses, the sticky BUS_ERROR and CLEAR_ERROR - all exactly as the model."""
    p = get_params(name)
    bench = Bench(p)
    model = EmulatedCore(p)
    rm = model.regmap
    rng = np.random.default_rng(2)

    async def tb(ctx):
        h = Host(ctx, bench, model)
        for a in all_scalar_addresses(rm):
            await h.read(a)
        # RW: random values (all 32 bits random: truncation and sign extension are visible)
        for r in rm:
            if r.access != "RW":
                continue
            for i in sorted({0, r.count - 1}):
                top = 1 << (r.fields[-1].lsb + r.fields[-1].width - 1)
                for v in (0xFFFFFFFF, 0x80000000, int(rng.integers(0, 1 << 32)), top):
                    await h.write(r.address(i), v)
                    await h.read(r.address(i))
        # RO writes: error, sticky BUS_ERROR, value unchanged
        for r in rm:
            if r.access == "RO":
                await h.write(r.address(), 0x12345678)
                await h.read(r.address())
        await h.read(rm["STATUS"].address())
        await h.write(rm["CTRL"].address(), 1 << rm["CTRL"].field("CLEAR_ERROR").lsb)
        await h.read(rm["STATUS"].address())
        # bad addresses: reads and writes
        for a in bad_addresses(rm):
            await h.read(a)
            await h.read(rm["STATUS"].address())
            await h.write(rm["CTRL"].address(), 1 << rm["CTRL"].field("CLEAR_ERROR").lsb)
            await h.write(a, 0xDEADBEEF)
            await h.read(rm["STATUS"].address())
        # WO registers read as 0 without error (PUSH excluded from writes here)
        for name_ in ("CTRL", "PUSH", "TABLE"):
            await h.read(rm[name_].address())

    run(bench, tb)


def test_model_load_commit_push_stream_and_counters() -> None:
    """A whole model goes in through the registers (tables included), COMMIT swaps it in, pushed
    samples come back in RESULT_* (and never on the stream), stream samples score with the same
    model, counters count both, CLEAR_COUNTERS, a second commit flips the bank back; STATUS and
    every read-back agree with the model throughout."""
    p = get_params("small")
    bench = Bench(p)
    model = EmulatedCore(p)
    rm = model.regmap
    rng = np.random.default_rng(9)
    cfgs = [CoreConfig.random(p, rng) for _ in range(2)]
    xs = random_samples(p, rng, 30)
    for cfg in cfgs:
        cfg.threshold = int(np.median(score(p, cfg, xs).score))
    stream_out = []

    async def tb(ctx):
        h = Host(ctx, bench, model)
        ctx.set(bench.o_stream.ready, 1)
        for c, cfg in enumerate(cfgs):
            for a, v in model_writes(rm, cfg):
                await h.write(a, v)
            await h.write(rm["CTRL"].address(), 1 << rm["CTRL"].field("COMMIT").lsb)
            await h.wait_status("COMMIT_PENDING", 0)
            await h.read(rm["STATUS"].address())
            await h.read(rm["THRESHOLD_ACTIVE"].address())
            # push 6 samples
            for j in range(6):
                x = xs[6 * c + j]
                for d in range(p.d):
                    await h.write(rm["FEATURE"].address(d), int(x[d]))
                await h.write(rm["TAG"].address(), 1000 * c + j)
                await h.write(rm["PUSH"].address(), 1)
                await h.wait_status("RESULT_VALID", 1)
                for name in ("RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "STATUS", "SAMPLES", "ANOMALIES"):
                    await h.read(rm[name].address())
                assert not ctx.get(bench.o_stream.valid)
            # back-to-back PUSH writes: the second waits for the first result
            await h.write(rm["PUSH"].address(), 1)
            await h.write(rm["PUSH"].address(), 1)
            await h.wait_status("RESULT_VALID", 1)
            for name in ("RESULT_SCORE", "RESULT_TAG", "RESULT_INFO", "SAMPLES", "ANOMALIES"):
                await h.read(rm[name].address())
            # stream 10 samples
            for j in range(10):
                x = xs[12 + 10 * c + j] if 12 + 10 * c + j < len(xs) else xs[j]
                ctx.set(bench.i_stream.payload.as_value(), pack_sample(p, x, j))
                ctx.set(bench.i_stream.valid, 1)
                while not ctx.get(bench.i_stream.ready):
                    await ctx.tick()
                await ctx.tick()
                ctx.set(bench.i_stream.valid, 0)
                exp = model.stream(x[None, :], [j]).row(0)
                stream_out.append(exp)
            for _ in range(bench.core.latency + 4):
                await ctx.tick()
            for name in ("SAMPLES", "ANOMALIES", "STATUS"):
                await h.read(rm[name].address())
            await h.write(rm["CTRL"].address(), 1 << rm["CTRL"].field("CLEAR_COUNTERS").lsb)
            for name in ("SAMPLES", "ANOMALIES"):
                await h.read(rm[name].address())
        # a commit with nothing new written flips back to bank 0 with the old bank-0 tables
        await h.write(rm["CTRL"].address(), 1 << rm["CTRL"].field("COMMIT").lsb)
        await h.wait_status("COMMIT_PENDING", 0)
        await h.read(rm["STATUS"].address())
        await h.write(rm["PUSH"].address(), 1)
        await h.wait_status("RESULT_VALID", 1)
        for name in ("RESULT_SCORE", "RESULT_INFO"):
            await h.read(rm[name].address())
        # threshold-only commit
        await h.write(rm["THRESHOLD"].address(), 5)
        await h.read(rm["THRESHOLD_ACTIVE"].address())
        await h.write(rm["CTRL"].address(), 1 << rm["CTRL"].field("COMMIT_THRESHOLD").lsb)
        await h.read(rm["THRESHOLD_ACTIVE"].address())

    seen = []

    async def sink(ctx):
        async for _clk, _rst, valid, payload in ctx.tick().sample(bench.o_stream.valid,
                                                                  bench.o_stream.payload.as_value()):
            if valid:
                seen.append(unpack_result(p, payload).row())

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.add_process(sink)
    sim.run()
    assert seen == stream_out


def test_push_waits_behind_a_stalled_stream() -> None:
    """With the output stalled and the pipeline full, a PUSH stays pending (STATUS.PUSH_PENDING),
    the stream results come out intact once the output drains, and then the push completes."""
    p = get_params("small")
    bench = Bench(p)
    model = EmulatedCore(p)
    rm = model.regmap
    rng = np.random.default_rng(4)
    xs = random_samples(p, rng, 40)
    got: list[int] = []

    async def tb(ctx):
        h = Host(ctx, bench, model)
        ctx.set(bench.o_stream.ready, 0)
        await ctx.tick().repeat(bench.core.clear_cycles + 4)   # no sample enters during the clear
        n_in = 0
        ctx.set(bench.i_stream.valid, 1)
        for _ in range(3 * bench.core.latency):
            ctx.set(bench.i_stream.payload.as_value(), pack_sample(p, xs[n_in], n_in))
            n_in += ctx.get(bench.i_stream.ready)
            await ctx.tick()
        ctx.set(bench.i_stream.valid, 0)
        _, err = await bus_access(ctx, bench.bus, rm["PUSH"].address(), True, 1)
        assert not err
        st, _ = await bus_access(ctx, bench.bus, rm["STATUS"].address(), False)
        assert st >> rm["STATUS"].field("PUSH_PENDING").lsb & 1
        assert st >> rm["STATUS"].field("BUSY").lsb & 1
        ctx.set(bench.o_stream.ready, 1)
        while len(got) < n_in:
            if ctx.get(bench.o_stream.valid):
                got.append(unpack_result(p, ctx.get(bench.o_stream.payload.as_value())).tag)
            await ctx.tick()
        await h.wait_status("RESULT_VALID", 1)
        st, _ = await bus_access(ctx, bench.bus, rm["SAMPLES"].address(), False)
        assert st == n_in + 1
        assert not ctx.get(bench.o_stream.valid)

    run(bench, tb)
    assert got == list(range(len(got)))


def test_table_writes_during_the_clear_after_reset() -> None:
    """Back-to-back TABLE writes from the first cycle (in address order, and one far ahead of the
    clear) land in the shadow bank and are not cleared away; the active bank is zero."""
    p = get_params("small")
    bench = Bench(p)
    rm = RegisterMap(p)
    rng = np.random.default_rng(13)
    vals = [int(v) for v in rng.integers(1, 1 << 16, size=3 * p.b)]
    far = rm["TABLE"].count - 1

    async def tb(ctx):
        tab = rm["TABLE"]
        _, err = await bus_access(ctx, bench.bus, tab.address(far), True, 0xBEEF)
        assert not err
        for i, v in enumerate(vals):
            _, err = await bus_access(ctx, bench.bus, tab.address(i), True, v)
            assert not err
        await ctx.tick().repeat(bench.core.clear_cycles + 4)
        td = bench.core.table_data
        for i, v in enumerate(vals):
            k, b = divmod(i, p.b)
            assert ctx.get(td[k][p.b + b]) == v
            assert ctx.get(td[k][b]) == 0
        assert ctx.get(td[p.k - 1][2 * p.b - 1]) == 0xBEEF

    run(bench, tb)


@pytest.mark.parametrize(("params", "clear_cycles"), [
    (get_params("small"), None),                                    # the streaming core: 2B cycles
    (get_params("small"), 2 * get_params("small").k * get_params("small").b),   # the folded core: 2KB
    (FORMAL_PARAMS, None),
    (CoreParams("wide", d=2, k=8, b=2), None),    # the shadow memories take longest
], ids=["streaming", "folded", "formal", "k-over-2b"])
def test_the_clear_after_reset_ends_after_its_last_write(params: CoreParams, clear_cycles: int | None) -> None:
    """Every table-clear strobe and every shadow-memory clear write reaches its memory while
    ``clearing`` is still high (the core takes samples, and a commit's copy starts, as soon as it
    falls), each clear index exactly once, in order; ``clearing`` then stays low."""
    regs = RegisterFile(params, 4, clear_cycles)
    ctrl = regs.ctrl
    mem_en: list[Any] = []   # the shadow memories' write enables, from the elaboration hook
    regs.formal_hook = lambda m, state: mem_en.extend(wr.en for wr in state["storage"].mem_wr.values())

    async def tb(ctx):
        indices, shadow_writes = [], 0
        for cycle in range(regs.clear_cycles + 8):
            clearing = ctx.get(ctrl.clearing)
            if ctx.get(ctrl.table_clear):
                assert ctx.get(ctrl.table_we)
                assert clearing, f"a table-clear strobe in cycle {cycle}, after clearing fell"
                indices.append(ctx.get(ctrl.table_index))
            for en in mem_en:
                if ctx.get(en):
                    assert clearing, f"a shadow-memory clear write in cycle {cycle}, after clearing fell"
                    shadow_writes += 1
            if cycle >= regs.clear_cycles + 2:
                assert not clearing
            await ctx.tick()
        assert indices == list(range(regs.table_clear_cycles))
        assert shadow_writes == len(mem_en) * params.k

    sim = Simulator(regs)
    assert mem_en, "the front end has no shadow memories"
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()



@pytest.mark.parametrize("folded", [False, True], ids=["streaming", "folded"])
def test_shadow_reads_from_the_first_cycle_see_the_clear(folded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of a memory-backed shadow register (WEIGHTS, OFFSET, SHIFT) issued right after reset
    answers 0, as the model's reset says, though the memory still holds what it held before the
    reset (block RAM keeps it; here: an ``init``)."""
    p = get_params("small")
    rm = RegisterMap(p)
    mems: dict[str, Any] = {}

    def old_contents(m, state):
        for name, mem in state["storage"].mems.items():
            mem.init = [(0x5A5A + 977 * i) & ((1 << mem.shape.width) - 1) or 1 for i in range(mem.depth)]
            mems[name] = mem

    class OldContents(RegisterFile):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.formal_hook = old_contents

    monkeypatch.setattr(_hdl_sim, "RegisterFile", OldContents)
    bench = Bench(p, folded=folded)

    async def tb(ctx):
        assert mems, "no memory-backed shadow registers"
        name = sorted(mems)[0]
        for i in (p.k - 1, p.k - 2, p.k // 2):
            got, err = await bus_access(ctx, bench.bus, rm[name].address(i), False)
            assert (got, err) == (0, 0), f"{name}[{i}] read {got:#x} right after reset"

    run(bench, tb)
