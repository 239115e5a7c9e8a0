"""The ``stream-bench`` top (mailpulse.hdl.streambench) in Amaranth's simulator: the on-chip beat
source keeps to the AXI4-Stream rules and follows its Python model, every sample it offers comes
out of the core once, in order, with its tag and tlast, and the sink's signature is the Python
fold of the result beats it took.  (The core's arithmetic is verified elsewhere, bit for bit; here
the model is the one after reset: every score 0.)"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal
from amaranth.sim import Simulator
from mailpulse.hdl.beats import RESULT_BEAT, RESULT_BEAT_BITS, sample_beat
from mailpulse.hdl.params import get_params
from mailpulse.hdl.streambench import LFSR_INIT, StreamBenchTop, fold_step, lfsr_step

CYCLES = 1500


class _Clocked(Elaboratable):
    def __init__(self, top: StreamBenchTop) -> None:
        self.top = top

    def elaborate(self, platform):
        m = Module()
        m.domains.drv = ClockDomain("drv")
        m.submodules.top = self.top
        m.d.comb += [self.top.clk.eq(ClockSignal("drv")), self.top.rst.eq(ResetSignal("drv")),
                     self.top.spi.cs_n.eq(1)]
        return m


def test_stream_bench_source_core_sink() -> None:
    p = get_params("small")
    top = StreamBenchTop(p)
    lay = sample_beat(p)
    src, snk = top.source.axis, top.sink.axis
    offered: list[tuple[int, int]] = []      # (tag, tlast) of every beat the core took
    taken: list[tuple[int, int]] = []        # (tdata, tlast) of every result beat the sink took
    seen = {"lfsr_ok": True, "sig": 0}

    async def tb(ctx):
        state = LFSR_INIT
        held = None
        for _cycle in range(CYCLES):
            if ctx.get(top.source.lfsr) != state:
                seen["lfsr_ok"] = False
            v, r, data, last = ctx.get(src.tvalid), ctx.get(src.tready), ctx.get(src.tdata), ctx.get(src.tlast)
            if held is not None:      # a beat offered stays offered, unchanged, until taken
                assert v and (data, last) == held, "the source withdrew or changed an offered beat"
            held = (data, last) if v and not r else None
            if v and r:
                offered.append((data & 0xFFFF_FFFF, last))
            if ctx.get(snk.tvalid) and ctx.get(snk.tready):
                taken.append((ctx.get(snk.tdata), ctx.get(snk.tlast)))
            await ctx.tick("drv")
            state = lfsr_step(state)
        seen["sig"] = ctx.get(top.sink.sig_word)

    sim = Simulator(_Clocked(top))
    sim.add_clock(1e-8, domain="drv")
    sim.add_testbench(tb)
    sim.run()

    assert seen["lfsr_ok"], "the gateware LFSR does not follow lfsr_step"
    assert lay.bits == 160 and len(offered) > CYCLES // 2, "the core took too few samples"
    assert len(taken) > CYCLES // 2
    assert len(taken) <= len(offered)
    for j, (beat, last) in enumerate(taken):
        b = RESULT_BEAT.beats(beat.to_bytes(RESULT_BEAT.nbytes, "little"))
        assert RESULT_BEAT.get(b, "tag")[0] == offered[j][0], f"result {j} carries the wrong tag"
        assert last == offered[j][1], f"result {j} carries the wrong tlast"
        assert RESULT_BEAT.get(b, "score")[0] == 0 and RESULT_BEAT.get(b, "anomaly")[0] == 0
    sig = 0
    for beat, last in taken:
        sig = fold_step(sig, beat, last, RESULT_BEAT_BITS)
    assert seen["sig"] == sig, "the sink's signature is not the fold of the beats it took"
