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

It talks to :class:`mailpulse.hdl.regs.RegisterFile` through the same :class:`mailpulse.hdl.core.ControlSignature`.
It has no stream ports; one pushed sample is in flight at a time (the front end holds the next
PUSH and the FEATURE/TAG registers until its result is out, so the core reads them directly).
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In

from .core import CommitState, ControlSignature, shift_levels
from .params import CoreParams, clog2

__all__ = ["FoldedScorerCore", "lane_depth", "sample_period"]


def lane_depth(p: CoreParams) -> int:
    """Pipeline stages of the folded lane: issue, terms, the adder tree (log2 D), diff, two shift
    stages, bin, table read, value register, compare, update, the two final argmax stages and the
    threshold/output stage."""
    return 1 + 1 + clog2(p.d) + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1


def sample_period(p: CoreParams) -> int:
    """Clocks per sample of the folded core with PUSHes waiting: one sample in flight, the next
    is taken the cycle after the result (latency + 1)."""
    return p.k + lane_depth(p) + 1


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
        super().__init__({"ctrl": In(ControlSignature(params))})

    def elaborate(self, platform):
        p = self.params
        m = Module()
        ctrl = self.ctrl
        K, D, B, bl = p.k, p.d, p.b, p.b_log2
        wb, ob, sb_, ib = p.weight_bits, p.offset_bits, p.shift_bits, p.in_bits
        kb = max(1, clog2(K))

        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # ---- control state -------------------------------------------------------------------
        cs = CommitState()
        thr_active, active_bank, commit_pending = cs.thr_active, cs.active_bank, cs.commit_pending
        busy = Signal()             # a sample is in the lane
        issuing = Signal()
        k_issue = Signal(kb)

        # ---- active model memory: {shift, offset - n_neg, weights} per projection -------------
        aw = D * wb + (ob + 1) + sb_
        amem = m.submodules.active = Memory(shape=unsigned(aw), depth=K, init=[])
        ard = amem.read_port(domain="sync")
        awr = amem.write_port(domain="sync")
        lw = ctrl.load_weights
        # two stages: the count of negative weights (n_neg) is registered before the subtraction
        # (popcount + 22-bit subtract in one clock was the UP5K's critical path)
        n_neg = sum((lw[d * wb + wb - 1] for d in range(D)), start=Const(0, clog2(D + 1) or 1))
        ld0_valid = Signal()
        ld0_index = Signal.like(ctrl.load_index, reset_less=True)
        ld0_w = Signal.like(ctrl.load_weights, reset_less=True)
        ld0_shift = Signal.like(ctrl.load_shift, reset_less=True)
        ld0_off = Signal.like(ctrl.load_offset, reset_less=True)
        ld0_nneg = Signal(len(n_neg), reset_less=True)
        m.d.sync += [ld0_valid.eq(ctrl.load_valid), ld0_index.eq(ctrl.load_index), ld0_w.eq(lw),
                     ld0_shift.eq(ctrl.load_shift), ld0_off.eq(ctrl.load_offset), ld0_nneg.eq(n_neg)]
        off_eff = Signal(signed(ob + 1), reset_less=True)
        ld_valid = Signal()
        ld_index = Signal.like(ctrl.load_index, reset_less=True)
        ld_w = Signal.like(ctrl.load_weights, reset_less=True)
        ld_shift = Signal.like(ctrl.load_shift, reset_less=True)
        m.d.sync += [off_eff.eq(ld0_off.as_signed() - ld0_nneg), ld_valid.eq(ld0_valid),
                     ld_index.eq(ld0_index), ld_w.eq(ld0_w), ld_shift.eq(ld0_shift)]
        clear_param = ctrl.table_we & ctrl.table_clear & (ctrl.table_index < K)
        m.d.comb += [
            awr.addr.eq(Mux(ld_valid, ld_index, ctrl.table_index)),
            awr.data.eq(Mux(ld_valid, Cat(ld_w, off_eff, ld_shift), 0)),
            awr.en.eq(ld_valid | clear_param),
            ard.addr.eq(k_issue),
        ]

        # ---- issue: k = 0..K-1 after a push is taken ----------------------------------------
        take_push = Signal()
        m.d.comb += [
            take_push.eq(ctrl.push_valid & ~busy & ~commit_pending),
            ctrl.push_ready.eq(take_push),
        ]
        with m.If(take_push):
            m.d.sync += [busy.eq(1), issuing.eq(1), k_issue.eq(0)]
        with m.Elif(issuing):
            m.d.sync += k_issue.eq(k_issue + 1)
            with m.If(k_issue == K - 1):
                m.d.sync += issuing.eq(0)

        # stage A: the parameters of projection k are on the memory's read data
        a_valid = Signal()
        a_k = reg(kb, "a_k")
        m.d.sync += a_valid.eq(issuing)
        m.d.sync += a_k.eq(k_issue)
        a_w = ard.data[:D * wb]
        a_off = ard.data[D * wb:D * wb + ob + 1].as_signed()
        a_shift = ard.data[D * wb + ob + 1:]

        # lane registers carry (valid, k, offset, shift) alongside the data
        def carry(valid, k, off, shift, name):
            nv = Signal(name=f"{name}_valid")
            nk = reg(kb, f"{name}_k")
            m.d.sync += [nv.eq(valid), nk.eq(k)]
            no = ns = None
            if off is not None:
                no = reg(signed(ob + 1), f"{name}_off")
                m.d.sync += no.eq(off)
            if shift is not None:
                ns = reg(sb_, f"{name}_shift")
                m.d.sync += ns.eq(shift)
            return nv, nk, no, ns

        # ---- terms (stage T) -----------------------------------------------------------------
        x = [ctrl.push_features[d * ib:(d + 1) * ib].as_signed() for d in range(D)]
        tw = ib + wb
        terms = []
        for d in range(D):
            w = a_w[d * wb:(d + 1) * wb]
            xs = Signal(signed(tw), name=f"xs{d}")
            x2 = Signal(signed(tw), name=f"x2{d}")
            m.d.comb += [xs.eq(x[d]), x2.eq(x[d] * 2)]
            t = reg(signed(tw), f"t{d}")
            m.d.sync += t.eq(Mux(w[0], Mux(w[1], ~xs, xs), Mux(w[1], ~x2, 0)))
            terms.append(t)
        v, k_, off, sh = carry(a_valid, a_k, a_off, a_shift, "t")

        # ---- adder tree, one level per stage -------------------------------------------------
        level = 0
        items = terms
        while len(items) > 1:
            nxt = []
            for i in range(0, len(items) - 1, 2):
                r = reg((items[i] + items[i + 1]).shape(), f"p{level}_{i // 2}")
                m.d.sync += r.eq(items[i] + items[i + 1])
                nxt.append(r)
            if len(items) % 2:
                r = reg(items[-1].shape(), f"p{level}_odd")
                m.d.sync += r.eq(items[-1])
                nxt.append(r)
            items = nxt
            v, k_, off, sh = carry(v, k_, off, sh, f"p{level}")
            level += 1
        proj = items[0]

        # ---- diff ------------------------------------------------------------------------------
        diff = reg(signed(ob + 1), "diff")
        m.d.sync += diff.eq(proj - off)
        v, k_, _, sh = carry(v, k_, None, sh, "d")

        # ---- shift + clamp, in two stages -------------------------------------------------------
        hi_bits = [j for j in reversed(range(sb_)) if j >= 2]
        lo_bits = [j for j in reversed(range(sb_)) if j < 2]
        vv, st = shift_levels(m, diff[:ob], C(0, 1), sh, hi_bits, bl)
        v1 = reg(len(vv), "shv")
        st1 = reg(1, "shst")
        neg1 = reg(1, "shneg")
        m.d.sync += [v1.eq(vv), st1.eq(st), neg1.eq(diff[-1])]
        v, k_, _, sh = carry(v, k_, None, sh, "s1")
        v2, st2 = shift_levels(m, v1, st1, sh, lo_bits, bl)
        binr = reg(bl, "bin")
        m.d.sync += binr.eq(Mux(neg1, 0, Mux(st2, B - 1, v2)))
        v, k_, _, _ = carry(v, k_, None, None, "b")

        # ---- table read ----------------------------------------------------------------------
        tmem = m.submodules.tables = Memory(data=self.table_data)
        trd = tmem.read_port(domain="sync")
        twr = tmem.write_port(domain="sync")
        kbsz = K * B
        iw = len(ctrl.table_index)
        m.d.comb += [
            trd.addr.eq(Mux(active_bank, kbsz, 0) + Cat(binr, k_)),
            # the clear runs over the shadow bank first, then the active one
            twr.addr.eq(Mux(ctrl.table_clear,
                            Mux(ctrl.table_index < kbsz,
                                Mux(active_bank, 0, kbsz) + ctrl.table_index,
                                Mux(active_bank, kbsz, 0) + ctrl.table_index - kbsz),
                            Mux(active_bank, 0, kbsz) + ctrl.table_index[:iw - 1])),
            twr.data.eq(ctrl.table_data),
            twr.en.eq(ctrl.table_we),
        ]
        v, k_, _, _ = carry(v, k_, None, None, "m")

        # ---- accumulate score and argmax over k ------------------------------------------------
        # stage R: the table value into a register (block RAM output -> compare is too slow)
        val_r = reg(p.table_bits, "val_r")
        m.d.sync += val_r.eq(trd.data)
        v, k_, _, _ = carry(v, k_, None, None, "r")
        # stage C: the score accumulates; the value is compared with the running maxima.  There
        # are two: one over even k, one over odd k, so that each is updated every second clock
        # and the compare (C) and the update (U) get a stage each.  Within a parity a later k
        # wins only when strictly greater, so each keeps the lowest index of its maximum.
        acc = reg(p.score_bits, "acc")
        new_acc = Mux(k_ == 0, 0, acc) + val_r
        score_r = reg(p.score_bits, "score_r")
        mx = [reg(p.table_bits, "max_even"), reg(p.table_bits, "max_odd")]
        arg = [reg(kb, "arg_even"), reg(kb, "arg_odd")]
        gt = [reg(1, "gt_even"), reg(1, "gt_odd")]
        val_c = reg(p.table_bits, "val_c")
        with m.If(v):
            m.d.sync += acc.eq(new_acc)
            with m.If(k_ == K - 1):
                m.d.sync += score_r.eq(new_acc)
        m.d.sync += [gt[0].eq(val_r > mx[0]), gt[1].eq(val_r > mx[1]), val_c.eq(val_r)]
        v, k_, _, _ = carry(v, k_, None, None, "c")
        # stage U: update the maximum of k's parity (k = 0 and k = 1 start them)
        par = k_[0] if K > 1 else C(0, 1)
        for q in range(min(K, 2)):
            with m.If(v & (par == q) & (gt[q] | (k_ == q))):
                m.d.sync += [mx[q].eq(val_c), arg[q].eq(k_)]
        v, k_, _, _ = carry(v, k_, None, None, "u")
        # stage F: both maxima are final after the last update: the larger wins, on a tie the
        # lower index (the lowest index of the overall maximum)
        # stage F1 compares the two maxima (registered), stage F2 picks the index (the 16-bit
        # compare and the index mux in one clock were an UP5K critical path)
        f_valid = Signal()
        odd_wins = reg(1, "odd_wins")
        f_arg = [reg(kb, "f_arg_even"), reg(kb, "f_arg_odd")]
        if K > 1:
            m.d.sync += odd_wins.eq((mx[1] > mx[0]) | ((mx[1] == mx[0]) & (arg[1] < arg[0])))
        m.d.sync += [f_valid.eq(v & (k_ == K - 1)), f_arg[0].eq(arg[0]), f_arg[1].eq(arg[1])]
        res_valid = Signal()
        res_score = reg(p.score_bits, "res_score")
        res_arg = reg(kb, "res_arg")
        fin_arg = Mux(odd_wins, f_arg[1], f_arg[0]) if K > 1 else f_arg[0]
        m.d.sync += [res_valid.eq(f_valid), res_score.eq(score_r), res_arg.eq(fin_arg)]

        # the threshold compare gets its own stage: the counters' carry chain follows a register
        out_valid = Signal()
        out_score = reg(p.score_bits, "out_score")
        out_arg = reg(kb, "out_arg")
        anomaly = Signal()
        m.d.sync += [out_valid.eq(res_valid), out_score.eq(res_score), out_arg.eq(res_arg)]
        # `res_score > thr_active` is split over two stages (the compare of a wide threshold is
        # too deep for one UP5K clock).  res_score is score_r one clock later, and thr_active then
        # holds its next value: the shadow threshold if a threshold commit takes effect now, else
        # its own.  Stage F compares score_r with both candidates in two halves (registered);
        # stage O combines the halves of the candidate that became thr_active.  Exact.
        sb = p.score_bits
        lo_w = sb // 2
        thr_sel = Signal()
        m.d.sync += thr_sel.eq(ctrl.commit_threshold | ctrl.commit_done)
        gt_parts = []
        for c, thr_c in (("act", thr_active), ("shd", ctrl.shadow_threshold)):
            hi_zero, hi_gt, hi_eq, lo_gt = (Signal(name=f"cmp_{c}_{n}")
                                            for n in ("hz", "hgt", "heq", "lgt"))
            m.d.sync += [hi_zero.eq(thr_c[sb:] == 0) if len(thr_c) > sb else hi_zero.eq(1),
                         hi_gt.eq(score_r[lo_w:] > thr_c[lo_w:sb]),
                         hi_eq.eq(score_r[lo_w:] == thr_c[lo_w:sb]),
                         lo_gt.eq(score_r[:lo_w] > thr_c[:lo_w])]
            gt_parts.append(hi_zero & (hi_gt | (hi_eq & lo_gt)))
        m.d.sync += anomaly.eq(Mux(thr_sel, gt_parts[1], gt_parts[0]))
        with m.If(out_valid):
            m.d.sync += busy.eq(0)
        m.d.comb += [
            ctrl.result_valid.eq(out_valid),
            ctrl.result_score.eq(out_score),
            ctrl.result_anomaly.eq(anomaly),
            ctrl.result_argmax.eq(out_arg),
            ctrl.result_tag.eq(ctrl.push_tag),
        ]

        samples = Signal(32)
        anomalies = Signal(32)
        with m.If(ctrl.clear_counters):
            m.d.sync += [samples.eq(out_valid), anomalies.eq(out_valid & anomaly)]
        with m.Elif(out_valid):
            m.d.sync += [samples.eq(samples + 1), anomalies.eq(anomalies + anomaly)]

        # ---- commit ---------------------------------------------------------------------------
        m.d.comb += ctrl.drained.eq(commit_pending & ~busy)
        cs.update(m, ctrl)

        m.d.comb += [
            ctrl.busy.eq(busy),
            ctrl.push_inflight.eq(busy),
            ctrl.samples.eq(samples),
            ctrl.anomalies.eq(anomalies),
        ]
        return m
