"""The mailpulse scorer core: a streaming, fully pipelined Loda-family anomaly scorer.

One sample per clock, fixed latency, back-pressure honoured with a global pipeline enable and a
two-entry output buffer.  The arithmetic is exactly :func:`mailpulse.hdl.reference.score`; ``docs/core.md``
describes the pipeline stage by stage and ``docs/fixed-point.md`` the arithmetic.

The core holds the *active* model (weights, offsets, shifts, threshold, the table bank bit) and
both table banks; the *shadow* model lives in the register front end (:mod:`mailpulse.hdl.regs`), which
drives :class:`ControlSignature`.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib import stream as _stream
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .params import CoreParams, clog2

__all__ = [
    "MAX_LATENCY",
    "CommitState",
    "ControlSignature",
    "ResultLayout",
    "SampleLayout",
    "ScorerCore",
    "pipeline_plan",
]

#: Upper bound on the latency the issue allows; :func:`pipeline_plan` packs tree levels to stay
#: within it.
MAX_LATENCY = 16


def SampleLayout(params: CoreParams) -> data.StructLayout:
    """Payload of the sample stream: D signed features (flat, feature d at bits 16d..16d+15), tag,
    and the ``tlast`` flag that travels with the sample."""
    return data.StructLayout({
        "features": unsigned(params.in_bits * params.d),
        "tag": unsigned(params.tag_bits),
        "last": unsigned(1),
    })


def ResultLayout(params: CoreParams) -> data.StructLayout:
    """Payload of the result stream."""
    return data.StructLayout({
        "score": unsigned(params.score_bits),
        "tag": unsigned(params.tag_bits),
        "argmax": unsigned(8),
        "anomaly": unsigned(1),
        "last": unsigned(1),
    })



def shift_levels(m: Module, v: Any, sticky: Any, s: Any, bits: list[int], bl: int) -> tuple[Any, Any]:
    """Right-shift ``v`` by the bits ``bits`` of the shift amount ``s``, one 2:1 mux level each.

    Only the bits that can still reach a ``bl``-bit bin index are kept; the bits shifted past them
    are ORed into ``sticky`` (the overflow that makes the clamp pick the top bin).  Shared by the
    streaming and the folded datapath so both shift and clamp identically.
    """
    for j in bits:
        amt = 1 << j
        sh = Signal(len(v), name=f"sh{j}")
        m.d.comb += sh.eq(Mux(s[j], v >> amt, v))
        keep = min(len(sh), bl + amt - 1)
        if keep < len(sh):
            sticky = sticky | sh[keep:].any()
        v = sh[:keep]
    return v, sticky


class CommitState:
    """The active-model control state both cores keep, and how it changes (one copy of the rules).

    ``thr_active`` (the threshold in use), ``active_bank`` (the table bank in use) and
    ``commit_pending`` (a COMMIT waits for the pipeline to drain).  :meth:`update` adds the
    transitions: COMMIT_THRESHOLD copies the shadow threshold at once; ``commit_done`` (after the
    front end's copy) clears the pending flag, flips the bank and copies the threshold; a COMMIT
    sets the pending flag, written after ``commit_done`` so that a COMMIT in the very cycle a commit
    completes is not lost (it commits again once drained, as the model does).
    """

    def __init__(self) -> None:
        self.thr_active = Signal(32, init=0xFFFFFFFF)
        self.active_bank = Signal()
        self.commit_pending = Signal()

    def update(self, m: Module, ctrl: Any) -> None:
        with m.If(ctrl.commit_threshold):
            m.d.sync += self.thr_active.eq(ctrl.shadow_threshold)
        with m.If(ctrl.commit_done):
            m.d.sync += [self.commit_pending.eq(0), self.active_bank.eq(~self.active_bank),
                         self.thr_active.eq(ctrl.shadow_threshold)]
        with m.If(ctrl.commit):
            m.d.sync += self.commit_pending.eq(1)
        m.d.comb += [ctrl.commit_pending.eq(self.commit_pending), ctrl.active_bank.eq(self.active_bank),
                     ctrl.threshold_active.eq(self.thr_active)]


class ControlSignature(wiring.Signature):
    """Wires between the register front end (the initiator, ``Out`` members) and the core.

    Members (front end -> core)
    ---------------------------
    shadow_threshold : 32
    commit, commit_threshold, clear_counters : strobes (one cycle)
    load_valid, load_index, load_weights, load_offset, load_shift : during a commit, the front end
        copies shadow entry ``load_index`` into the active registers, one projection per cycle
    commit_done : strobe after the last load: flip the bank, copy the threshold, accept again
    table_we, table_index, table_data : write of shadow-bank entry ``index = k * B + b``
    table_clear : with ``table_we``: write ``table_data`` at address ``table_index`` of *every*
        table memory, both banks (the clear after reset)
    push_valid, push_features, push_tag : a pushed sample (held until ``push_ready``)

    Members (core -> front end)
    ---------------------------
    drained : a commit is pending and the pipeline is empty: the front end may copy
    push_ready : the pushed sample enters the pipeline this cycle
    push_inflight : a pushed sample is in the pipeline
    result_valid, result_score, result_anomaly, result_argmax, result_tag : the result of a pushed
        sample (``result_valid`` is a one-cycle strobe)
    commit_pending, active_bank, busy : status
    threshold_active, samples, anomalies : read-back
    """

    def __init__(self, params: CoreParams) -> None:
        p = params
        self.params = p
        super().__init__({
            "shadow_threshold": Out(32),
            "commit": Out(1),
            "commit_threshold": Out(1),
            "clear_counters": Out(1),
            "load_valid": Out(1),
            "load_index": Out(max(1, clog2(p.k))),
            "load_weights": Out(p.d * p.weight_bits),
            "load_offset": Out(p.offset_bits),
            "load_shift": Out(p.shift_bits),
            "commit_done": Out(1),
            "table_we": Out(1),
            "table_clear": Out(1),
            "table_index": Out(max(1, clog2(2 * p.k * p.b))),
            "table_data": Out(p.table_bits),
            "push_valid": Out(1),
            "push_features": Out(p.d * p.in_bits),
            "push_tag": Out(p.tag_bits),
            "drained": In(1),
            "push_ready": In(1),
            "push_inflight": In(1),
            "result_valid": In(1),
            "result_score": In(p.score_bits),
            "result_anomaly": In(1),
            "result_argmax": In(8),
            "result_tag": In(p.tag_bits),
            "commit_pending": In(1),
            "active_bank": In(1),
            "busy": In(1),
            "threshold_active": In(32),
            "samples": In(32),
            "anomalies": In(32),
        })


#: Widest signed multiplier operand of a Xilinx DSP48E1 (its A port).
DSP_A_BITS = 25


def dsp_plan(params: CoreParams) -> dict[str, int] | None:
    """The projection as DSP multiply-add chains, if it fits; else ``None``.

    Two projections share one chain of DSP48 multiply-adds (see :class:`ScorerCore`): one
    registered DSP per feature, ``chain_len`` = D of them per projection pair.  It needs
    ``diff_bits + 3 <= 25`` (the DSP's A port; D <= 8) and a latency within :data:`MAX_LATENCY`
    (one or two score/argmax tree levels per stage).  Stages: input (1), chain (D), shift 1,
    shift 2 + clamp, table read (1 each), score/argmax tree (``tree_stages``), flag compare into
    the output register (1).
    """
    w = params.offset_bits + 1
    if w + 3 > DSP_A_BITS:
        return None
    tree_levels = clog2(params.k)
    for per_t in (1, 2):
        ts = -(-tree_levels // per_t)
        latency = 1 + params.d + 4 + ts
        if latency <= MAX_LATENCY:
            return {"chain_len": params.d, "lane_bits": w, "tree_levels": tree_levels,
                    "tree_per_stage": per_t, "tree_stages": ts, "latency": latency}
    return None


def pipeline_plan(params: CoreParams) -> dict[str, int]:
    """How many tree levels each pipeline stage takes, and the resulting latency.

    Stages: input register (1), weighted terms and projection adder tree (``proj_stages``),
    offset subtraction (1), shift part 1 (1), shift part 2 (1), clamp = bin register (1), table
    read (1), table value register (1), score/argmax tree (``tree_stages``), flag compare into the output register (1).  One
    tree level per stage, unless that would exceed :data:`MAX_LATENCY`; then two.

    Returns a dict with ``proj_levels``, ``proj_per_stage``, ``proj_stages``, ``tree_levels``,
    ``tree_per_stage``, ``tree_stages`` and ``latency`` (cycles from the input handshake to the
    output ``valid``).
    """
    proj_levels = clog2(params.d)
    tree_levels = clog2(params.k)
    fixed = 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1   # input, diff, shift1, shift2, clamp/bin, table, table reg, output
    for per_p, per_t in ((1, 1), (1, 2), (2, 2)):
        ps = -(-proj_levels // per_p)
        ts = -(-tree_levels // per_t)
        latency = fixed + ps + ts
        if latency <= MAX_LATENCY:
            break
    else:  # pragma: no cover - cannot happen with D <= 16, K <= 64
        raise ValueError(f"no pipeline plan fits {MAX_LATENCY} cycles for {params}")
    return {
        "proj_levels": proj_levels, "proj_per_stage": per_p, "proj_stages": ps,
        "tree_levels": tree_levels, "tree_per_stage": per_t, "tree_stages": ts,
        "latency": latency,
    }


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
        pending), never of ``o_stream.ready`` combinationally.
    o_stream : Out(stream.Signature(ResultLayout))
        Results of stream samples, in order, from a two-entry output buffer.
    ctrl : In(ControlSignature)
        Commit loads, strobes, push path and read-back (driven by :class:`mailpulse.hdl.regs.RegisterFile`).
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
        members: dict[str, wiring.Member] = {"ctrl": In(ControlSignature(params))}
        if stream:
            members["i_stream"] = In(_stream.Signature(SampleLayout(params)))
            members["o_stream"] = Out(_stream.Signature(ResultLayout(params)))
        super().__init__(members)

    def elaborate(self, platform):
        p = self.params
        plan = self.plan
        m = Module()
        ctrl = self.ctrl
        K, D, B, bl = p.k, p.d, p.b, p.b_log2
        wb, ob, sb_, ib = p.weight_bits, p.offset_bits, p.shift_bits, p.in_bits
        kb = max(1, clog2(K))

        # ---------------------------------------------------------------------------------
        # Active model (control state: reset).
        # ---------------------------------------------------------------------------------
        dsp_model = self._dsp_model() if self.dsp else None
        act_w = [Signal(D * wb, name=f"act_w{k}") for k in range(K)]
        # offset minus the number of negative weights: the terms use one's complement negation
        # (-x = ~x + 1), and the +1s are folded into the offset (see docs/fixed-point.md).
        act_off = [Signal(signed(ob + 1), name=f"act_off{k}") for k in range(K)]
        act_shift = [Signal(sb_, name=f"act_shift{k}") for k in range(K)]
        cs = CommitState()
        thr_active, active_bank, commit_pending = cs.thr_active, cs.active_bank, cs.commit_pending

        # ---------------------------------------------------------------------------------
        # Pipeline control: global enable.  The last pipeline register feeds a two-entry
        # output buffer; the pipeline advances when the buffer has room or the last stage is
        # empty.  Both are registers, so `en` (and i_stream.ready) is two LUT levels deep.
        # ---------------------------------------------------------------------------------
        n_regs = plan["latency"] - 1       # pipeline registers R0..R(n-1); the buffer is the last stage
        valid = Signal(n_regs)              # valid bit of R0..R(n_regs-1)
        src_push = Signal(n_regs)           # the sample came from PUSH
        fifo_cnt = Signal(range(3))
        en = Signal()
        # "pipeline empty" and "a pushed sample is in flight" are wide ORs over the valid bits;
        # they are kept in registers, computed from the NEXT value of valid/src_push (exact:
        # the same value as `valid == 0` / `(valid & src_push) != 0` in every cycle)
        pipe_empty = Signal(init=1)
        push_inflight = Signal()
        take_push = Signal()
        take_stream = Signal()
        open_ = Signal()
        if self.stream:
            m.d.comb += [
                en.eq((fifo_cnt < 2) | ~valid[-1]),
                self.i_stream.ready.eq(open_ & ~ctrl.push_valid),
                take_stream.eq(self.i_stream.ready & self.i_stream.valid),
            ]
        else:
            m.d.comb += en.eq(1)
        m.d.comb += [
            open_.eq(en & ~commit_pending),
            take_push.eq(open_ & ctrl.push_valid),
            ctrl.push_ready.eq(take_push),
        ]

        with m.If(en):
            m.d.sync += [
                valid.eq(Cat(take_push | take_stream, valid[:-1])),
                src_push.eq(Cat(take_push, src_push[:-1])),
                # next valid = Cat(take, valid[:-1]); next valid & src_push = Cat(take_push,
                # (valid & src_push)[:-1])
                pipe_empty.eq(~(take_push | take_stream) & (valid[:-1] == 0)),
                push_inflight.eq(take_push | ((valid & src_push)[:-1] != 0)),
            ]

        # tag and last travel alongside (pure datapath)
        if self.stream:
            tag_pipe = [Signal(p.tag_bits, name=f"tag_r{i}", reset_less=True) for i in range(n_regs)]
            last_pipe = [Signal(name=f"last_r{i}", reset_less=True) for i in range(n_regs)]
            with m.If(en):
                m.d.sync += [
                    tag_pipe[0].eq(Mux(ctrl.push_valid, ctrl.push_tag, self.i_stream.payload.tag)),
                    last_pipe[0].eq(~ctrl.push_valid & self.i_stream.payload.last),
                ]
                for i in range(1, n_regs):
                    m.d.sync += [tag_pipe[i].eq(tag_pipe[i - 1]), last_pipe[i].eq(last_pipe[i - 1])]
            out_tag = tag_pipe[-1]
        else:
            out_tag = ctrl.push_tag

        def stage_reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # ---- R0: input register ------------------------------------------------------------
        x = [stage_reg(signed(ib), f"x{d}") for d in range(D)]
        if self.stream:
            feats = Mux(ctrl.push_valid, ctrl.push_features, self.i_stream.payload.features)
        else:
            feats = ctrl.push_features
        with m.If(en):
            for d in range(D):
                m.d.sync += x[d].eq(feats[d * ib:(d + 1) * ib])

        if self.dsp:
            diffs = self._dsp_projections(m, x, en, stage_reg, dsp_model)
        else:
            # ---- weighted terms (one LUT4 per bit: w, x[i], x[i-1]), not registered: they feed the
            # first adder level directly, so on 6-input-LUT parts one term of each pair folds into
            # the adder's propagate LUT (and no K * D * 18 term flip-flops are spent)
            tw = ib + wb  # 18: holds -2 * -32768 and ~(2 * 32767)
            terms: list[list[Signal]] = []
            for k in range(K):
                row = []
                for d in range(D):
                    w = act_w[k][d * wb:(d + 1) * wb]
                    xs = Signal(signed(tw), name=f"xs_{k}_{d}")
                    x2 = Signal(signed(tw), name=f"x2_{k}_{d}")
                    m.d.comb += [xs.eq(x[d]), x2.eq(x[d] * 2)]
                    t = Signal(signed(tw), name=f"t_{k}_{d}")
                    # w = 0b01: x; 0b11 (-1): ~x = -x - 1; 0b10 (-2): ~(2x) = -2x - 1; 0b00: 0
                    m.d.comb += t.eq(Mux(w[0], Mux(w[1], ~xs, xs), Mux(w[1], ~x2, 0)))
                    row.append(t)
                terms.append(row)

            # ---- projection adder tree ---------------------------------------------------------
            def add_tree(items, per_stage, name):
                level = 0
                stage = 0
                while len(items) > 1:
                    nxt = []
                    for i in range(0, len(items) - 1, 2):
                        nxt.append(items[i] + items[i + 1])
                    if len(items) % 2:
                        nxt.append(items[-1])
                    items = nxt
                    level += 1
                    if level % per_stage == 0 or len(items) == 1:
                        regs = []
                        for j, e in enumerate(items):
                            r = stage_reg(e.shape(), f"{name}_s{stage}_{j}")
                            with m.If(en):
                                m.d.sync += r.eq(e)
                            regs.append(r)
                        items = regs
                        stage += 1
                return items[0], stage

            projs = []
            for k in range(K):
                if D == 1:
                    projs.append(terms[k][0])
                    continue
                s, nst = add_tree(list(terms[k]), plan["proj_per_stage"], f"proj{k}")
                assert nst == plan["proj_stages"]
                projs.append(s)

            # ---- diff = p' - (offset - n_neg): exact in ob + 1 signed bits ----------------------
            diffs = []
            for k in range(K):
                dreg = stage_reg(signed(ob + 1), f"diff{k}")
                with m.If(en):
                    m.d.sync += dreg.eq(projs[k] - act_off[k])
                diffs.append(dreg)

        # ---- shift and clamp: a right shifter that keeps only the bits that can still reach
        # the bin index, and ORs the rest into an overflow bit.  Part 1: shift bits 4, 3 and 2.
        hi_bits = [j for j in reversed(range(sb_)) if j >= 2]
        lo_bits = [j for j in reversed(range(sb_)) if j < 2]
        # the shift amount must travel with the sample (it is active model, constant between
        # commits, and commits happen with the pipeline empty, so it need not be registered)
        bins = []
        for k in range(K):
            dv = diffs[k]
            neg = dv[-1]
            v, sticky = shift_levels(m, dv[:ob], C(0, 1), act_shift[k], hi_bits, bl)
            v1 = stage_reg(len(v), f"shv{k}")
            st1 = stage_reg(1, f"shst{k}")
            neg1 = stage_reg(1, f"shneg{k}")
            with m.If(en):
                m.d.sync += [v1.eq(v), st1.eq(sticky), neg1.eq(neg)]
            v2, sticky2 = shift_levels(m, v1, st1, act_shift[k], lo_bits, bl)
            if not self.dsp:
                # one more register before the clamp (the ECP5 150 MHz check of the LUT core);
                # the DSP variant has no latency left for it
                v2r = stage_reg(len(v2), f"shv2{k}")
                st2r = stage_reg(1, f"shst2{k}")
                neg2 = stage_reg(1, f"shneg2{k}")
                with m.If(en):
                    m.d.sync += [v2r.eq(v2), st2r.eq(sticky2), neg2.eq(neg1)]
                v2, sticky2, neg1 = v2r, st2r, neg2
            binr = stage_reg(bl, f"bin{k}")
            with m.If(en):
                m.d.sync += binr.eq(Mux(neg1, 0, Mux(sticky2, B - 1, v2)))
            bins.append(binr)

        # ---- tables: one memory per projection, bank bit = address MSB ----------------------
        vals = []
        for k in range(K):
            mem = Memory(data=self.table_data[k])
            m.submodules[f"table{k}"] = mem
            rd = mem.read_port(domain="sync")
            wr = mem.write_port(domain="sync")
            m.d.comb += [
                rd.addr.eq(Cat(bins[k], active_bank)),
                rd.en.eq(en),
                wr.addr.eq(Mux(ctrl.table_clear, Cat(ctrl.table_index[:bl], ctrl.table_index[bl] ^ ~active_bank),
                               Cat(ctrl.table_index[:bl], ~active_bank))),
                wr.data.eq(ctrl.table_data),
                wr.en.eq(ctrl.table_we & (ctrl.table_clear | (ctrl.table_index[bl:] == k))),
            ]
            if self.dsp:
                vals.append(rd.data)
            else:
                # LUT variant: the block RAM's data is registered once more before the score and
                # argmax trees (ECP5 DP16KD clock-to-out + compare missed 150 MHz)
                vr = stage_reg(p.table_bits, f"val{k}")
                with m.If(en):
                    m.d.sync += vr.eq(rd.data)
                vals.append(vr)

        # ---- score (sum) and argmax trees ---------------------------------------------------
        if K == 1:
            score_last = vals[0]
            arg_last = C(0, 1)
            tree_stages = 0
        else:
            per = plan["tree_per_stage"]
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
                        with m.If(en):
                            m.d.sync += [r.eq(e), rv.eq(va), rix.eq(ia)]
                        rs.append(r)
                        ri.append((rv, rix))
                    sums, items = rs, ri
                    stage += 1
            score_last = sums[0]
            arg_last = items[0][1]
            tree_stages = stage
        assert tree_stages == plan["tree_stages"]
        if self.dsp:
            assert n_regs == 1 + plan["chain_len"] + 2 + 1 + tree_stages, "latency bookkeeping"
        else:
            assert n_regs == 1 + plan["proj_stages"] + 1 + 3 + 2 + tree_stages, "latency bookkeeping"

        # ---- output: flag compare, output buffer, result capture, counters ------------------
        score = Signal(p.score_bits)
        m.d.comb += score.eq(score_last)
        anomaly = Signal()
        m.d.comb += anomaly.eq(score > thr_active)
        out_take = Signal()
        m.d.comb += out_take.eq(en & valid[-1])
        push_out = Signal()
        stream_out = Signal()
        m.d.comb += [push_out.eq(out_take & src_push[-1]), stream_out.eq(out_take & ~src_push[-1])]

        if self.stream:
            res = Signal(ResultLayout(p))
            m.d.comb += [
                res.score.eq(score),
                res.tag.eq(out_tag),
                res.argmax.eq(arg_last),
                res.anomaly.eq(anomaly),
                res.last.eq(last_pipe[-1]),
            ]
            buf0 = Signal(ResultLayout(p), reset_less=True)
            buf1 = Signal(ResultLayout(p), reset_less=True)
            pop = Signal()
            m.d.comb += [
                self.o_stream.valid.eq(fifo_cnt != 0),
                self.o_stream.payload.eq(buf0),
                pop.eq(self.o_stream.valid & self.o_stream.ready),
            ]
            with m.Switch(fifo_cnt):
                with m.Case(0), m.If(stream_out):
                    m.d.sync += [buf0.eq(res), fifo_cnt.eq(1)]
                with m.Case(1):
                    with m.If(stream_out & pop):
                        m.d.sync += buf0.eq(res)
                    with m.Elif(stream_out):
                        m.d.sync += [buf1.eq(res), fifo_cnt.eq(2)]
                    with m.Elif(pop):
                        m.d.sync += fifo_cnt.eq(0)
                with m.Case(2), m.If(pop):
                    m.d.sync += [buf0.eq(buf1), fifo_cnt.eq(1)]

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

        # ---- commit: the front end loads one projection per cycle while the pipeline is empty
        # and input is held off, then strobes commit_done.  The +1s of the one's complement
        # negative terms are folded into the offset here, with one shared subtractor.
        m.d.comb += ctrl.drained.eq(commit_pending & pipe_empty)
        # (registered once more before the K-way fan-out: the popcount and the subtraction are
        # two carry chains; the last load still lands in the cycle commit_done takes effect)
        lw = ctrl.load_weights
        n_neg = sum((lw[d * wb + wb - 1] for d in range(D)), start=Const(0, clog2(D + 1) or 1))
        off_eff = Signal(signed(ob + 1), reset_less=True)
        ld_valid = Signal()
        ld_index = Signal.like(ctrl.load_index, reset_less=True)
        ld_w = Signal.like(ctrl.load_weights, reset_less=True)
        ld_shift = Signal.like(ctrl.load_shift, reset_less=True)
        m.d.sync += [ld_valid.eq(ctrl.load_valid), ld_index.eq(ctrl.load_index), ld_w.eq(lw),
                     ld_shift.eq(ctrl.load_shift)]
        if self.dsp:
            # exact products: no one's complement correction; the chain adds -offset
            m.d.sync += off_eff.eq(-ctrl.load_offset.as_signed())
            assert dsp_model is not None
            self._dsp_load(m, dsp_model, ld_valid, ld_index, ld_w, off_eff)
            with m.If(ld_valid):
                for k in range(K):
                    with m.If(ld_index == k):
                        m.d.sync += act_shift[k].eq(ld_shift)
        else:
            m.d.sync += off_eff.eq(ctrl.load_offset.as_signed() - n_neg)
            with m.If(ld_valid):
                for k in range(K):
                    with m.If(ld_index == k):
                        m.d.sync += [act_w[k].eq(ld_w), act_off[k].eq(off_eff), act_shift[k].eq(ld_shift)]
        cs.update(m, ctrl)

        m.d.comb += [
            ctrl.busy.eq(~pipe_empty | (fifo_cnt != 0) if self.stream else ~pipe_empty),
            ctrl.push_inflight.eq(push_inflight),
            ctrl.samples.eq(samples),
            ctrl.anomalies.eq(anomalies),
        ]
        return m

    # ---- DSP48 projections (``dsp=True``) ----------------------------------------------------
    #
    # Projections 2j ("lo") and 2j+1 ("hi") share one chain of multiply-adds.  With the lane width
    # W = offset_bits + 1 (the diff width), feature d is multiplied by
    #     A[j][d] = w_lo + w_hi * 2**W            (a signed (W + 3)-bit constant per commit)
    # and the chain starts from
    #     C[j] = (2**(W-1) - o_lo) + (-o_hi) * 2**W.
    # Its sum is exactly (diff_lo + 2**(W-1)) + diff_hi * 2**W with 0 <= diff_lo + 2**(W-1) < 2**W
    # (|diff| < 2**(W-1), docs/fixed-point.md), so bits W-1:0 are diff_lo with the top bit
    # inverted and bits 2W-1:W are diff_hi, both exact.  Every partial sum is below 2**43 in
    # magnitude, so 2W-bit registers (arithmetic mod 2**(2W)) are exact.  Yosys/Vivado map each
    # step ``P <= P + A * x`` (registered) onto one DSP48E1 (multiplier, post-adder, P register):
    # no LUTs for the terms, the adder tree or the offset subtraction.

    def _dsp_model(self) -> dict[str, list[Signal]]:
        p = self.params
        D, w = p.d, self.plan["lane_bits"]
        pairs = -(-p.k // 2)
        return {
            # w_lo (2 bits) and upper = w_hi - [w_lo < 0] (3 bits) per feature: A = Cat(sext(w_lo), upper)
            "wlo": [Signal(D * 2, name=f"dsp_wlo{j}") for j in range(pairs)],
            "up": [Signal(D * 3, name=f"dsp_up{j}") for j in range(pairs)],
            "clo": [Signal(w, name=f"dsp_clo{j}", init=1 << (w - 1)) for j in range(pairs)],
            "chi": [Signal(signed(w), name=f"dsp_chi{j}") for j in range(pairs)],
        }

    def _dsp_load(self, m: Module, mod: dict[str, list[Signal]], ld_valid, ld_index, ld_w, neg_off) -> None:
        """Commit load of the pair constants.  Loads come in index order (the front end's copy does
        0..K-1), so when projection 2j+1 loads, ``prev_w`` holds the weights of 2j."""
        p = self.params
        D, w = p.d, self.plan["lane_bits"]
        prev_w = Signal(D * 2, reset_less=True)
        up_even = Signal(D * 3)    # w_hi = 0 (fixed up by the odd load, if any)
        up_odd = Signal(D * 3)
        for d in range(D):
            wl = ld_w[2 * d:2 * d + 2].as_signed()
            pw_sign = prev_w[2 * d + 1]
            m.d.comb += [up_even[3 * d:3 * d + 3].eq(-wl[1].as_unsigned()),
                         up_odd[3 * d:3 * d + 3].eq(wl - pw_sign)]
        clo_val = Cat(neg_off[:w - 1], ~neg_off[w - 1])    # -o + 2**(W-1), in 0 .. 2**W - 1
        with m.If(ld_valid):
            m.d.sync += prev_w.eq(ld_w)
            for k in range(p.k):
                j = k // 2
                with m.If(ld_index == k):
                    if k % 2 == 0:
                        m.d.sync += [mod["wlo"][j].eq(ld_w), mod["up"][j].eq(up_even),
                                     mod["clo"][j].eq(clo_val), mod["chi"][j].eq(0)]
                    else:
                        m.d.sync += [mod["up"][j].eq(up_odd), mod["chi"][j].eq(neg_off)]

    def _dsp_projections(self, m: Module, x, en, stage_reg, mod) -> list:
        """The K diffs (``p - o``, signed W bits) from the DSP chains; see above."""
        p = self.params
        plan = self.plan
        D, K, w = p.d, p.k, plan["lane_bits"]
        # x[d] delayed by d stages: the chain's step d uses it (shared by all chains)
        xdel = []
        for d in range(D):
            v = x[d]
            for t in range(d):
                r = stage_reg(signed(p.in_bits), f"x{d}_d{t + 1}")
                with m.If(en):
                    m.d.sync += r.eq(v)
                v = r
            xdel.append(v)
        diffs: list = []
        for j in range(len(mod["wlo"])):
            acc: Any = Cat(mod["clo"][j], mod["chi"][j]).as_signed()
            for d in range(D):
                wl = mod["wlo"][j][2 * d:2 * d + 2]
                a = Cat(wl, wl[1].replicate(w - 2), mod["up"][j][3 * d:3 * d + 3]).as_signed()
                r = stage_reg(signed(2 * w), f"chain{j}_{d}")
                with m.If(en):
                    m.d.sync += r.eq(acc + a * xdel[d])
                acc = r
            tot = acc
            diffs.append(Cat(tot[:w - 1], ~tot[w - 1]).as_signed())
            if 2 * j + 1 < K:
                diffs.append(tot[w:2 * w].as_signed())
        return diffs
