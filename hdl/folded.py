"""Folded scorer core: the same arithmetic as :class:`mailpulse.hdl.core.ScorerCore`, one projection per
clock.

For the SPI top.  Over SPI a sample costs D + 2 register writes (at least ~1300 system clocks at
``sck = clk / 4``), so a core that takes ``K`` clocks per sample is never the bottleneck, and
one datapath lane instead of K makes ``full`` fit an iCE40 HX8K and ``small`` an UP5K:

* one projection lane: D weighted terms, the adder tree, the offset subtraction, the shift and
  clamp, all pipelined exactly like the streaming core;
* the active model (weights, offset - n_neg, shift per projection) in one small memory read at
  address k in the cycle before the lane needs it; the commit copy writes it;
* all K tables in one memory, address ``bank * K * B + k * B + b``;
* the score and the argmax accumulate over k = 0..K-1 (a later projection wins only with a
  strictly larger value, so ties go to the lowest index).

It talks to :class:`mailpulse.hdl.regs.RegisterFile` through the same
:class:`mailpulse.hdl.control.ControlSignature`.  It has no stream ports; one pushed sample is in
flight at a time (the front end holds the next PUSH and the FEATURE/TAG registers until its result
is out, so the core reads them directly).

The lane's arithmetic stages are :mod:`mailpulse.hdl.lane`, shared with the streaming core.
:meth:`FoldedScorerCore.elaborate` builds the core in stages: the active model memory and its
commit load, the issue of k = 0..K-1, the lane (with valid, k, offset and shift carried
alongside), the table read, the accumulation of score and argmax over k, the threshold compare
and the result, the counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In

from . import lane
from .adapt import RouteIntervals
from .control import CommitState, ControlSignature, route_intervals
from .lane import stage_reg as reg
from .params import CoreParams, clog2

__all__ = ["FoldedScorerCore", "lane_depth", "sample_period"]

#: Widest piece of the score in the threshold compare (:meth:`FoldedScorerCore._result`): a 7-bit
#: equality is two LUT4 levels.
_CMP_PIECE = 7


def lane_depth(p: CoreParams) -> int:
    """Pipeline stages of the folded lane: issue, terms, the adder tree (log2 D), diff, two shift
    stages, bin, table read, value register, compare, update, the two final argmax stages and the
    threshold/output stage."""
    return 1 + 1 + clog2(p.d) + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1


def sample_period(p: CoreParams) -> int:
    """Clocks per sample of the folded core with PUSHes waiting: one sample in flight, the next
    is taken the cycle after the result (latency + 1)."""
    return p.k + lane_depth(p) + 1


@dataclass
class _Issue:
    """Issue state: a sample is in the lane (``busy``), projections are issued (``issuing``),
    the projection being issued (``k_issue``)."""

    busy: Signal
    issuing: Signal
    k_issue: Signal


@dataclass
class _Carried:
    """What travels alongside the lane's data, one register per stage: the valid bit, the
    projection index, and (while a later stage needs them) the corrected offset and the shift."""

    valid: Any
    k: Any
    off: Any = None
    shift: Any = None

    def next(self, m: Module, kb: int, ob: int, sb: int, name: str, *, off: bool = True,
             shift: bool = True) -> _Carried:
        """The next stage's registers (offset/shift dropped when ``off``/``shift`` is False)."""
        nv = Signal(name=f"{name}_valid")
        nk = reg(kb, f"{name}_k")
        m.d.sync += [nv.eq(self.valid), nk.eq(self.k)]
        no = ns = None
        if off and self.off is not None:
            no = reg(signed(ob + 1), f"{name}_off")
            m.d.sync += no.eq(self.off)
        if shift and self.shift is not None:
            ns = reg(sb, f"{name}_shift")
            m.d.sync += ns.eq(self.shift)
        return _Carried(nv, nk, no, ns)


class FoldedScorerCore(wiring.Component):
    """One projection per clock; see the module docstring.

    Parameters
    ----------
    params : CoreParams

    Attributes
    ----------
    ctrl : In(ControlSignature)
    latency : int
        Cycles from the push handshake to ``ctrl.result_valid`` (``K`` + the lane depth).
    clear_cycles : int
        Table entries to clear after reset (both banks of all K tables: ``2 * K * B``).
    table_data : MemoryData
        The table memory (tests may poke it): entry ``bank * K * B + k * B + b``.
    """

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        p = params
        self.lane_depth = lane_depth(p)
        self.latency = p.k + self.lane_depth
        self.clear_cycles = 2 * p.k * p.b
        self.table_data = MemoryData(shape=unsigned(p.table_bits), depth=2 * p.k * p.b, init=[])
        #: Formal verification only (:mod:`mailpulse.hdl.formal`): called at the end of
        #: :meth:`elaborate` with the module and the internal signals the proofs name.
        self.formal_hook: Callable[[Module, dict[str, Any]], None] | None = None
        self._probes: dict[str, Any] = {}
        super().__init__({"ctrl": In(ControlSignature(params))})

    def elaborate(self, platform):
        m = Module()
        self._probes = {}
        kb = max(1, clog2(self.params.k))
        cs = CommitState(self.params)
        iss = _Issue(busy=Signal(name="busy"), issuing=Signal(name="issuing"), k_issue=Signal(kb, name="k_issue"))
        ard = self._active_memory(m, iss)
        self._issue(m, cs, iss)
        binr, c = self._lane(m, ard, iss)
        val, c = self._table(m, binr, c, cs)
        res_valid, score_r, res_score, res_arg = self._accumulate(m, val, c)
        out_valid, anomaly = self._result(m, cs, iss, res_valid, score_r, res_score, res_arg)
        samples, anomalies = self._counters(m, out_valid, anomaly)
        if self.params.r:
            # the route intervals: one event per result, the pushed ROUTE register (held still by
            # the front end until the result is out, as FEATURE and TAG are), pipelined from the
            # push on (the result leaves K + lane depth cycles later) and written when it leaves
            assert self.latency >= RouteIntervals.PIPE_CYCLES
            below, above = route_intervals(m, self.params, self.ctrl, cs, out_valid, self.ctrl.push_route,
                                           start=self.ctrl.push_ready)
            m.d.comb += [self.ctrl.result_below.eq(below), self.ctrl.result_above.eq(above)]
        m.d.comb += self.ctrl.drained.eq(cs.commit_pending & ~iss.busy)
        # the adaptive threshold steps with each result, deeply pipelined: it lands four cycles
        # after the result strobe; the next sample's compare is K + lane depth cycles later
        cs.update(m, self.ctrl, step=out_valid, flag=anomaly, pipelined=True)
        m.d.comb += [
            self.ctrl.busy.eq(iss.busy),
            self.ctrl.push_inflight.eq(iss.busy),
            self.ctrl.samples.eq(samples),
            self.ctrl.anomalies.eq(anomalies),
        ]
        if self.formal_hook is not None:
            self.formal_hook(m, {"issue": iss, "cs": cs, **self._probes})
        return m

    def _active_memory(self, m: Module, iss: _Issue) -> Any:
        """The active model, {shift, offset - n_neg, weights} per projection, in one small memory
        read at ``k_issue``; written by the commit copy (two stages: the count of negative weights
        is registered before the subtraction, as popcount + 22-bit subtract in one clock was the
        UP5K's critical path) and zeroed by the clear after reset.  Returns the read port."""
        p = self.params
        ctrl = self.ctrl
        aw = p.d * p.weight_bits + (p.offset_bits + 1) + p.shift_bits
        amem = m.submodules.active = Memory(shape=unsigned(aw), depth=p.k, init=[])
        ard = amem.read_port(domain="sync")
        awr = amem.write_port(domain="sync")
        lw = ctrl.load_weights
        n_neg = lane.negative_weights(p, lw)
        ld0_valid = Signal()
        ld0_index = Signal.like(ctrl.load_index, reset_less=True)
        ld0_w = Signal.like(ctrl.load_weights, reset_less=True)
        ld0_shift = Signal.like(ctrl.load_shift, reset_less=True)
        ld0_off = Signal.like(ctrl.load_offset, reset_less=True)
        ld0_nneg = Signal(len(n_neg), reset_less=True)
        m.d.sync += [ld0_valid.eq(ctrl.load_valid), ld0_index.eq(ctrl.load_index), ld0_w.eq(lw),
                     ld0_shift.eq(ctrl.load_shift), ld0_off.eq(ctrl.load_offset), ld0_nneg.eq(n_neg)]
        off_eff = Signal(signed(p.offset_bits + 1), reset_less=True)
        ld_valid = Signal()
        ld_index = Signal.like(ctrl.load_index, reset_less=True)
        ld_w = Signal.like(ctrl.load_weights, reset_less=True)
        ld_shift = Signal.like(ctrl.load_shift, reset_less=True)
        m.d.sync += [off_eff.eq(lane.offset_correction(ld0_off, ld0_nneg)), ld_valid.eq(ld0_valid),
                     ld_index.eq(ld0_index), ld_w.eq(ld0_w), ld_shift.eq(ld0_shift)]
        clear_param = ctrl.table_we & ctrl.table_clear & (ctrl.table_index < p.k)
        m.d.comb += [
            awr.addr.eq(Mux(ld_valid, ld_index, ctrl.table_index)),
            awr.data.eq(Mux(ld_valid, Cat(ld_w, off_eff, ld_shift), 0)),
            awr.en.eq(ld_valid | clear_param),
            ard.addr.eq(iss.k_issue),
        ]
        self._probes["active_write"] = awr.en
        return ard

    def _issue(self, m: Module, cs: CommitState, iss: _Issue) -> None:
        """A push is taken when the lane is free and no commit is pending; then k = 0..K-1 issue."""
        ctrl = self.ctrl
        take_push = Signal()
        m.d.comb += [
            take_push.eq(ctrl.push_valid & ~iss.busy & ~cs.commit_pending),
            ctrl.push_ready.eq(take_push),
        ]
        self._probes["take_push"] = take_push
        with m.If(take_push):
            m.d.sync += [iss.busy.eq(1), iss.issuing.eq(1), iss.k_issue.eq(0)]
        with m.Elif(iss.issuing):
            m.d.sync += iss.k_issue.eq(iss.k_issue + 1)
            with m.If(iss.k_issue == self.params.k - 1):
                m.d.sync += iss.issuing.eq(0)

    def _lane(self, m: Module, ard: Any, iss: _Issue) -> tuple[Signal, _Carried]:
        """Stage A (projection k's parameters on the memory's read data), the terms (T), the adder
        tree (one level per stage), the diff, the two shift stages and the bin register."""
        p = self.params
        D, wb, ob, sb = p.d, p.weight_bits, p.offset_bits, p.shift_bits
        kb = max(1, clog2(p.k))
        a_valid = Signal()
        a_k = reg(kb, "a_k")
        m.d.sync += a_valid.eq(iss.issuing)
        m.d.sync += a_k.eq(iss.k_issue)
        a_w = ard.data[:D * wb]
        a_off = ard.data[D * wb:D * wb + ob + 1].as_signed()
        a_shift = ard.data[D * wb + ob + 1:]

        x = [self.ctrl.push_features[d * p.in_bits:(d + 1) * p.in_bits].as_signed() for d in range(D)]
        tw = p.in_bits + wb
        terms = []
        for d in range(D):
            term = lane.weighted_term(m, x[d], a_w[d * wb:(d + 1) * wb], tw, f"{d}")
            t = reg(signed(tw), f"t{d}")
            m.d.sync += t.eq(term)
            terms.append(t)
        c = _Carried(a_valid, a_k, a_off, a_shift).next(m, kb, ob, sb, "t")

        def carry_level(stage: int) -> None:
            nonlocal c
            c = c.next(m, kb, ob, sb, f"p{stage}")

        proj, _ = lane.add_tree(m, terms, 1, lambda st, j, passed: f"p{st}_odd" if passed else f"p{st}_{j}",
                                on_stage=carry_level)
        diff = lane.diff_stage(m, proj, c.off, p, "diff")
        c = c.next(m, kb, ob, sb, "d", off=False)
        part1 = lane.shift_hi_stage(m, diff, c.shift, p, "")
        c = c.next(m, kb, ob, sb, "s1", off=False)
        binr = lane.clamp_stage(m, part1, c.shift, p, "")
        c = c.next(m, kb, ob, sb, "b", off=False, shift=False)
        return binr, c

    def _table(self, m: Module, binr: Signal, c: _Carried, cs: CommitState) -> tuple[Signal, _Carried]:
        """All K tables in one memory, address ``bank * K * B + k * B + b``; the read of the active
        bank, registered once (stage R: block RAM output -> compare is too slow), and the front
        end's writes into the shadow bank (during the clear after reset: the shadow bank first,
        then the active one)."""
        p = self.params
        ctrl = self.ctrl
        kb = max(1, clog2(p.k))
        tmem = m.submodules.tables = Memory(data=self.table_data)
        trd = tmem.read_port(domain="sync")
        twr = tmem.write_port(domain="sync")
        kbsz = p.k * p.b
        iw = len(ctrl.table_index)
        m.d.comb += [
            trd.addr.eq(Mux(cs.active_bank, kbsz, 0) + Cat(binr, c.k)),
            twr.addr.eq(Mux(ctrl.table_clear,
                            Mux(ctrl.table_index < kbsz,
                                Mux(cs.active_bank, 0, kbsz) + ctrl.table_index,
                                Mux(cs.active_bank, kbsz, 0) + ctrl.table_index - kbsz),
                            Mux(cs.active_bank, 0, kbsz) + ctrl.table_index[:iw - 1])),
            twr.data.eq(ctrl.table_data),
            twr.en.eq(ctrl.table_we),
        ]
        self._probes["table_write"] = (twr.en, twr.addr >= kbsz)   # (enable, bank)
        c = c.next(m, kb, 0, 0, "m")
        val_r = reg(p.table_bits, "val_r")
        m.d.sync += val_r.eq(trd.data)
        c = c.next(m, kb, 0, 0, "r")
        return val_r, c

    def _accumulate(self, m: Module, val_r: Signal, c: _Carried) -> tuple[Signal, Signal, Signal, Signal]:
        """Score and argmax over k = 0..K-1.  Returns the result strobe, the score one stage before
        it (for the split threshold compare), the result's score and its argmax.

        Stage C: the score accumulates; the value is compared with the running maxima.  There are
        two: one over even k, one over odd k, so that each is updated every second clock and the
        compare (C) and the update (U) get a stage each.  Within a parity a later k wins only when
        strictly greater, so each keeps the lowest index of its maximum.  Stage F1 compares the
        two maxima (registered), stage F2 picks the index (the 16-bit compare and the index mux in
        one clock were an UP5K critical path): the larger wins, on a tie the lower index."""
        p = self.params
        K = p.k
        kb = max(1, clog2(K))
        acc = reg(p.score_bits, "acc")
        new_acc = Mux(c.k == 0, 0, acc) + val_r
        score_r = reg(p.score_bits, "score_r")
        mx = [reg(p.table_bits, "max_even"), reg(p.table_bits, "max_odd")]
        arg = [reg(kb, "arg_even"), reg(kb, "arg_odd")]
        gt = [reg(1, "gt_even"), reg(1, "gt_odd")]
        val_c = reg(p.table_bits, "val_c")
        with m.If(c.valid):
            m.d.sync += acc.eq(new_acc)
            with m.If(c.k == K - 1):
                m.d.sync += score_r.eq(new_acc)
        m.d.sync += [gt[0].eq(val_r > mx[0]), gt[1].eq(val_r > mx[1]), val_c.eq(val_r)]
        c = c.next(m, kb, 0, 0, "c")
        # stage U: update the maximum of k's parity (k = 0 and k = 1 start them)
        par = c.k[0] if K > 1 else C(0, 1)
        for q in range(min(K, 2)):
            with m.If(c.valid & (par == q) & (gt[q] | (c.k == q))):
                m.d.sync += [mx[q].eq(val_c), arg[q].eq(c.k)]
        c = c.next(m, kb, 0, 0, "u")
        f_valid = Signal()
        odd_wins = reg(1, "odd_wins")
        f_arg = [reg(kb, "f_arg_even"), reg(kb, "f_arg_odd")]
        if K > 1:
            m.d.sync += odd_wins.eq((mx[1] > mx[0]) | ((mx[1] == mx[0]) & (arg[1] < arg[0])))
        m.d.sync += [f_valid.eq(c.valid & (c.k == K - 1)), f_arg[0].eq(arg[0]), f_arg[1].eq(arg[1])]
        res_valid = Signal()
        res_score = reg(p.score_bits, "res_score")
        res_arg = reg(kb, "res_arg")
        fin_arg = Mux(odd_wins, f_arg[1], f_arg[0]) if K > 1 else f_arg[0]
        m.d.sync += [res_valid.eq(f_valid), res_score.eq(score_r), res_arg.eq(fin_arg)]
        return res_valid, score_r, res_score, res_arg

    def _result(self, m: Module, cs: CommitState, iss: _Issue, res_valid: Signal, score_r: Signal,
                res_score: Signal, res_arg: Signal) -> tuple[Signal, Signal]:
        """Stage O: the threshold compare gets its own stage (the counters' carry chain follows a
        register), and the result goes to the front end.  Returns the result strobe and the flag.

        ``res_score > thr_active`` is split over two stages (the compare of a wide threshold is
        too deep for one UP5K clock).  ``res_score`` is ``score_r`` one clock later, and
        ``thr_active`` then holds its next value: the shadow threshold if a threshold commit takes
        effect now, else its own.  Stage F compares ``score_r`` with both candidates in pieces of
        at most ``_CMP_PIECE`` bits (registered: greater and equal per piece, and the threshold's
        bits above the score's all zero); stage O combines the pieces of the candidate that became
        ``thr_active``.  Exact."""
        p = self.params
        ctrl = self.ctrl
        kb = max(1, clog2(p.k))
        out_valid = Signal()
        out_score = reg(p.score_bits, "out_score")
        out_arg = reg(kb, "out_arg")
        anomaly = Signal()
        m.d.sync += [out_valid.eq(res_valid), out_score.eq(res_score), out_arg.eq(res_arg)]
        sb = p.score_bits
        # pieces of at most _CMP_PIECE bits, low first: each compare is one short carry chain, each
        # equality two LUT levels
        n_pc = -(-sb // _CMP_PIECE)
        pieces = [(i * sb // n_pc, (i + 1) * sb // n_pc) for i in range(n_pc)]
        thr_sel = Signal()
        m.d.sync += thr_sel.eq(ctrl.commit_threshold | ctrl.commit_done)
        gt_parts = []
        for c, thr_c in (("act", cs.thr_active), ("shd", ctrl.shadow_threshold)):
            hi_zero = Signal(name=f"cmp_{c}_hz")
            m.d.sync += hi_zero.eq(thr_c[sb:] == 0) if len(thr_c) > sb else hi_zero.eq(1)
            gt: Value = Const(0, 1)
            for i, (lo, hi) in enumerate(pieces):
                g = Signal(name=f"cmp_{c}_gt{i}")
                m.d.sync += g.eq(score_r[lo:hi] > thr_c[lo:hi])
                if i == 0:
                    gt = g
                    continue
                e = Signal(name=f"cmp_{c}_eq{i}")
                m.d.sync += e.eq(score_r[lo:hi] == thr_c[lo:hi])
                gt = g | (e & gt)   # a higher piece decides unless it is equal
            gt_parts.append(hi_zero & gt)
        m.d.sync += anomaly.eq(Mux(thr_sel, gt_parts[1], gt_parts[0]))
        with m.If(out_valid):
            m.d.sync += iss.busy.eq(0)
        m.d.comb += [
            ctrl.result_valid.eq(out_valid),
            ctrl.result_score.eq(out_score),
            ctrl.result_anomaly.eq(anomaly),
            ctrl.result_argmax.eq(out_arg),
            ctrl.result_tag.eq(ctrl.push_tag),
        ]
        return out_valid, anomaly

    def _counters(self, m: Module, out_valid: Signal, anomaly: Signal) -> tuple[Signal, Signal]:
        samples = Signal(32)
        anomalies = Signal(32)
        with m.If(self.ctrl.clear_counters):
            m.d.sync += [samples.eq(out_valid), anomalies.eq(out_valid & anomaly)]
        with m.Elif(out_valid):
            m.d.sync += [samples.eq(samples + 1), anomalies.eq(anomalies + anomaly)]
        return samples, anomalies
