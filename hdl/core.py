"""The mailpulse scorer core: a streaming, fully pipelined Loda-family anomaly scorer.

One sample per clock, fixed latency, back-pressure honoured with a global pipeline enable and a
two-entry output buffer.  The arithmetic is exactly :func:`mailpulse.hdl.reference.score`;
``docs/core.md`` describes the pipeline stage by stage and ``docs/fixed-point.md`` the arithmetic.

The core holds the *active* model (weights, offsets, shifts, threshold, the table bank bit) and
both table banks; the *shadow* model lives in the register front end (:mod:`mailpulse.hdl.regs`),
which drives :class:`mailpulse.hdl.control.ControlSignature`.  The lane arithmetic (terms, adder
tree, offset, shift and clamp) is :mod:`mailpulse.hdl.lane`, shared with the folded core; the DSP
variant of the projections is :mod:`mailpulse.hdl.dsp`.

:meth:`ScorerCore.elaborate` builds the core in stages, each a method that adds to the module and
returns what the next stage needs: flow control (:meth:`ScorerCore._flow`), the tag/last side
band, the input register, the projections, the bins, the tables, the score/argmax tree, the
outputs (result stream, pushed result, counters) and the commit load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from amaranth.asserts import AnySeq
from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib import stream as _stream
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from . import lane
from .beats import LATENCY_FIELD_BITS, ROUTE_FIELD_BITS
from .control import CommitState, ControlSignature, route_intervals
from .dsp import DSPProjections
from .lane import stage_reg, sync
from .params import CoreParams, clog2
from .plan import MAX_LATENCY, dsp_plan, pipeline_plan
from .tablemem import TableMemory

__all__ = [
    "MAX_LATENCY",
    "ResultLayout",
    "SampleLayout",
    "ScorerCore",
    "dsp_plan",
    "pipeline_plan",
]


def SampleLayout(params: CoreParams) -> data.StructLayout:
    """Payload of the sample stream: D signed features (flat, feature d at bits 16d..16d+15), tag,
    with routes (R > 0) the route id and the Q8.8 log2 latency, and the ``tlast`` flag that
    travels with the sample."""
    routes = {"route": unsigned(ROUTE_FIELD_BITS), "latency": unsigned(LATENCY_FIELD_BITS)} if params.r else {}
    return data.StructLayout({
        "features": unsigned(params.in_bits * params.d),
        "tag": unsigned(params.tag_bits),
        **routes,
        "last": unsigned(1),
    })


def ResultLayout(params: CoreParams) -> data.StructLayout:
    """Payload of the result stream (with routes: the interval flags ``below``/``above``)."""
    flags = {"below": unsigned(1), "above": unsigned(1)} if params.r else {}
    return data.StructLayout({
        "score": unsigned(params.score_bits),
        "tag": unsigned(params.tag_bits),
        "argmax": unsigned(8),
        "anomaly": unsigned(1),
        **flags,
        "last": unsigned(1),
    })


def _proj_reg_name(k: int, stage: int, j: int, _passed: bool) -> str:
    """Name of register ``j`` of stage ``stage`` of projection ``k``'s adder tree."""
    return f"proj{k}_s{stage}_{j}"


@dataclass
class _ActiveModel:
    """The active weights, corrected offsets and shifts (LUT projections) or the DSP pair
    constants, plus the commit state.  Control state: these registers have a reset."""

    w: list[Signal]
    off: list[Signal]
    shift: list[Signal]
    dsp: DSPProjections | None
    cs: CommitState


@dataclass
class _Flow:
    """Flow control of the pipeline: registers R0..R(n_regs-1) advance together when ``en``.

    ``valid``/``src_push`` hold one bit per register (a sample is there; it came from PUSH);
    ``fifo_cnt`` counts the results in the output buffer; ``pipe_empty`` and ``push_inflight`` are
    registered reductions of ``valid``/``src_push`` (exact in every cycle).  ``lane_en`` (one per
    projection), ``x_en``, ``side_en`` and ``tree_en`` are copies of ``en`` for the datapath
    registers (see :meth:`ScorerCore._flow`).
    """

    n_regs: int
    en: Signal
    lane_en: list[Any]
    x_en: Any
    side_en: Any
    tree_en: Any
    valid: Signal
    src_push: Signal
    fifo_cnt: Signal
    pipe_empty: Signal
    push_inflight: Signal
    take_push: Signal
    take_stream: Signal
    open_: Signal


class ScorerCore(wiring.Component):
    """Streaming scorer core.

    Parameters
    ----------
    params : CoreParams
        Elaboration parameters (see :mod:`mailpulse.hdl.params`).

    Attributes
    ----------
    i_stream : In(stream.Signature(SampleLayout))
        Samples.  ``ready`` is a function of registers only (pipeline enable, commit pending, push
        pending, the clear after reset), never of ``o_stream.ready`` combinationally.
    o_stream : Out(stream.Signature(ResultLayout))
        Results of stream samples, in order, from a two-entry output buffer.
    ctrl : In(ControlSignature)
        Commit loads, strobes, push path and read-back (driven by
        :class:`mailpulse.hdl.regs.RegisterFile`).
    stream : bool
        With ``stream=False`` there are no ``i_stream``/``o_stream``: samples come only from PUSH,
        the pipeline never stalls, and neither the output buffer nor the tag delay line is built
        (the tag of the one pushed sample in flight is the front end's TAG register, which holds
        still until the result is out).  The SPI top normally uses the folded core instead.
    latency : int
        Cycles from an input handshake to the result's ``o_stream.valid`` without back-pressure.

    How it fails: it does not.  Every width is exact (see ``docs/fixed-point.md``), so no input
    or register value overflows; a sample is never dropped (the pipeline stalls as a whole while
    the output buffer is full).  A commit waits for the pipeline to drain, which takes forever if
    ``o_stream`` never becomes ready with results in flight.
    """

    def __init__(self, params: CoreParams, *, stream: bool = True, dsp: bool = False) -> None:
        self.params = params
        self.stream = stream
        dplan = dsp_plan(params) if dsp else None
        #: True when the projections are DSP multiply-add chains (``dsp=True`` and it fits).
        self.dsp = dplan is not None
        self.plan: dict[str, int] = dplan if dplan is not None else pipeline_plan(params)
        self.latency: int = self.plan["latency"]
        #: Cycles the front end needs to clear the tables after reset (both banks, K in parallel).
        self.clear_cycles = 2 * params.b
        #: Table storage, one per projection: entry ``bank * B + b`` (simulation tests poke it).
        self.table_data = [MemoryData(shape=unsigned(params.table_bits), depth=2 * params.b, init=[])
                           for _ in range(params.k)]
        #: Formal verification only (:mod:`mailpulse.hdl.formal`): called at the end of
        #: :meth:`elaborate` with the module and the internal signals the proofs' invariants name.
        self.formal_hook: Callable[[Module, dict[str, Any]], None] | None = None
        #: Formal verification only: the table reads return any value in every cycle (no memories,
        #: and with them the projections and bins, which only address the tables, leave the model).
        #: Sound for the flow-control properties of :mod:`mailpulse.hdl.formal`, which never depend
        #: on a table value (it reaches only score, argmax and flag); the writes stay as they are.
        self.formal_free_tables = False
        self._probes: dict[str, Any] = {}
        members: dict[str, wiring.Member] = {"ctrl": In(ControlSignature(params))}
        if stream:
            members["i_stream"] = In(_stream.Signature(SampleLayout(params)))
            members["o_stream"] = Out(_stream.Signature(ResultLayout(params)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        self._probes = {}
        act = self._active_model()
        flow = self._flow(m, act.cs)
        out_tag, out_last, out_event = self._sideband(m, flow)
        x = self._input_register(m, flow)
        if act.dsp is not None:
            diffs = act.dsp.diffs(m, x, flow.en)
        else:
            diffs = self._lut_projections(m, x, flow.lane_en, act)
        bins = self._bins(m, diffs, flow.lane_en, act)
        vals = self._tables(m, bins, flow.lane_en, act.cs)
        score_last, arg_last, tree_stages = self._score_argmax(m, vals, flow.tree_en)
        if self.dsp:
            assert flow.n_regs == 1 + self.plan["chain_len"] + 2 + 1 + tree_stages, "latency bookkeeping"
        else:
            assert flow.n_regs == 1 + self.plan["proj_stages"] + 1 + 3 + 2 + tree_stages, "latency bookkeeping"
        counters, out_take, anomaly = self._outputs(m, flow, act.cs, score_last, arg_last, out_tag, out_last,
                                                    out_event)
        self._commit_load(m, flow, act, out_take, anomaly)
        m.d.comb += [
            self.ctrl.busy.eq(~flow.pipe_empty | (flow.fifo_cnt != 0) if self.stream else ~flow.pipe_empty),
            self.ctrl.push_inflight.eq(flow.push_inflight),
            self.ctrl.samples.eq(counters[0]),
            self.ctrl.anomalies.eq(counters[1]),
        ]
        if self.formal_hook is not None:
            self.formal_hook(m, {"flow": flow, "act": act, **self._probes})
        return m

    # ---- active model and flow control -------------------------------------------------------
    def _active_model(self) -> _ActiveModel:
        p = self.params
        dsp = DSPProjections(p, self.plan) if self.dsp else None
        return _ActiveModel(
            w=[Signal(p.d * p.weight_bits, name=f"act_w{k}") for k in range(p.k)],
            # offset minus the number of negative weights: the terms use one's complement negation
            # (-x = ~x + 1), and the +1s are folded into the offset (see docs/fixed-point.md).
            off=[Signal(signed(p.offset_bits + 1), name=f"act_off{k}") for k in range(p.k)],
            shift=[Signal(p.shift_bits, name=f"act_shift{k}") for k in range(p.k)],
            dsp=dsp,
            cs=CommitState(p),
        )

    def _flow(self, m: Module, cs: CommitState) -> _Flow:
        """Global enable.  The last pipeline register feeds a two-entry output buffer; the pipeline
        advances when the buffer has room or the last stage is empty:
        ``en = fifo_cnt < 2 or not valid[-1]``.  A sample enters when the pipeline advances and no
        commit is pending; PUSH has priority over the stream.

        ``en`` drives the clock enable of every pipeline register (thousands of loads), so it is a
        register itself, computed one cycle early from the next values of ``fifo_cnt`` and
        ``valid[-1]`` (exact: equal to the expression above in every cycle), and the datapath takes
        it from copies (one per projection lane, one each for the input register, the tag/last
        side band and each stage of the score/argmax tree), each with its own next-state logic and
        a few hundred loads.  A copy's next value uses the copy itself where the expression uses
        ``en``, so no two copies have the same inputs and synthesis keeps them apart.  (With ``en``
        a LUT after ``fifo_cnt``, its fan-out was the ECP5 streaming build's critical path: 99.5 MHz
        at speed grade 6.)"""
        ctrl = self.ctrl
        n_regs = self.plan["latency"] - 1    # pipeline registers R0..R(n-1); the buffer is the last stage
        tree_stages = self.plan.get("tree_stages", 0)
        f = _Flow(
            n_regs=n_regs,
            en=Signal(init=1, name="en"),
            lane_en=[],
            x_en=None,
            side_en=None,
            tree_en=None,
            valid=Signal(n_regs, name="valid"),
            src_push=Signal(n_regs, name="src_push"),
            fifo_cnt=Signal(range(3), name="fifo_cnt"),
            # "pipeline empty" and "a pushed sample is in flight" are wide ORs over the valid bits;
            # they are kept in registers, computed from the NEXT value of valid/src_push (exact:
            # the same value as `valid == 0` / `(valid & src_push) != 0` in every cycle)
            pipe_empty=Signal(init=1, name="pipe_empty"),
            push_inflight=Signal(name="push_inflight"),
            take_push=Signal(name="take_push"),
            take_stream=Signal(name="take_stream"),
            open_=Signal(name="open_"),
        )
        if self.stream:
            self._registered_enables(m, f, tree_stages)
            m.d.comb += [
                # no sample enters during the clear after reset (the tables still hold what they
                # held before it); PUSH is held off by the front end itself
                self.i_stream.ready.eq(f.open_ & ~ctrl.push_valid & ~ctrl.clearing),
                f.take_stream.eq(self.i_stream.ready & self.i_stream.valid),
            ]
        else:
            m.d.comb += f.en.eq(1)
            f.lane_en = [f.en] * self.params.k
            f.x_en = f.side_en = f.en
            f.tree_en = [f.en] * max(1, tree_stages)
        # with the adaptive threshold on, no two samples are in adjacent stages: a sample enters
        # only if the last cycle the pipeline advanced took none, so results leave at least two
        # cycles apart and the pipelined threshold step (hdl/adapt.py) lands before the next
        # compare.  Throughput then is one sample per two clocks.
        took = Signal(name="took_last")
        with m.If(f.en):
            m.d.sync += took.eq(f.take_push | f.take_stream)
        m.d.comb += [
            f.open_.eq(f.en & ~cs.commit_pending & ~(took & cs.adapt.enable)),
            f.take_push.eq(f.open_ & ctrl.push_valid),
            ctrl.push_ready.eq(f.take_push),
        ]
        take = f.take_push | f.take_stream
        with m.If(f.en):
            m.d.sync += [
                f.valid.eq(Cat(take, f.valid[:-1])),
                f.src_push.eq(Cat(f.take_push, f.src_push[:-1])),
                # next valid = Cat(take, valid[:-1]); next valid & src_push = Cat(take_push,
                # (valid & src_push)[:-1])
                f.pipe_empty.eq(~take & (f.valid[:-1] == 0)),
                f.push_inflight.eq(f.take_push | ((f.valid & f.src_push)[:-1] != 0)),
            ]
        return f

    def _registered_enables(self, m: Module, f: _Flow, tree_stages: int) -> None:
        """``en`` and its copies as registers (see :meth:`_flow`): each one's next value is
        ``next fifo_cnt < 2 or not next valid[-1]``, with the register itself standing for ``en``."""
        n_regs = f.n_regs
        copies = [Signal(init=1, name=f"en_lane{k}") for k in range(self.params.k)]
        copies += [Signal(init=1, name=n) for n in ("en_x", "en_side")]
        copies += [Signal(init=1, name=f"en_tree{i}") for i in range(max(1, tree_stages))]
        pop = Signal(name="pop")
        m.d.comb += pop.eq((f.fifo_cnt != 0) & self.o_stream.ready)
        for e in [f.en, *copies]:
            push = e & f.valid[-1] & ~f.src_push[-1]
            last_next = Mux(e, f.valid[-2] if n_regs > 1 else f.take_push | f.take_stream, f.valid[-1])
            m.d.sync += e.eq((f.fifo_cnt + push - pop < 2) | ~last_next)
        f.lane_en = copies[:self.params.k]
        f.x_en, f.side_en = copies[self.params.k:self.params.k + 2]
        f.tree_en = copies[self.params.k + 2:]

    def _sideband(self, m: Module, flow: _Flow) -> tuple[Any, Any, Any]:
        """Tag, ``tlast`` and (with routes) the route event - id and latency in the ``ROUTE``
        register's layout - travel alongside the sample (pure datapath): the output's tag, last and
        event (None without routes)."""
        ctrl = self.ctrl
        routes = self.params.r > 0
        if not self.stream:
            return ctrl.push_tag, C(0, 1), ctrl.push_route if routes else None
        n_regs = flow.n_regs
        tag_pipe = [stage_reg(self.params.tag_bits, f"tag_r{i}") for i in range(n_regs)]
        last_pipe = [stage_reg(1, f"last_r{i}") for i in range(n_regs)]
        ev_pipe = [stage_reg(32, f"event_r{i}") for i in range(n_regs if routes else 0)]
        with m.If(flow.side_en):
            m.d.sync += [
                tag_pipe[0].eq(Mux(ctrl.push_valid, ctrl.push_tag, self.i_stream.payload.tag)),
                last_pipe[0].eq(~ctrl.push_valid & self.i_stream.payload.last),
            ]
            if routes:
                pl = self.i_stream.payload
                m.d.sync += ev_pipe[0].eq(Mux(ctrl.push_valid, ctrl.push_route, Cat(pl.route, pl.latency)))
            for i in range(1, n_regs):
                m.d.sync += [tag_pipe[i].eq(tag_pipe[i - 1]), last_pipe[i].eq(last_pipe[i - 1])]
                if routes:
                    m.d.sync += ev_pipe[i].eq(ev_pipe[i - 1])
        self._probes["tag_pipe"] = tag_pipe
        return tag_pipe[-1], last_pipe[-1], ev_pipe[-1] if routes else None

    # ---- the lanes -----------------------------------------------------------------------------
    def _input_register(self, m: Module, flow: _Flow) -> list[Signal]:
        """R0: the sample's features (PUSH has priority over the stream, as in :meth:`_flow`)."""
        p = self.params
        ctrl = self.ctrl
        x = [stage_reg(signed(p.in_bits), f"x{d}") for d in range(p.d)]
        if self.stream:
            feats = Mux(ctrl.push_valid, ctrl.push_features, self.i_stream.payload.features)
        else:
            feats = ctrl.push_features
        with m.If(flow.x_en):
            for d in range(p.d):
                m.d.sync += x[d].eq(feats[d * p.in_bits:(d + 1) * p.in_bits])
        return x

    def _lut_projections(self, m: Module, x: list[Signal], en: list[Any], act: _ActiveModel) -> list[Signal]:
        """Weighted terms, the projection adder trees and the offset subtraction, in LUTs.

        The terms are not registered: they feed the first adder level directly, so on 6-input-LUT
        parts one term of each pair folds into the adder's propagate LUT (and no K * D * 18 term
        flip-flops are spent)."""
        p = self.params
        wb = p.weight_bits
        tw = p.in_bits + wb
        terms: list[list[Signal]] = []
        for k in range(p.k):
            row = []
            for d in range(p.d):
                term = lane.weighted_term(m, x[d], act.w[k][d * wb:(d + 1) * wb], tw, f"_{k}_{d}")
                t = Signal(signed(tw), name=f"t_{k}_{d}")
                m.d.comb += t.eq(term)
                row.append(t)
            terms.append(row)
        projs: list[Any] = []
        for k in range(p.k):
            if p.d == 1:
                projs.append(terms[k][0])
                continue
            s, nst = lane.add_tree(m, terms[k], self.plan["proj_per_stage"], partial(_proj_reg_name, k), en[k])
            assert nst == self.plan["proj_stages"]
            projs.append(s)
        return [lane.diff_stage(m, projs[k], act.off[k], p, f"diff{k}", en[k]) for k in range(p.k)]

    def _bins(self, m: Module, diffs: list[Any], en: list[Any], act: _ActiveModel) -> list[Signal]:
        """Shift and clamp, per projection.  The shift amount is active model, constant between
        commits, and commits happen with the pipeline empty, so it need not travel with the sample.
        The LUT variant has one more register before the clamp (the ECP5 150 MHz check); the DSP
        variant has no latency left for it."""
        bins = []
        for k in range(self.params.k):
            part1 = lane.shift_hi_stage(m, diffs[k], act.shift[k], self.params, f"{k}", en[k])
            bins.append(lane.clamp_stage(m, part1, act.shift[k], self.params, f"{k}", en[k], extra_reg=not self.dsp))
        return bins

    def _tables(self, m: Module, bins: list[Signal], en: list[Any], cs: CommitState) -> list[Any]:
        """One memory per projection, bank bit = address MSB: the read of bin ``b`` of the active
        bank, and the front end's writes into the shadow bank (or, during the clear after reset,
        into both banks: the clear index's MSB picks the bank, the shadow bank first)."""
        p = self.params
        ctrl = self.ctrl
        bl = p.b_log2
        vals = []
        self._probes["table_writes"] = writes = []
        for k in range(p.k):
            wr_addr = Mux(ctrl.table_clear, Cat(ctrl.table_index[:bl], ctrl.table_index[bl] ^ ~cs.active_bank),
                          Cat(ctrl.table_index[:bl], ~cs.active_bank))
            wr_en = ctrl.table_we & (ctrl.table_clear | (ctrl.table_index[bl:] == k))
            if self.formal_free_tables:
                free = Signal(p.table_bits, name=f"table{k}_free")
                m.d.comb += free.eq(AnySeq(p.table_bits))
                writes.append((wr_en, wr_addr[bl]))
                vals.append(free)
                continue
            if not self.dsp:
                # LUT variant: the block RAM's data is registered once more before the score and
                # argmax trees (ECP5 DP16KD clock-to-out + compare missed 150 MHz), on ECP5 in the
                # DP16KD's own output register (mailpulse.hdl.tablemem)
                tm = m.submodules[f"table{k}"] = TableMemory(self.table_data[k])
                m.d.comb += [tm.rd_addr.eq(Cat(bins[k], cs.active_bank)), tm.rd_en.eq(en[k]),
                             tm.wr_addr.eq(wr_addr), tm.wr_data.eq(ctrl.table_data), tm.wr_en.eq(wr_en)]
                writes.append((wr_en, wr_addr[bl]))   # (enable, bank)
                vals.append(tm.rd_data)
                continue
            mem = Memory(data=self.table_data[k])
            m.submodules[f"table{k}"] = mem
            rd = mem.read_port(domain="sync")
            wr = mem.write_port(domain="sync")
            m.d.comb += [
                rd.addr.eq(Cat(bins[k], cs.active_bank)),
                rd.en.eq(en[k]),
                wr.addr.eq(wr_addr),
                wr.data.eq(ctrl.table_data),
                wr.en.eq(wr_en),
            ]
            writes.append((wr.en, wr.addr[bl]))   # (enable, bank)
            vals.append(rd.data)
        return vals

    def _score_argmax(self, m: Module, vals: list[Any], en: list[Any]) -> tuple[Any, Any, int]:
        """The score (sum of the K table values) and the argmax (lowest index of the largest value)
        as two trees side by side, registered every ``tree_per_stage`` levels.  Returns the score,
        the argmax and the number of register stages."""
        p = self.params
        K = p.k
        kb = max(1, clog2(K))
        if K == 1:
            return vals[0], C(0, 1), 0
        per = self.plan["tree_per_stage"]
        items = [(v, C(i, kb)) for i, v in enumerate(vals)]
        sums = list(vals)
        level = stage = 0
        while len(sums) > 1:
            nsum = []
            nitm = []
            for i in range(0, len(sums) - 1, 2):
                nsum.append(sums[i] + sums[i + 1])
                (va, ia), (vb, ib_) = items[i], items[i + 1]
                left = va >= vb          # ties go to the lower index (left)
                nitm.append((Mux(left, va, vb), Mux(left, ia, ib_)))
            if len(sums) % 2:
                nsum.append(sums[-1])
                nitm.append(items[-1])
            sums, items = nsum, nitm
            level += 1
            if level % per == 0 or len(sums) == 1:
                rs, ri = [], []
                for j, (e, (va, ia)) in enumerate(zip(sums, items)):
                    r = stage_reg(e.shape(), f"sum_s{stage}_{j}")
                    rv = stage_reg(p.table_bits, f"max_s{stage}_{j}")
                    rix = stage_reg(kb, f"arg_s{stage}_{j}")
                    sync(m, en[stage], [r.eq(e), rv.eq(va), rix.eq(ia)])
                    rs.append(r)
                    ri.append((rv, rix))
                sums, items = rs, ri
                stage += 1
        assert stage == self.plan["tree_stages"]
        return sums[0], items[0][1], stage

    # ---- outputs and commit ---------------------------------------------------------------------
    def _outputs(self, m: Module, flow: _Flow, cs: CommitState, score_last: Any, arg_last: Any,
                 out_tag: Any, out_last: Any, out_event: Any) -> tuple[tuple[Signal, Signal], Signal, Signal]:
        """The flag compare and (with routes) the route intervals' flags, then: stream results into
        the output buffer, pushed results to the front end, and the sample/anomaly counters.
        Returns the counters, the strobe of a result leaving the pipeline and its flag (the
        adaptive threshold steps on them).  The route intervals take one event per result as it
        leaves the pipeline, in order (:func:`mailpulse.hdl.control.route_intervals`)."""
        p = self.params
        ctrl = self.ctrl
        score = Signal(p.score_bits)
        m.d.comb += score.eq(score_last)
        anomaly = Signal()
        m.d.comb += anomaly.eq(score > cs.thr_active)
        out_take = Signal()
        m.d.comb += out_take.eq(flow.en & flow.valid[-1])
        push_out = Signal()
        stream_out = Signal()
        m.d.comb += [push_out.eq(out_take & flow.src_push[-1]), stream_out.eq(out_take & ~flow.src_push[-1])]
        flags: dict[str, Any] = {}
        if p.r:
            below, above = route_intervals(m, p, ctrl, cs, out_take, out_event)
            flags = {"below": below, "above": above}
            m.d.comb += [ctrl.result_below.eq(below), ctrl.result_above.eq(above)]

        if self.stream:
            res = Signal(ResultLayout(p))
            m.d.comb += [
                res.score.eq(score),
                res.tag.eq(out_tag),
                res.argmax.eq(arg_last),
                res.anomaly.eq(anomaly),
                res.last.eq(out_last),
                *(res[name].eq(v) for name, v in flags.items()),
            ]
            self._result_buffer(m, flow.fifo_cnt, stream_out, res)

        # pushed results go to the front end
        m.d.comb += [
            ctrl.result_valid.eq(push_out),
            ctrl.result_score.eq(score),
            ctrl.result_anomaly.eq(anomaly),
            ctrl.result_argmax.eq(arg_last),
            ctrl.result_tag.eq(out_tag),
        ]

        # counters count one cycle later, from registered increments: the threshold compare's
        # carry chain and the counters' never sit on one path
        samples = Signal(32)
        anomalies = Signal(32)
        inc_s = Signal()
        inc_a = Signal()
        m.d.sync += [inc_s.eq(out_take), inc_a.eq(out_take & anomaly)]
        with m.If(ctrl.clear_counters):
            m.d.sync += [samples.eq(inc_s), anomalies.eq(inc_a)]
        with m.Else():
            m.d.sync += [samples.eq(samples + inc_s), anomalies.eq(anomalies + inc_a)]
        return (samples, anomalies), out_take, anomaly

    def _result_buffer(self, m: Module, fifo_cnt: Signal, push: Signal, res: Signal) -> None:
        """The two-entry output buffer in front of ``o_stream`` (``push``: ``res`` enters it)."""
        p = self.params
        buf0 = Signal(ResultLayout(p), reset_less=True)
        buf1 = Signal(ResultLayout(p), reset_less=True)
        self._probes["buffer"] = (buf0, buf1)
        pop = Signal()
        m.d.comb += [
            self.o_stream.valid.eq(fifo_cnt != 0),
            self.o_stream.payload.eq(buf0),
            pop.eq(self.o_stream.valid & self.o_stream.ready),
        ]
        with m.Switch(fifo_cnt):
            with m.Case(0), m.If(push):
                m.d.sync += [buf0.eq(res), fifo_cnt.eq(1)]
            with m.Case(1):
                with m.If(push & pop):
                    m.d.sync += buf0.eq(res)
                with m.Elif(push):
                    m.d.sync += [buf1.eq(res), fifo_cnt.eq(2)]
                with m.Elif(pop):
                    m.d.sync += fifo_cnt.eq(0)
            with m.Case(2), m.If(pop):
                m.d.sync += [buf0.eq(buf1), fifo_cnt.eq(1)]

    def _commit_load(self, m: Module, flow: _Flow, act: _ActiveModel, out_take: Any, anomaly: Any) -> None:
        """Commit: the front end loads one projection per cycle while the pipeline is empty and
        input is held off, then strobes ``commit_done``.  The +1s of the one's complement negative
        terms are folded into the offset here, with one shared subtractor (registered once more
        before the K-way fan-out: the popcount and the subtraction are two carry chains; the last
        load still lands in the cycle ``commit_done`` takes effect)."""
        p = self.params
        ctrl = self.ctrl
        m.d.comb += ctrl.drained.eq(act.cs.commit_pending & flow.pipe_empty)
        lw = ctrl.load_weights
        off_eff = Signal(signed(p.offset_bits + 1), reset_less=True)
        ld_valid = Signal()
        ld_index = Signal.like(ctrl.load_index, reset_less=True)
        ld_w = Signal.like(ctrl.load_weights, reset_less=True)
        ld_shift = Signal.like(ctrl.load_shift, reset_less=True)
        m.d.sync += [ld_valid.eq(ctrl.load_valid), ld_index.eq(ctrl.load_index), ld_w.eq(lw),
                     ld_shift.eq(ctrl.load_shift)]
        self._probes["ld_valid"] = ld_valid
        if act.dsp is not None:
            # exact products: no one's complement correction; the chain adds -offset
            m.d.sync += off_eff.eq(-ctrl.load_offset.as_signed())
            act.dsp.load(m, ld_valid, ld_index, ld_w, off_eff)
            with m.If(ld_valid):
                for k in range(p.k):
                    with m.If(ld_index == k):
                        m.d.sync += act.shift[k].eq(ld_shift)
        else:
            m.d.sync += off_eff.eq(lane.offset_correction(ctrl.load_offset, lane.negative_weights(p, lw)))
            with m.If(ld_valid):
                for k in range(p.k):
                    with m.If(ld_index == k):
                        m.d.sync += [act.w[k].eq(ld_w), act.off[k].eq(off_eff), act.shift[k].eq(ld_shift)]
        # the adaptive threshold steps as each result leaves the pipeline (stream or PUSH),
        # pipelined: it lands two cycles later, and the next result leaves two cycles later at the
        # earliest (see _flow)
        act.cs.update(m, ctrl, step=out_take, flag=anomaly, pipelined=True, fast=True)
