"""The adaptive units of the scorer: one quantile tracker, shared by both cores.

:class:`QuantileTracker` is :func:`mailpulse.hdl.reference.tracker_step` in gateware: from an
accumulator ``acc`` and the direction ``up`` it computes, combinationally,
``clamp(acc + big if up else acc - small, lo, hi)`` (:func:`mailpulse.hdl.reference.clamp`: the
upper bound checked first), with ``small = 2**step_exp`` and ``big = small * (2**rate_exp - 1)``
(the threshold, :func:`mailpulse.hdl.reference.tracker_steps`) or, with ``ratio_bits`` (the route
intervals, :func:`mailpulse.hdl.reference.route_steps`), ``big = rate << step_exp``: the register
value is the multiplier itself, so the ``2**rate - 1`` stage and its register are not there and
``big`` is narrower (8 + 15 bits instead of 16 + 15), and so are the sums and compares after it:
:class:`RouteIntervals` with R = 16 in Yosys' generic gates (flattened, before technology mapping)
went from 6684 to 6333 cells pipelined, longest path 20 gates both, and from 7340 to 7036 cells,
57 to 55 gates, in the single-cycle form.

Timing, single-cycle form (the streaming core: the next sample's flag may need the new threshold
in the very next cycle): the clamp compares are rewritten against registered limits
(``acc + big > hi`` is ``acc > hi - big``, and so on), so from ``acc`` to ``next`` there is one
adder and, beside it, four compares, then two levels of multiplexers; ``up`` (the flag, itself a
compare) only drives the last multiplexer.  Pipelined form (the folded core, K + lane depth cycles
per sample): the sum is registered, the clamp follows in the next cycle (about half the logic; the
single-cycle form missed the UP5K's 45 MHz: 30.5 MHz).  ``big``/``small`` (and the limits) are
registered from ``rate_exp`` (or ``ratio``)/``step_exp``/``lo``/``hi``: they follow a change of
those inputs up to three cycles later, so the inputs must hold still for three cycles before a step
that depends on them (both cores change them only at a commit, with the pipeline empty, and a
sample takes longer than that to reach the compare).

:class:`AdaptiveThreshold` is the threshold's tracker with its active configuration (copied from
the shadow registers at a commit, as the rest of the model) - used by
:class:`mailpulse.hdl.control.CommitState`, which both cores keep.

Pure Amaranth, no platform primitives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import CoreParams
from .regmap import ADAPT_FRAC, ROUTE_RATIO_BITS, RegisterMap

__all__ = ["ADAPT_FRAC", "AdaptiveThreshold", "QuantileTracker", "RouteIntervals"]


class QuantileTracker(wiring.Component):
    """``next = clamp(acc + big if up else acc - small, lo, hi)``; see the module docstring.

    Parameters
    ----------
    acc_bits : int
        Width of the (unsigned) accumulator and of ``lo``/``hi``.
    rate_bits, step_bits : int
        Widths of ``rate_exp`` and ``step_exp``.
    ratio_bits : int
        0: the port ``rate_exp`` (``rate_bits`` wide) is an exponent,
        ``big = (2**rate_exp - 1) << step_exp``.  Else the port is ``ratio``, a ``ratio_bits`` wide
        multiplier, ``big = ratio << step_exp``.
    pipelined : bool
        False: ``next`` is combinational from ``acc``/``up`` (one adder with the four clamp
        compares beside it, against registered limits, then three multiplexer levels; the route
        intervals).  True, without ``fast`` (the folded core, K + lane depth cycles per sample):
        the sums in halves, the chosen sum and its clamp compares in halves are registered in
        turn, ``next`` follows three cycles after its inputs (one 42-bit compare after a
        multiplexer limited the UP5K to 34.0 MHz, a 42-bit adder to 43.1 MHz; 45 MHz is needed).
    fast : bool
        With ``pipelined`` (the streaming core): the single-cycle form's four compares and two
        sums are registered, then only multiplexers lead to ``next``, one cycle after its inputs
        (the clamp compare after a registered sum limited the ECP5 stream-bench to 113.6 MHz;
        125 MHz is needed).
    """

    def __init__(self, acc_bits: int, rate_bits: int = 4, step_bits: int = 4, *, ratio_bits: int = 0,
                 pipelined: bool = False, fast: bool = False) -> None:
        self.acc_bits = acc_bits
        self.pipelined = pipelined
        self.fast = fast
        self.ratio_bits = ratio_bits
        #: ``next`` in cycle t + latency answers ``acc``/``up`` of cycle t.
        self.latency = 0 if not pipelined else 1 if fast else 3
        #: Width of the multiplier of ``big`` (the mask ``2**rate - 1`` or the ratio).
        mult_bits = ratio_bits or 1 << rate_bits
        #: Width of ``big``/``small``: big < 2**(max step + 1 + multiplier width - 1).
        self.step_width = (1 << step_bits) + mult_bits - 1
        super().__init__({
            "acc": In(acc_bits),
            "up": In(1),
            ("ratio" if ratio_bits else "rate_exp"): In(ratio_bits or rate_bits),
            "step_exp": In(step_bits),
            "lo": In(acc_bits),
            "hi": In(acc_bits),
            "next": Out(acc_bits),
        })

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        sw = self.step_width
        lw = max(self.acc_bits, sw) + 2   # signed: hi - big may be negative, acc + big above hi
        small = Signal(sw, name="small")
        big = Signal(sw, name="big")
        one = C(1, sw)
        # from the configuration (static between commits), two registered steps: 2**rate - 1, then
        # the shift (a variable shift after a decrement was the UP5K's critical path); a ratio is
        # the multiplier as it comes from its (active configuration) register: the shift alone
        if self.ratio_bits:
            mult: Any = self.ratio
        else:
            mult = Signal(1 << len(self.rate_exp), name="rate_mask")
            m.d.sync += mult.eq((C(1, len(mult) + 1) << self.rate_exp) - 1)
        m.d.sync += [small.eq(one << self.step_exp), big.eq(mult << self.step_exp)]
        if self.pipelined and not self.fast:
            self._deep(m, big, small, lw)
            return m
        # the clamp compares against registered limits: ``acc + big > hi`` is ``acc > hi - big``...
        hi_up, lo_up, hi_dn, lo_dn = (Signal(signed(lw), name=n) for n in ("hi_up", "lo_up", "hi_dn", "lo_dn"))
        m.d.sync += [hi_up.eq(self.hi - big), lo_up.eq(self.lo - big),
                     hi_dn.eq(self.hi + small), lo_dn.eq(self.lo + small)]
        acc = Cat(self.acc, 0).as_signed()
        cmp = [acc > hi_up, acc < lo_up, acc > hi_dn, acc < lo_dn]
        sums = [(self.acc + big)[:self.acc_bits], (self.acc - small)[:self.acc_bits]]
        up: Any = self.up
        if self.pipelined:   # fast: the compares, the sums and the direction registered; then muxes
            cmp_r = [Signal(name=f"cmp{i}") for i in range(4)]
            sums_r = [Signal(self.acc_bits, name=n) for n in ("sum_up", "sum_dn")]
            up = Signal(name="up_r")
            m.d.sync += [*(r.eq(c) for r, c in zip(cmp_r, cmp, strict=True)),
                         *(r.eq(v) for r, v in zip(sums_r, sums, strict=True)), up.eq(self.up)]
            cmp, sums = list(cmp_r), list(sums_r)
        up_next = Mux(cmp[0], self.hi, Mux(cmp[1], self.lo, sums[0]))
        dn_next = Mux(cmp[2], self.hi, Mux(cmp[3], self.lo, sums[1]))
        m.d.comb += self.next.eq(Mux(up, up_next, dn_next))
        return m


    def _deep(self, m: Module, big: Signal, small: Signal, lw: int) -> None:
        """The deep form: every carry chain at most half the accumulator wide (the UP5K's 42-bit
        adder and compares did not fit 45 MHz).  t: the low halves of ``acc + big`` and
        ``acc - small`` (as ``acc + (2**lw - small)``) and the high operands; t + 1: the high halves
        and the choice by ``up``; t + 2: the clamp compares per half; t + 3: ``next``."""
        ab = self.acc_bits
        h = lw // 2
        neg_small = Signal(lw, name="neg_small")
        m.d.sync += neg_small.eq(C(0, lw) - small)
        acc = Cat(self.acc, C(0, lw - ab))
        up_r = Signal(name="up_r")
        m.d.sync += up_r.eq(self.up)
        halves = []
        for name, add in (("up", Cat(big, C(0, lw - len(big)))), ("dn", neg_small)):
            lo_s = Signal(h + 1, name=f"{name}_lo")
            a_hi, b_hi = Signal(lw - h, name=f"{name}_ahi"), Signal(lw - h, name=f"{name}_bhi")
            m.d.sync += [lo_s.eq(acc[:h] + add[:h]), a_hi.eq(acc[h:]), b_hi.eq(add[h:])]
            halves.append(Cat(lo_s[:h], (a_hi + b_hi + lo_s[h])[:lw - h]))
        new = Signal(lw, name="new")
        m.d.sync += new.eq(Mux(up_r, halves[0], halves[1]))
        hi_x, lo_x = Cat(self.hi, C(0, lw - ab)), Cat(self.lo, C(0, lw - ab))
        parts = {n: Signal(name=n) for n in ("neg", "hi_gt_h", "hi_eq_h", "hi_gt_l", "lo_lt_h", "lo_eq_h", "lo_lt_l")}
        new2 = Signal(ab, name="new2")
        m.d.sync += [parts["neg"].eq(new[-1]), new2.eq(new[:ab]),
                     parts["hi_gt_h"].eq(new[h:] > hi_x[h:]), parts["hi_eq_h"].eq(new[h:] == hi_x[h:]),
                     parts["hi_gt_l"].eq(new[:h] > hi_x[:h]),
                     parts["lo_lt_h"].eq(new[h:] < lo_x[h:]), parts["lo_eq_h"].eq(new[h:] == lo_x[h:]),
                     parts["lo_lt_l"].eq(new[:h] < lo_x[:h])]
        p = parts
        gt = ~p["neg"] & (p["hi_gt_h"] | (p["hi_eq_h"] & p["hi_gt_l"]))
        lt = p["neg"] | p["lo_lt_h"] | (p["lo_eq_h"] & p["lo_lt_l"])
        m.d.comb += self.next.eq(Mux(gt, self.hi, Mux(lt, self.lo, new2)))


class AdaptiveThreshold:
    """The active adaptation configuration and the threshold's tracker (see the module docstring).

    ``enable``, ``alpha_exp``, ``step_exp``, ``t_min``, ``t_max``: the active copy of ``ADAPT``,
    ``T_MIN``, ``T_MAX`` (reset: disabled; loaded by :meth:`load`).  :meth:`step` returns the
    statements that advance ``(thr, frac)`` after a sample flagged ``flag``.
    """

    def __init__(self, params: CoreParams) -> None:
        self.regmap = RegisterMap(params)
        self.enable = Signal(name="adapt_enable")
        self.alpha_exp = Signal(4, name="adapt_alpha_exp")
        self.step_exp = Signal(4, name="adapt_step_exp")
        self.t_min = Signal(32, name="adapt_t_min")
        self.t_max = Signal(32, init=self.regmap["T_MAX"].reset, name="adapt_t_max")
        #: With routes (R > 0): the active ``ADAPT.ROUTES``/``ROUTE_RATIO``/``ROUTE_STEP_EXP``.
        self.route_enable = Signal(name="route_enable")
        self.route_ratio = Signal(ROUTE_RATIO_BITS, name="route_ratio")
        self.route_step_exp = Signal(4, name="route_step_exp")

    def load(self, ctrl: Any) -> list[Any]:
        """Statements that copy the shadow configuration from the front end (at a commit)."""
        reg = self.regmap["ADAPT"]
        a = ctrl.shadow_adapt

        def fld(name: str) -> Any:
            f = reg.field(name)
            return a[f.lsb:f.lsb + f.width]

        routes = [self.route_enable.eq(fld("ROUTES")), self.route_ratio.eq(fld("ROUTE_RATIO")),
                  self.route_step_exp.eq(fld("ROUTE_STEP_EXP"))] if self.regmap.params.r else []
        return [self.enable.eq(fld("ENABLE")), self.alpha_exp.eq(fld("ALPHA_EXP")), self.step_exp.eq(fld("STEP_EXP")),
                self.t_min.eq(ctrl.shadow_t_min), self.t_max.eq(ctrl.shadow_t_max), *routes]

    def tracker(self, m: Module, thr: Signal, frac: Signal, flag: Any, *, pipelined: bool = False,
                fast: bool = False) -> QuantileTracker:
        """The tracker on accumulator ``Cat(frac, thr)`` (its ``next`` answers ``latency``
        cycles late, see :class:`QuantileTracker`)."""
        tr = m.submodules.adapt_threshold = QuantileTracker(32 + ADAPT_FRAC, pipelined=pipelined, fast=fast)
        m.d.comb += [
            tr.acc.eq(Cat(frac, thr)),
            tr.up.eq(flag),
            tr.rate_exp.eq(self.alpha_exp),
            tr.step_exp.eq(self.step_exp),
            tr.lo.eq(Cat(C(0, ADAPT_FRAC), self.t_min)),
            tr.hi.eq(Cat(C(0, ADAPT_FRAC), self.t_max)),
        ]
        return tr


@dataclass
class _Seed:
    """A seed of one bound as the unit applies it (capped already)."""

    we: Any
    route: Any
    side: Any
    value: Any


class RouteIntervals(wiring.Component):
    """Per-route latency prediction intervals: :func:`mailpulse.hdl.reference.route_intervals`.

    ``routes`` lower and upper bound accumulators (unsigned ``LATENCY_BITS + ADAPT_FRAC`` bits) in
    flip-flops.  An event (``valid``, ``route``, ``value``) reads its route's bounds, flags
    ``below``/``above`` combinationally in the same cycle (against the bounds before the update)
    and writes the stepped bounds at the clock edge, so an event per cycle is exact.  The upper
    bound uses :class:`QuantileTracker` as is; the lower one the same tracker on the mirrored
    accumulator ``HI - L`` (a miss below moves the mirror up).  A route id at or above ``routes``
    flags nothing and changes nothing.

    The host side: ``seed_we`` writes ``seed_value`` into bound ``seed_side`` (0 lower, 1 upper)
    of route ``seed_route``, capped at ``HI`` (:func:`mailpulse.hdl.reference.route_seed`; it
    wins over an event's update of the same bound in that cycle);
    ``rd_route``/``rd_side`` select ``rd_value`` (combinational).  ``ratio``/``step_exp`` (the
    miss ratio M and the step exponent: ``big = M << step_exp``, ``small = 1 << step_exp``) must
    hold still for three cycles before an event that depends on them.

    Both cores instantiate it through :func:`mailpulse.hdl.control.route_intervals`, at the stage
    where a result leaves (one event per result).

    ``pipelined`` (the folded core: an event at most every K + lane depth cycles, known long
    before its result leaves): ``start`` begins an event whose ``route``/``value`` hold still from
    the cycle before ``start`` until its ``valid``, at least :attr:`PIPE_CYCLES` cycles later.  The
    route is registered every cycle (its 16-bit decode stays off the bound multiplexer); cycle
    ``start``: the route's bounds are read into registers; next: the two compares, registered (the
    flags); then the two trackers in their deep form (:class:`QuantileTracker` ``pipelined``).  At ``valid`` the flags
    are output and the stepped bounds written - except a bound seeded since ``start`` (the seed
    comes after the event, as in the model: it must win).  A seed lands the cycle after its strobe
    (registered and capped first); ``rd_value`` answers ``rd_route``/``rd_side`` a cycle later.
    Every carry chain then follows a register (the single-cycle form on the HX8K: 34.2 MHz with
    R = 16, 100.5 MHz needed).
    """

    #: Cycles from ``start`` to the first ``valid`` the pipelined form answers exactly.
    PIPE_CYCLES = 6

    def __init__(self, routes: int, route_bits: int = 16, value_bits: int = 16, *, pipelined: bool = False) -> None:
        self.routes = routes
        self.pipelined = pipelined
        self.value_bits = value_bits
        self.acc_bits = value_bits + ADAPT_FRAC
        #: Formal only (:class:`mailpulse.hdl.formal.RouteIntervalsHarness`): called at the end of
        #: ``elaborate`` with the module and the internal signals; None in every build.
        self.formal_hook: Callable[[Module, dict[str, Any]], None] | None = None
        rb = max(1, (routes - 1).bit_length())
        super().__init__({
            "enable": In(1),
            "ratio": In(ROUTE_RATIO_BITS),
            "step_exp": In(4),
            "start": In(1),
            "valid": In(1),
            "route": In(route_bits),
            "value": In(value_bits),
            "below": Out(1),
            "above": Out(1),
            "seed_we": In(1),
            "seed_route": In(rb),
            "seed_side": In(1),
            "seed_value": In(self.acc_bits),
            "rd_route": In(rb),
            "rd_side": In(1),
            "rd_value": Out(self.acc_bits),
        })

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        ab = self.acc_bits
        hi = ((1 << self.value_bits) - 1) << ADAPT_FRAC
        lower = [Signal(ab, name=f"lower{r}") for r in range(self.routes)]
        upper = [Signal(ab, name=f"upper{r}") for r in range(self.routes)]
        if self.pipelined:
            # the seed registered once, capped before the register (the cap's compare and the
            # bound decode were the HX8K's critical path at R = 16: 92.1 MHz); a seed lands a
            # cycle after its strobe (the folded core's front end holds seeds off while a push is
            # in flight, so no event sees it early or late)
            seed = _Seed(Signal(name="seed_we_r"), Signal.like(self.seed_route, name="seed_route_r"),
                         Signal(name="seed_side_r"), Signal(self.acc_bits, name="seed_value_r"))
            m.d.sync += [seed.we.eq(self.seed_we), seed.route.eq(self.seed_route), seed.side.eq(self.seed_side),
                         seed.value.eq(Mux(self.seed_value > hi, hi, self.seed_value))]
            probes = self._pipelined(m, lower, upper, hi, seed)
            self._host(m, lower, upper, seed)
            if self.formal_hook is not None:
                self.formal_hook(m, {"lower": lower, "upper": upper, "seed": seed, **probes})
            return m
        in_range = Signal()
        m.d.comb += in_range.eq(self.route < self.routes)
        lo_cur = Signal(ab)
        up_cur = Signal(ab)
        with m.Switch(self.route):
            for r in range(self.routes):
                with m.Case(r):
                    m.d.comb += [lo_cur.eq(lower[r]), up_cur.eq(upper[r])]
        act = self.valid & self.enable & in_range
        m.d.comb += [
            self.below.eq(act & (self.value < lo_cur[ADAPT_FRAC:])),
            self.above.eq(act & (self.value > up_cur[ADAPT_FRAC:])),
        ]
        trackers = []
        m_trackers = []
        for name, cur, miss, mirror in (("upper", up_cur, self.above, False), ("lower", lo_cur, self.below, True)):
            tr = m.submodules[f"tracker_{name}"] = QuantileTracker(ab, ratio_bits=ROUTE_RATIO_BITS)
            m_trackers.append(tr)
            m.d.comb += [tr.acc.eq(C(hi, ab) - cur if mirror else cur), tr.up.eq(miss),
                         tr.ratio.eq(self.ratio), tr.step_exp.eq(self.step_exp),
                         tr.lo.eq(0), tr.hi.eq(hi)]
            trackers.append(C(hi, ab) - tr.next if mirror else tr.next)
        up_next, lo_next = trackers
        for r in range(self.routes):
            with m.If(act & (self.route == r)):
                m.d.sync += [upper[r].eq(up_next), lower[r].eq(lo_next)]
        seed = _Seed(self.seed_we, self.seed_route, self.seed_side, Mux(self.seed_value > hi, hi, self.seed_value))
        self._host(m, lower, upper, seed)   # reference.route_seed
        if self.formal_hook is not None:
            self.formal_hook(m, {"lower": lower, "upper": upper, "seed": seed, "in_range": in_range, "act": act,
                                 "trackers": dict(zip(("upper", "lower"), m_trackers, strict=True)),
                                 "up_next": up_next, "lo_next": lo_next})
        return m

    def _pipelined(self, m: Module, lower: list[Signal], upper: list[Signal], hi: int, sd: _Seed) -> dict[str, Any]:
        """The pipelined form (see the class docstring); returns its internal signals (for the formal hook)."""
        ab = self.acc_bits
        lo_cur, up_cur = Signal(ab, name="lo_cur"), Signal(ab, name="up_cur")
        in_range = Signal(name="ev_in_range")
        route_r = Signal(len(self.seed_route), name="route_r")
        inr_r = Signal(name="route_in_range_r")
        m.d.sync += [route_r.eq(self.route[:len(route_r)]), inr_r.eq(self.route < self.routes)]
        with m.If(self.start):
            m.d.sync += in_range.eq(inr_r)
            with m.Switch(route_r):
                for r in range(self.routes):
                    with m.Case(r):
                        m.d.sync += [lo_cur.eq(lower[r]), up_cur.eq(upper[r])]
        below_r, above_r = Signal(name="below_r"), Signal(name="above_r")
        m.d.sync += [below_r.eq(in_range & (self.value < lo_cur[ADAPT_FRAC:])),
                     above_r.eq(in_range & (self.value > up_cur[ADAPT_FRAC:]))]
        act = self.valid & self.enable & in_range
        m.d.comb += [self.below.eq(act & below_r), self.above.eq(act & above_r)]
        nexts = []
        trs = {}
        for name, cur, miss, mirror in (("upper", up_cur, above_r, False), ("lower", lo_cur, below_r, True)):
            tr = trs[name] = m.submodules[f"tracker_{name}"] = QuantileTracker(ab, ratio_bits=ROUTE_RATIO_BITS,
                                                                                pipelined=True)
            acc = Signal(ab, name=f"{name}_acc")   # the mirror registered: the tracker's halves follow a register
            m.d.sync += acc.eq(C(hi, ab) - cur if mirror else cur)
            m.d.comb += [tr.acc.eq(acc), tr.up.eq(miss), tr.ratio.eq(self.ratio), tr.step_exp.eq(self.step_exp),
                         tr.lo.eq(0), tr.hi.eq(hi)]
            nexts.append(C(hi, ab) - tr.next if mirror else tr.next)
        up_next, lo_next = nexts
        # a seed of the event's route since ``start`` cancels that bound's write-back
        keep_lo, keep_up = Signal(name="keep_lo"), Signal(name="keep_up")
        seeded = sd.we & (sd.route == route_r) & inr_r
        with m.If(self.start):
            m.d.sync += [keep_lo.eq(~(seeded & ~sd.side)), keep_up.eq(~(seeded & sd.side))]
        with m.Else():
            with m.If(seeded & ~sd.side):
                m.d.sync += keep_lo.eq(0)
            with m.If(seeded & sd.side):
                m.d.sync += keep_up.eq(0)
        for r in range(self.routes):
            with m.If(act & (route_r == r)):
                with m.If(keep_up):
                    m.d.sync += upper[r].eq(up_next)
                with m.If(keep_lo):
                    m.d.sync += lower[r].eq(lo_next)
        return {"lo_cur": lo_cur, "up_cur": up_cur, "in_range": in_range, "route_r": route_r, "inr_r": inr_r,
                "below_r": below_r, "above_r": above_r, "keep_lo": keep_lo, "keep_up": keep_up, "act": act,
                "trackers": trs, "up_next": up_next, "lo_next": lo_next}

    def _host(self, m: Module, lower: list[Signal], upper: list[Signal], sd: _Seed) -> None:
        """The seed (it wins over an event's write of the same bound in its cycle) and the read."""
        ab = self.acc_bits
        for r in range(self.routes):
            with m.If(sd.we & (sd.route == r) & sd.side):
                m.d.sync += upper[r].eq(sd.value)
            with m.If(sd.we & (sd.route == r) & ~sd.side):
                m.d.sync += lower[r].eq(sd.value)
        rd = Signal(ab)
        with m.Switch(self.rd_route):
            for r in range(self.routes):
                with m.Case(r):
                    m.d.comb += rd.eq(Mux(self.rd_side, upper[r], lower[r]))
        if self.pipelined:   # registered once: the 2R-way multiplexer was the HX8K's next critical path
            m.d.sync += self.rd_value.eq(rd)
        else:
            m.d.comb += self.rd_value.eq(rd)
