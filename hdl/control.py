"""The contract between the register front end and a scorer core, and the state both cores share.

:class:`ControlSignature` is the port between :class:`mailpulse.hdl.regs.RegisterFile` (the
initiator) and either core (:class:`mailpulse.hdl.core.ScorerCore`,
:class:`mailpulse.hdl.folded.FoldedScorerCore`); :class:`CommitState` is the active-model control
state both cores keep, with its one copy of the commit rules.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .adapt import ADAPT_FRAC, AdaptiveThreshold, RouteIntervals
from .params import CoreParams, clog2
from .regmap import THRESHOLD_RESET, RegisterMap

__all__ = ["CommitState", "ControlSignature", "route_intervals"]


class ControlSignature(wiring.Signature):
    """Wires between the register front end (the initiator, ``Out`` members) and the core.

    Members (front end -> core)
    ---------------------------
    shadow_threshold : 32
    shadow_adapt, shadow_t_min, shadow_t_max : the adaptation registers (``ADAPT``, ``T_MIN``,
        ``T_MAX``), copied to the active configuration at a commit
    commit, commit_threshold, clear_counters : strobes (one cycle)
    load_valid, load_index, load_weights, load_offset, load_shift : during a commit, the front end
        copies shadow entry ``load_index`` into the active registers, one projection per cycle
    commit_done : strobe after the last load: flip the bank, copy the threshold, accept again
    table_we, table_index, table_data : write of shadow-bank entry ``index = k * B + b``
    table_clear : with ``table_we``: write ``table_data`` at address ``table_index`` of *every*
        table memory, both banks (the clear after reset)
    clearing : the clear after reset runs: the core accepts no sample (block RAM keeps its old
        contents across a reset, so a sample scored now would read a table not yet cleared)
    push_valid, push_features, push_tag : a pushed sample (held until ``push_ready``)

    Members (core -> front end)
    ---------------------------
    drained : a commit is pending and the pipeline is empty: the front end may copy
    push_ready : the pushed sample enters the pipeline this cycle
    push_inflight : a pushed sample is in the pipeline
    result_valid, result_score, result_anomaly, result_argmax, result_tag : the result of a pushed
        sample (``result_valid`` is a one-cycle strobe)
    commit_pending, active_bank, busy : status
    threshold_active, threshold_frac, samples, anomalies : read-back

    With routes (R > 0) also: ``push_route`` (front end -> core: the ``ROUTE`` register, operand
    of a PUSH), ``route_rd_index`` / ``route_rd_value`` (the ``ROUTE_BOUND`` element the bus reads:
    index out, the bound in, combinational), ``route_seed_we`` / ``route_seed_index`` /
    ``route_seed_value`` (a seed of one bound, a one-cycle strobe) and ``result_below`` /
    ``result_above`` (core -> front end, with ``result_valid``).
    """

    def __init__(self, params: CoreParams) -> None:
        p = params
        self.params = p
        rm = RegisterMap(p)
        super().__init__({
            "shadow_threshold": Out(32),
            "shadow_adapt": Out(rm["ADAPT"].width),
            "shadow_t_min": Out(32),
            "shadow_t_max": Out(32),
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
            "clearing": Out(1),
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
            "threshold_frac": In(ADAPT_FRAC),
            "samples": In(32),
            "anomalies": In(32),
            **self._route_members(rm),
        })

    @staticmethod
    def _route_members(rm: RegisterMap) -> dict[str, wiring.Member]:
        if not rm.params.r:
            return {}
        bound = rm["ROUTE_BOUND"]
        iw = max(1, clog2(bound.count))
        return {
            "push_route": Out(rm["ROUTE"].width),
            "route_rd_index": Out(iw),
            "route_rd_value": In(bound.width),
            "route_seed_we": Out(1),
            "route_seed_index": Out(iw),
            "route_seed_value": Out(bound.width),
            "result_below": In(1),
            "result_above": In(1),
        }


class CommitState:
    """The active-model control state both cores keep, and how it changes (one copy of the rules).

    ``thr_active`` (the threshold in use; after reset the ``THRESHOLD_ACTIVE`` register's declared
    reset), ``active_bank`` (the table bank in use) and ``commit_pending`` (a COMMIT waits for the
    pipeline to drain).  :meth:`update` adds the transitions: COMMIT_THRESHOLD copies the shadow
    threshold at once; ``commit_done`` (after the front end's copy) clears the pending flag, flips
    the bank and copies the threshold; a COMMIT sets the pending flag, written after
    ``commit_done`` so that a COMMIT in the very cycle a commit completes is not lost (it commits
    again once drained, as the model does).

    The adaptive threshold (:mod:`mailpulse.hdl.adapt`): ``thr_frac`` extends ``thr_active`` by
    :data:`~mailpulse.hdl.regmap.ADAPT_FRAC` fraction bits; ``adapt`` holds the active ``ADAPT``/
    ``T_MIN``/``T_MAX``.  With :meth:`update`'s ``step`` high and adaptation enabled, the pair
    moves one tracker step after a sample flagged ``flag``; a threshold commit in the same cycle
    wins (the model has the commit between samples, after the step).
    """

    def __init__(self, params: CoreParams) -> None:
        self.thr_active = Signal(32, init=THRESHOLD_RESET)
        self.thr_frac = Signal(ADAPT_FRAC)
        self.active_bank = Signal()
        self.commit_pending = Signal()
        self.adapt = AdaptiveThreshold(params)
        #: The adaptive step writes the threshold this cycle (the formal proofs name it).
        self.adapt_write = Signal(name="adapt_write")

    def update(self, m: Module, ctrl: Any, step: Any = None, flag: Any = None, *, pipelined: bool = False,
               fast: bool = False) -> None:
        """The transitions; with ``step``, the adaptive threshold's step (``pipelined``: it lands
        the tracker's latency later; a threshold commit in between cancels it: the model has the
        commit after the step, which then must not overwrite it)."""
        if step is not None:
            tr = self.adapt.tracker(m, self.thr_active, self.thr_frac, flag, pipelined=pipelined, fast=fast)
            nxt = tr.next
            for i in range(tr.latency):
                step_d = Signal(name=f"adapt_step_d{i}")
                m.d.sync += step_d.eq(step & ~ctrl.commit_threshold & ~ctrl.commit_done)
                step = step_d
            m.d.comb += self.adapt_write.eq(step & self.adapt.enable)
            with m.If(self.adapt_write):
                m.d.sync += Cat(self.thr_frac, self.thr_active).eq(nxt)
        with m.If(ctrl.commit_threshold):
            m.d.sync += [self.thr_active.eq(ctrl.shadow_threshold), self.thr_frac.eq(0)]
        with m.If(ctrl.commit_done):
            m.d.sync += [self.commit_pending.eq(0), self.active_bank.eq(~self.active_bank),
                         self.thr_active.eq(ctrl.shadow_threshold), self.thr_frac.eq(0),
                         *self.adapt.load(ctrl)]
        with m.If(ctrl.commit):
            m.d.sync += self.commit_pending.eq(1)
        m.d.comb += [ctrl.commit_pending.eq(self.commit_pending), ctrl.active_bank.eq(self.active_bank),
                     ctrl.threshold_active.eq(self.thr_active), ctrl.threshold_frac.eq(self.thr_frac)]


def route_intervals(m: Module, params: CoreParams, ctrl: Any, cs: CommitState, valid: Any, event: Any,
                    start: Any = None) -> tuple[Any, Any]:
    """The route intervals of a core with routes (:class:`~mailpulse.hdl.adapt.RouteIntervals`):
    an event each cycle ``valid`` is high, ``event`` its ``ROUTE``-register layout (id in bits
    0..15, the Q8.8 latency in 16..31); the active ``ADAPT`` route fields from ``cs``; the
    ``ROUTE_BOUND`` read and seed ports of ``ctrl`` (element ``2r + side``).  Returns the flags
    ``(below, above)`` of the event, combinational in its cycle.  With ``start`` the unit is
    pipelined: the event starts then, ``event`` holds still until its ``valid``
    (:attr:`~mailpulse.hdl.adapt.RouteIntervals.PIPE_CYCLES` or more cycles later)."""
    ri = m.submodules.route_intervals = RouteIntervals(params.r, pipelined=start is not None)
    if start is not None:
        m.d.comb += ri.start.eq(start)
    a = cs.adapt
    rb = len(ri.seed_route)
    m.d.comb += [
        ri.enable.eq(a.route_enable), ri.ratio.eq(a.route_ratio), ri.step_exp.eq(a.route_step_exp),
        ri.valid.eq(valid), ri.route.eq(event[:16]), ri.value.eq(event[16:32]),
        ri.seed_we.eq(ctrl.route_seed_we), ri.seed_side.eq(ctrl.route_seed_index[0]),
        ri.seed_route.eq(ctrl.route_seed_index[1:1 + rb]), ri.seed_value.eq(ctrl.route_seed_value),
        ri.rd_side.eq(ctrl.route_rd_index[0]), ri.rd_route.eq(ctrl.route_rd_index[1:1 + rb]),
        ctrl.route_rd_value.eq(ri.rd_value),
    ]
    return ri.below, ri.above
