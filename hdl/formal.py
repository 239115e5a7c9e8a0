"""Formal harnesses of the scorer for SymbiYosys: the properties, the environment they assume, the
white-box invariants that make them inductive, and the faults that show each can fail.

Formal-only: a harness sets the ``formal_hook`` of the design it wraps (:class:`ScorerCore`,
:class:`FoldedScorerCore`, :class:`RegisterFile`, :class:`AXI4LiteSlave`, :class:`RouteIntervals`),
which the design calls at the end of its ``elaborate`` with its internal signals; nothing here is
in a build.  A ``fault``
overrides one statement of the design from that hook (Amaranth: the last assignment wins), so the
mutated design is the shipped one but for that statement.  :mod:`mailpulse.hdl.prove` runs them.

Harnesses (``docs/verification.md`` states each property in words):

* :class:`StreamCoreHarness` - :class:`ScorerCore` with its stream ports, every control input free
  within the front end's contract: no sample lost, duplicated or reordered (tags count up), the
  output holds while stalled, pushed results in order, the model changes only with the pipeline
  empty, no table write into the active bank while a sample is in flight.
* :class:`FoldedCoreHarness` - :class:`FoldedScorerCore`: one result per push, exactly ``latency``
  cycles later, with its tag; the model changes only with no sample in the lane.
* :class:`RegisterBusHarness` - AXI4-Lite slave + :class:`RegisterFile` + the streaming core, every
  AXI and stream input free within the protocols: every request answered within
  :attr:`RegisterBusHarness.bound` cycles, the AXI outputs hold until taken, and the front end
  keeps the control contract the core harnesses assume.
* :class:`SPIBridgeHarness` - :class:`SPIRegisterBridge` against a SPI master at any legal ``sck``
  and a bus that answers within :data:`SPI_BUS_BOUND` clocks: the sync byte, every request held
  until taken, every whole word written to its address, the first read word delivered as the bus
  answered it.
* :class:`RouteIntervalsHarness` - :class:`RouteIntervals` (the per-route latency intervals, either
  form) against a shadow of the reference's step: every flag and bound as the shadow's, bounds in
  ``0..HI``, an untracked id (or the unit disabled) changes nothing, the host reads the bounds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from amaranth.asserts import AnySeq, Initial
from amaranth.hdl import Assert, Assume, Cat, ClockDomain, Const, Cover, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import wiring

from .adapt import RouteIntervals
from .axi import AXI4LiteSlave
from .core import ScorerCore
from .folded import FoldedScorerCore
from .params import CoreParams
from .regmap import ADAPT_FRAC, WAIT_LIMIT
from .regs import RegisterFile
from .spi import Phase, SPIRegisterBridge
from .spiproto import CMD_READ, CMD_WRITE, SYNC_BYTE

__all__ = ["FAULTS", "HARNESSES", "SPI_BUS_BOUND", "FoldedCoreHarness", "RegisterBusHarness",
           "RouteIntervalsHarness", "SPIBridgeHarness", "StreamCoreHarness"]


#: Most clocks the SPI harness's bus takes from a request to its answer.  A read frame's first word
#: is requested after the address and must be in the bridge when the dummy byte ends, 8 bits later:
#: 32 clocks at the fastest ``sck`` (``clk / 4``), minus the request's own cycle.
SPI_BUS_BOUND = 30


def check(m: Module, when: Value, props: dict[str, Value]) -> None:
    """Assert each property (named: a failed proof names it) in the cycles where ``when`` holds."""
    for name, v in props.items():
        m.d.comb += Assert(~when | v, name)


def popcount(bits: Value) -> Value:
    total: Value = Const(0, 8)
    for i in range(len(bits)):
        total = total + bits[i]
    return total


class _Harness(Elaboratable):
    """A clock input, the ``sync`` domain (reset in the first cycle only), and helpers."""

    def __init__(self, params: CoreParams, fault: str | None = None) -> None:
        if fault is not None and fault not in FAULTS.get(type(self).name, {}):
            known = ", ".join(FAULTS.get(type(self).name, {})) or "none"
            raise ValueError(f"unknown fault {fault!r} for {type(self).name}; known: {known}")
        self.params = params
        self.fault = fault
        self.clk = Signal()
        self.started = Signal()    # 0 in the first two cycles (reset, then the reset values)
        self.past_ok = Signal()    # 0 in the first cycle only: the ``past`` registers hold a real cycle

    name = ""

    def _domain(self, m: Module) -> None:
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.clk), cd.rst.eq(Initial())]
        warm = Signal()
        m.d.sync += [warm.eq(1), self.started.eq(warm), self.past_ok.eq(1)]

    @staticmethod
    def past(m: Module, v: Value, name: str) -> Signal:
        r = Signal.like(v, name=f"past_{name}", reset_less=True) if isinstance(v, Signal) else Signal(
            len(v), name=f"past_{name}", reset_less=True)
        m.d.sync += r.eq(v)
        return r

    @staticmethod
    def free_inputs(m: Module, port: Any, flow: Any) -> None:
        """Drive every member of ``port`` whose flow is ``flow`` (``In``: the inputs of the design that
        owns the port) from AnySeq."""
        for name, member in port.signature.members.items():
            if member.is_port and member.flow == flow:
                sig = getattr(port, name)
                m.d.comb += sig.eq(AnySeq(len(sig)))

    def held(self, m: Module, valid: Value, ready: Value, payload: Value, name: str) -> Value:
        """True when the AXI rule holds for this handshake: a valid not taken stays, payload unchanged
        (from the second cycle: a handshake may start in the cycle after reset)."""
        pv = self.past(m, valid & ~ready, f"{name}_stall")
        pp = self.past(m, payload, f"{name}_payload")
        return ~self.past_ok | ~pv | (valid & (payload == pp))


# ---------------------------------------------------------------------------------------------
class StreamCoreHarness(_Harness):
    """:class:`ScorerCore` (stream ports) under every input the front end's contract allows."""

    name = "stream"

    def __init__(self, params: CoreParams, fault: str | None = None, *, dsp: bool = False,
                 free_tables: bool = False, props_only: bool = False) -> None:
        super().__init__(params, fault)
        self.core = ScorerCore(params, dsp=dsp)
        self.core.formal_hook = self._props
        self.core.formal_free_tables = free_tables
        #: With True the white-box invariants (``inv: ...``, what makes the induction work) are
        #: not asserted: a bounded check from reset needs only the properties.
        self.props_only = props_only
        self.in_cnt = Signal(32, name="in_cnt")
        self.out_cnt = Signal(32, name="out_cnt")
        self.push_in = Signal(32, name="push_in")
        self.push_out = Signal(32, name="push_out")

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        self._domain(m)
        core = m.submodules.core = self.core
        c = core.ctrl
        self.free_inputs(m, c, wiring.Flow.In)
        payload = core.i_stream.payload.as_value()
        m.d.comb += [core.i_stream.valid.eq(AnySeq(1)), payload.eq(AnySeq(len(payload))),
                     core.o_stream.ready.eq(AnySeq(1))]
        # the environment: an AXI-Stream source whose tags count the samples it delivers
        i, o = core.i_stream, core.o_stream
        m.d.comb += Assume(self.held(m, i.valid, i.ready, i.payload.as_value(), "in"))
        with m.If(i.valid):
            m.d.comb += Assume(i.payload.tag == self.in_cnt)
        with m.If(i.valid & i.ready):
            m.d.sync += self.in_cnt.eq(self.in_cnt + 1)
        with m.If(o.valid & o.ready):
            m.d.sync += self.out_cnt.eq(self.out_cnt + 1)
            m.d.comb += Assert(o.payload.tag == self.out_cnt, "stream order: result tag = input count")
        # the front end's contract (proved of RegisterFile by RegisterBusHarness)
        _front_end_contract(self, m, c, push_tag_counter=self.push_in)
        with m.If(c.push_valid & c.push_ready):
            m.d.sync += self.push_in.eq(self.push_in + 1)
        with m.If(c.result_valid):
            m.d.sync += self.push_out.eq(self.push_out + 1)
            m.d.comb += Assert(c.result_tag == self.push_out, "push order: result tag = push count")
        m.d.comb += Assert(self.held(m, o.valid, o.ready, o.payload.as_value(), "out"), "output holds while stalled")
        m.d.comb += [Cover(o.valid & o.ready & (o.payload.tag == 3) & c.active_bank),
                     Cover(c.result_valid & (self.out_cnt == 2))]
        return m

    def _props(self, m: Module, pr: dict[str, Any]) -> None:
        """Properties and invariants inside the core (its internal signals)."""
        core, c = self.core, self.core.ctrl
        fl, act = pr["flow"], pr["act"]
        n = fl.n_regs
        if self.fault == "ready_ignores_clear":       # the post-reset window, as the RTL once had it
            m.d.comb += core.i_stream.ready.eq(fl.open_ & ~c.push_valid)
        elif self.fault == "stall_ignores_full_buffer":
            # ``en`` and its copies are registers (ScorerCore._flow): held at 1, as a combinational
            # ``en = 1`` was before them
            m.d.sync += [e.eq(1) for e in _enables(fl)]
        stream_bits = fl.valid & ~fl.src_push
        push_bits = fl.valid & fl.src_push
        take = fl.take_push | fl.take_stream
        buf0, buf1 = pr["buffer"]
        inv = {
            "inv: pipe_empty = no valid stage": fl.pipe_empty == (fl.valid == 0),
            "inv: push_inflight = a pushed sample in a stage": fl.push_inflight == (push_bits != 0),
            "inv: buffer count <= 2": fl.fifo_cnt <= 2,
            "inv: samples in = out + buffered + in flight":
                self.in_cnt == (self.out_cnt + fl.fifo_cnt + popcount(stream_bits))[:32],
            "inv: pushes in = out + in flight": self.push_in == (self.push_out + popcount(push_bits))[:32],
            "inv: buffer entry 0 is the next result": (fl.fifo_cnt == 0) | (buf0.tag == self.out_cnt),
            "inv: buffer entry 1 follows it": (fl.fifo_cnt != 2) | (buf1.tag == (self.out_cnt + 1)[:32]),
            "inv: a model load only with the pipeline empty": ~pr["ld_valid"] | (c.commit_pending & fl.pipe_empty),
            "drained means the pipeline is empty": ~c.drained | fl.pipe_empty,
            "no sample in flight during the clear after reset": ~c.clearing | fl.pipe_empty,
        }
        if self.fault != "stall_ignores_full_buffer":   # the fault replaces the logic these describe
            inv.update(_enable_invariants(fl))
        for s in range(n):
            later = stream_bits[s + 1:] if s + 1 < n else Const(0, 1)
            later_p = push_bits[s + 1:] if s + 1 < n else Const(0, 1)
            inv[f"inv: stage {s} stream tag"] = ~stream_bits[s] | (
                pr["tag_pipe"][s] == (self.out_cnt + fl.fifo_cnt + popcount(later))[:32])
            inv[f"inv: stage {s} push tag"] = ~push_bits[s] | (
                pr["tag_pipe"][s] == (self.push_out + popcount(later_p))[:32])
        if self.props_only:
            inv = {name: v for name, v in inv.items() if not name.startswith("inv: ")}
        check(m, self.started, inv)
        # the model changes only while no sample is in the pipeline or entering it (COMMIT_THRESHOLD
        # changes the threshold at once, by design)
        model = Cat(*act.w, *act.off, *act.shift, act.cs.active_bank)
        if act.dsp is not None:
            model = Cat(model, *act.dsp.wlo, *act.dsp.up, *act.dsp.clo, *act.dsp.chi)
        busy = self.past(m, ~fl.pipe_empty | take, "busy")
        thr = Cat(act.cs.thr_active, act.cs.thr_frac)
        p_model, p_thr = self.past(m, model, "model"), self.past(m, thr, "thr")
        p_commit_thr = self.past(m, c.commit_threshold, "commit_thr")
        # the adaptive threshold steps as a result leaves the pipeline (hdl/adapt.py)
        p_step = self.past(m, act.cs.adapt_write, "adapt_step")
        check(m, self.started & busy, {
            "atomic swap: the model holds while a sample is in flight": model == p_model,
            "atomic swap: the threshold holds while a sample is in flight (but COMMIT_THRESHOLD or an "
            "adaptive step)": p_commit_thr | p_step | (thr == p_thr)})
        for k, (en, bank) in enumerate(pr["table_writes"]):
            m.d.comb += Assert(~(en & (bank == act.cs.active_bank)) | (fl.pipe_empty & ~take),
                               f"atomic swap: no write into table {k}'s active bank with a sample in flight")


def _enables(fl: Any) -> list[Signal]:
    """``en`` of the streaming core and its copies for the datapath (:meth:`ScorerCore._flow`)."""
    out: list[Signal] = []
    for e in [fl.en, *fl.lane_en, fl.x_en, fl.side_en, *fl.tree_en]:
        if all(e is not o for o in out):
            out.append(e)
    return out


def _enable_invariants(fl: Any) -> dict[str, Value]:
    """``en`` is a register computed one cycle early (:meth:`ScorerCore._flow`): it equals
    ``fifo_cnt < 2 or not valid[-1]`` in every cycle, and every copy of it equals it."""
    inv = {"inv: en = buffer has room or last stage empty": fl.en == ((fl.fifo_cnt < 2) | ~fl.valid[-1])}
    for e in _enables(fl)[1:]:
        inv[f"inv: {e.name} = en"] = e == fl.en
    return inv


def _front_end_contract(h: _Harness, m: Module, c: Any, push_tag_counter: Signal | None = None) -> None:
    """Assume what :class:`RegisterFile` guarantees the core (RegisterBusHarness proves it):
    the clear runs first and ends once, table clears only during it; a PUSH is held with its
    operands until taken (and, the folded core, until its result); the commit copy only while the
    core is drained, never together with ``commit_done``."""
    clear_on = Signal(init=1, name="env_clear_on")
    with m.If(~c.clearing):
        m.d.sync += clear_on.eq(0)
    m.d.comb += [Assume(~c.clearing | clear_on), Assume(~Initial() | c.clearing),
                 Assume(~c.table_clear | (c.clearing & c.table_we)), Assume(~c.push_valid | ~c.clearing),
                 Assume(~c.load_valid | c.drained), Assume(~c.commit_done | c.drained),
                 Assume(~(c.load_valid & c.commit_done))]
    m.d.comb += Assume(h.held(m, c.push_valid, c.push_ready, Cat(c.push_tag, c.push_features), "push"))
    if push_tag_counter is not None:
        with m.If(c.push_valid):
            m.d.comb += Assume(c.push_tag == push_tag_counter)


# ---------------------------------------------------------------------------------------------
class FoldedCoreHarness(_Harness):
    """:class:`FoldedScorerCore` under every input the front end's contract allows."""

    name = "folded"

    def __init__(self, params: CoreParams, fault: str | None = None) -> None:
        super().__init__(params, fault)
        self.core = FoldedScorerCore(params)
        self.core.formal_hook = self._props
        self.inflight = Signal(name="inflight")
        self.age = Signal(range(self.core.latency + 2), name="age")
        self.tag_taken = Signal(32, name="tag_taken")

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        self._domain(m)
        core = m.submodules.core = self.core
        c = core.ctrl
        self.free_inputs(m, c, wiring.Flow.In)
        _front_end_contract(self, m, c)
        # the front end holds FEATURE/TAG while a pushed sample is in the lane (operand writes wait)
        ops = Cat(c.push_tag, c.push_features)
        p_ops = self.past(m, ops, "ops")
        with m.If(self.past_ok & c.push_inflight):   # a push may be taken in the cycle after reset
            m.d.comb += Assume(ops == p_ops)
        take = c.push_valid & c.push_ready
        with m.If(take):
            m.d.sync += [self.inflight.eq(1), self.age.eq(0), self.tag_taken.eq(c.push_tag)]
        with m.Elif(self.inflight & (self.age <= self.core.latency)):
            m.d.sync += self.age.eq(self.age + 1)
        with m.If(c.result_valid):
            m.d.sync += self.inflight.eq(0)
            m.d.comb += [Assert(self.inflight, "push: a result only for a sample taken"),
                         Assert(self.age == self.core.latency - 1, "push: the result comes after the latency"),
                         Assert(c.result_tag == self.tag_taken, "push: the result carries the sample's tag")]
        m.d.comb += [Assert(~self.inflight | (self.age < self.core.latency), "push: no result lost"),
                     Assert(~take | ~c.commit_pending, "atomic swap: no sample taken while a commit is pending"),
                     Cover(c.result_valid & c.active_bank)]
        return m

    def _props(self, m: Module, pr: dict[str, Any]) -> None:
        iss, cs = pr["issue"], pr["cs"]
        c = self.core.ctrl
        if self.fault == "push_during_commit":
            m.d.comb += pr["take_push"].eq(c.push_valid & ~iss.busy)
        check(m, self.started, {
            "inv: busy = a sample in the lane": iss.busy == self.inflight,
            "drained means the lane is empty": ~c.drained | ~iss.busy,
            "inv: issuing only while busy": ~iss.issuing | iss.busy,
            "inv: the projection issued is the sample's age": ~iss.issuing | (iss.k_issue == self.age),
            "inv: issue ends after K projections": iss.issuing | ~iss.busy | (self.age >= self.params.k),
            "atomic swap: the active model memory is written only with the lane empty": ~pr["active_write"] | ~iss.busy,
        })
        busy = self.past(m, iss.busy | pr["take_push"], "busy")
        p_bank = self.past(m, cs.active_bank, "bank")
        check(m, self.started & busy,
              {"atomic swap: the bank holds while a sample is in the lane": cs.active_bank == p_bank})
        en, bank = pr["table_write"]
        m.d.comb += Assert(~(en & (bank == cs.active_bank)) | ~(iss.busy | pr["take_push"]),
                           "atomic swap: no write into the active bank with a sample in the lane")


# ---------------------------------------------------------------------------------------------
class RegisterBusHarness(_Harness):
    """AXI4-Lite slave + :class:`RegisterFile` + the streaming core, under any legal AXI master,
    sample source and result sink."""

    name = "regbus"

    def __init__(self, params: CoreParams, fault: str | None = None, *, wait_limit: int = WAIT_LIMIT) -> None:
        super().__init__(params, fault)
        self.core = ScorerCore(params, dsp=False)
        self.regs = RegisterFile(params, self.core.latency, self.core.clear_cycles, wait_limit=wait_limit)
        self.axil = AXI4LiteSlave()
        self.regs.formal_hook = self._regs_props
        self.axil.formal_hook = self._axi_props
        self.core.formal_hook = self._core_props
        #: Most cycles from a request's handshake to its response: the wait limit, at most one
        #: commit copy (K + 3 cycles) or the clear of the shadow memories (K) per request, the
        #: slave's and the front end's own cycles (proved; 10 fails the induction).
        self.bound = wait_limit + params.k + 11
        self.age = Signal(range(self.bound + 2), name="age")
        self._fe: dict[str, Any] = {}
        self._axi_state: Signal | None = None
        self._invariants_added = False
        self._counting: Signal | None = None

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        self._domain(m)
        core = m.submodules.core = self.core
        regs = m.submodules.regs = self.regs
        axil = m.submodules.axil = self.axil
        wiring.connect(m, regs.ctrl, core.ctrl)
        wiring.connect(m, axil.bus, regs.bus)
        a = axil.axil
        self.free_inputs(m, a, wiring.Flow.In)
        payload = core.i_stream.payload.as_value()
        m.d.comb += [core.i_stream.valid.eq(AnySeq(1)), payload.eq(AnySeq(len(payload))),
                     core.o_stream.ready.eq(AnySeq(1))]
        # a legal AXI4-Lite master: a valid stays until taken, its payload unchanged
        m.d.comb += [Assume(self.held(m, a.awvalid, a.awready, a.awaddr, "aw")),
                     Assume(self.held(m, a.wvalid, a.wready, Cat(a.wdata, a.wstrb), "w")),
                     Assume(self.held(m, a.arvalid, a.arready, a.araddr, "ar")),
                     Assume(self.held(m, core.i_stream.valid, core.i_stream.ready,
                                      core.i_stream.payload.as_value(), "in"))]
        # the slave: a response stays until taken
        m.d.comb += [Assert(self.held(m, a.bvalid, a.bready, a.bresp, "b"), "AXI: bvalid/bresp hold until taken"),
                     Assert(self.held(m, a.rvalid, a.rready, Cat(a.rdata, a.rresp), "r"),
                            "AXI: rvalid/rdata hold until taken")]
        c = regs.ctrl
        # the contract the core harnesses assume, kept by the front end
        push_held = self.held(m, c.push_valid, c.push_ready, Cat(c.push_tag, c.push_features), "push")
        check(m, self.started, {
            "contract: no PUSH during the clear": ~c.push_valid | ~c.clearing,
            "contract: commit loads only when drained": ~c.load_valid | c.drained,
            "contract: commit_done only when drained": ~c.commit_done | c.drained,
            "contract: no load with commit_done": ~(c.load_valid & c.commit_done),
            "contract: table clears only during the clear": ~c.table_clear | (c.clearing & c.table_we),
            "contract: a PUSH holds with its operands until taken": push_held,
            "no stream sample taken during the clear": ~core.i_stream.ready | ~c.clearing})
        # the age of the request in flight: from its handshake to its response
        start = (a.awvalid & a.awready) | (a.arvalid & a.arready)
        responding = a.bvalid | a.rvalid
        counting = Signal(name="counting")
        with m.If(start):
            m.d.sync += [counting.eq(1), self.age.eq(1)]
        with m.Elif(responding):
            m.d.sync += [counting.eq(0), self.age.eq(0)]
        with m.Elif(counting & (self.age <= self.bound)):
            m.d.sync += self.age.eq(self.age + 1)
        self._counting = counting
        m.d.comb += [Assert(self.age <= self.bound, "every AXI4-Lite request answered within the bound"),
                     Cover(a.bvalid & (a.bresp != 0) & (self.age > 4 + 2 * self.params.k))]
        return m

    def _axi_props(self, m: Module, pr: dict[str, Any]) -> None:
        self._axi_state = pr["state"]
        self._bus_invariants(m)

    def _regs_props(self, m: Module, pr: dict[str, Any]) -> None:
        self._fe = pr
        if self.fault == "no_time_out":
            m.d.sync += pr["access"].waited.eq(0)
        self._bus_invariants(m)

    def _core_props(self, m: Module, pr: dict[str, Any]) -> None:
        """The core's own invariants that the front end's contract depends on (its registered
        "pipeline empty" and "push in flight" flags)."""
        fl, c = pr["flow"], self.core.ctrl
        check(m, ~Initial(), {
            "inv: core pipe_empty = no valid stage": fl.pipe_empty == (fl.valid == 0),
            "inv: core push_inflight = a pushed sample in a stage": fl.push_inflight == ((fl.valid & fl.src_push) != 0),
            "inv: core buffer count <= 2": fl.fifo_cnt <= 2,
            "inv: core no sample in flight during the clear": ~c.clearing | fl.pipe_empty,
            "inv: core load only when drained": ~pr["ld_valid"] | c.drained,
            **{name.replace("inv: ", "inv: core ", 1): v for name, v in _enable_invariants(fl).items()},
        })

    def _bus_invariants(self, m: Module) -> None:
        """How long the request in flight has taken so far, by the state of the slave and the front
        end (added by whichever of the two hooks runs second: both states are known then).

        ``spent`` counts the cycles the front end held the request up (a commit's copy, the clear
        of the shadow memories, a copy after the time-out); each phase of the access bounds
        ``age`` by its own cycles + ``waited`` + ``spent``, and ``spent`` is bounded because a
        request meets at most one copy (after it, no commit can be pending until the access
        itself executes) or the clear (no commit is pending then).  Checked from the second
        cycle (``~Initial()``), so that the induction has every step constrained."""
        st = self._axi_state
        if st is None or not self._fe or self._invariants_added:
            return
        self._invariants_added = True
        if self.fault is not None:
            return   # they describe the shipped design: a fault job shows that the bound itself fails
        acc, clr, c, a = self._fe["access"], self._fe["clear"], self.core.ctrl, self.axil.axil
        k = self.params.k
        kc = self.params.k      # cycles of the shadow-memory clear
        fs, age, counting = acc.state, self.age, self._counting
        assert counting is not None     # set by elaborate, which runs before the hooks
        idle, decode, read, execute, copy = 0, 1, 2, 3, 4
        w_req, w_wait, w_resp, r_req, r_wait, r_resp = 2, 3, 4, 6, 7, 8
        top = 1 << (len(acc.waited) - 1)
        in_req = (st == w_req) | (st == r_req)
        in_wait = (st == w_wait) | (st == r_wait)
        in_resp = (st == w_resp) | (st == r_resp)
        start = (a.awvalid & a.awready) | (a.arvalid & a.arready)
        # cycles the request in flight was held up by the front end (a commit's copy, the clear of
        # the shadow memories): at most one copy or the clear per request
        spent = Signal(range(2 * (k + kc) + 16), name="spent")
        copied = Signal(name="copied")
        sat = acc.waited[-1]
        stall = (fs == copy) | (in_req & (acc.start_copy | clr.mem_clearing)) | ((fs == execute) & acc.start_copy & sat)
        nohit = acc.hits == 0
        with m.If(start):
            m.d.sync += [spent.eq(0), copied.eq(0)]
        with m.Elif(counting & stall & (spent < k + kc + 8)):
            m.d.sync += spent.eq(spent + 1)
        with m.If(~start & counting & (fs == copy)):
            m.d.sync += copied.eq(1)
        pending = in_req | (in_wait & ((fs == decode) | (fs == read) | (fs == execute) | (fs == copy)))
        done = in_wait & (fs == idle) | (in_wait & (fs == copy) & ~acc.resume)
        inv = {
            "slave state": st <= 8, "front end state": fs <= copy, "waited": acc.waited <= top,
            "copy count": acc.copy_cnt <= k + 1,
            "copy count only in COPY": (fs == copy) | (acc.copy_cnt == 0),
            "a request waits in REQ only with the front end idle or copying": ~in_req | (fs == idle) | (fs == copy),
            "an access in the front end only while the slave waits for it": (fs == idle) | (fs == copy) | in_wait,
            "a copy that interrupts an access only while the slave waits": (fs != copy) | ~acc.resume | in_wait,
            "the slave waits in COPY only for an interrupted access": ~(in_wait & (fs == copy)) | acc.resume,
            "the slave waits with the front end idle only for the response": ~(in_wait & (fs == idle)) | acc.resp_valid,
            "a response only while the slave waits": ~acc.resp_valid | in_wait,
            "a response only with the access done": ~acc.resp_valid | (fs == idle) | ((fs == copy) & ~acc.resume),
            "go only in EXEC": ~acc.go | (fs == execute),
            "counting while a request is in flight": ~(pending | done) | counting,
            "counting only while a request is in flight or answered": ~counting | pending | done | in_resp,
            "age 0 when not counting": counting | (age == 0),
            "age in the response": ~in_resp | (age <= self.bound),
            "mem clear only early in the clear": ~clr.mem_clearing | (clr.clearing & (clr.ccnt < kc)),
            "mem clear ends at K": clr.mem_clearing | ~clr.clearing | (clr.ccnt >= kc),
            "clear counter": ~clr.clearing | (clr.ccnt <= self.regs.clear_cycles),
            "no access during the mem clear": ~clr.mem_clearing | (fs == idle),
            "no copy during the clear": ~clr.clearing | (fs != copy),
            "no commit pending during the mem clear": ~clr.mem_clearing | ~c.commit_pending,
            "no copy seen during the clear": ~clr.clearing | ~copied,
            "the copy only while drained": (fs != copy) | c.drained,
            "a copy request only while drained": ~acc.copy_req | c.drained,
            "after a copy no commit pending until the access executes":
                ~(copied & pending & (fs != copy)) | ~c.commit_pending | c.commit_done,
            "a request held up by the clear sees no commit pending":
                ~(~copied & pending & (fs != copy) & (spent != 0)) | ~c.commit_pending,
            "spent in a copy": ~(pending & (fs == copy)) | (spent <= acc.copy_cnt + 1),
            "spent after a copy": ~(copied & pending & (fs != copy)) | (spent <= k + 3),
            "spent without a copy": ~(~copied & pending & (fs != copy)) | (spent <= kc + 1),
            "age in REQ": ~in_req | (age <= 1 + spent),
            "age in DECODE": ~(in_wait & (fs == decode)) | (age <= 2 + spent),
            "age in READ": ~(in_wait & (fs == read)) | (age <= 3 + spent),
            "age in EXEC": ~(in_wait & (fs == execute) & ~(sat & nohit)) | (age <= 4 + acc.waited + spent),
            "age in EXEC after the time-out": ~(in_wait & (fs == execute) & sat & nohit & ~acc.go)
            | (age <= 5 + acc.waited + spent),
            "age in EXEC after the time-out, go": ~(in_wait & (fs == execute) & sat & nohit & acc.go)
            | (age <= 6 + acc.waited + spent),
            "age in an interrupting COPY": ~(in_wait & (fs == copy) & ~nohit) | (age <= 4 + acc.waited + spent),
            "age in an interrupting COPY after the time-out": ~(in_wait & (fs == copy) & nohit)
            | (age <= 5 + acc.waited + spent),
            "an access to no register waits only after its time-out": ~((fs == execute) & ~acc.go & nohit) | sat,
            "a copy interrupts an access to no register only after its time-out":
                ~((fs == copy) & acc.resume & nohit) | sat,
            "age after EXEC": ~done | (age <= 7 + acc.waited + spent),
            "age, spent bound": spent <= k + kc + 8,
        }
        check(m, ~Initial(), {f"inv: bus {n}": v for n, v in inv.items()})


# ---------------------------------------------------------------------------------------------
class SPIBridgeHarness(_Harness):
    """:class:`SPIRegisterBridge` against any legal SPI master (mode 0, ``sck`` at most
    ``clk / 4``) and a bus that accepts and answers within :data:`SPI_BUS_BOUND` clocks.

    The frame is decoded from the pins two clocks late, as the bridge sees them through its
    synchronisers (the same bits, each sampled where the master sent it; MISO as the master
    sampled it at the pin); the bridge's bit and byte counters, phase, shift registers and address
    are then functions of what the harness has decoded, which the white-box invariants state.  A
    frame has at most :attr:`max_bits` bits (127: a read of two words, a write of three), which
    keeps the harness's counters exact."""

    name = "spi"

    def __init__(self, params: CoreParams, fault: str | None = None, *, bus_bound: int | None = None,
                 max_bits: int = 127, props_only: bool = False) -> None:
        super().__init__(params, fault)
        self.bridge = SPIRegisterBridge()
        self.bridge.formal_hook = self._props
        self.bus_bound = SPI_BUS_BOUND if bus_bound is None else bus_bound
        self.max_bits = max_bits
        self.props_only = props_only
        self.s: dict[str, Any] = {}

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        self._domain(m)
        br = m.submodules.bridge = self.bridge
        spi, bus = br.spi, br.bus
        sck, cs_n, mosi = Signal(name="pin_sck"), Signal(name="pin_cs_n"), Signal(name="pin_mosi")
        m.d.comb += [sck.eq(AnySeq(1)), cs_n.eq(AnySeq(1)), mosi.eq(AnySeq(1)),
                     spi.sck.eq(sck), spi.cs_n.eq(cs_n), spi.mosi.eq(mosi)]
        # the master: sck holds each level >= 2 clocks; cs_n and mosi change only while sck is low
        p_sck, p_cs, p_mosi = self.past(m, sck, "sck"), self.past(m, cs_n, "cs"), self.past(m, mosi, "mosi")
        level = Signal(2, name="sck_level_cycles")
        with m.If(sck != p_sck):
            m.d.sync += level.eq(0)
        with m.Elif(level < 3):
            m.d.sync += level.eq(level + 1)
        # cs_n: high >= 4 clocks between frames, low >= 2 clocks before the first sck edge (a
        # set-up and a gap of half a sck period at the fastest sck; spidev's are microseconds)
        cs_level = Signal(3, name="cs_level_cycles")
        with m.If(cs_n != p_cs):
            m.d.sync += cs_level.eq(0)
        with m.Elif(cs_level < 7):
            m.d.sync += cs_level.eq(cs_level + 1)
        with m.If(self.started):
            m.d.comb += [Assume((sck == p_sck) | (level >= 1)),
                         Assume(((cs_n == p_cs) & (mosi == p_mosi)) | (~sck & ~p_sck)),
                         Assume((cs_n == p_cs) | ~p_cs | (cs_level >= 3)),
                         Assume(~(sck & ~p_sck) | ((cs_n == p_cs) & (cs_level >= 1)))]
        m.d.comb += [Assume(~(cs_n & sck)), Assume(~Initial() | cs_n)]
        # the pins two clocks late (sck three: its edge), as the bridge's synchronisers see them
        s2, s3 = self._delay(m, sck, 3, "sck")[1:]
        c2 = self._delay(m, cs_n, 2, "cs", init=1)[1]
        mo2 = self._delay(m, mosi, 2, "mosi")[1]
        mi2 = self._delay(m, spi.miso, 2, "miso")[1]
        rise = Signal(name="frame_rise")
        m.d.comb += rise.eq(s2 & ~s3 & ~c2)
        gap = Signal(2, init=3, name="cycles_since_rise")   # saturating at 3
        with m.If(rise):
            m.d.sync += gap.eq(0)
        with m.Elif(gap != 3):
            m.d.sync += gap.eq(gap + 1)
        # the bus: one request at a time, accepted and answered within bus_bound clocks in all (the
        # front end answers in a few clocks unless an access waits for the pipeline)
        outstanding = Signal(name="outstanding")
        wait = Signal(range(64), name="bus_wait")
        ready, resp = AnySeq(1), AnySeq(1)
        m.d.comb += [bus.req_ready.eq(ready & ~outstanding), bus.resp_valid.eq(resp & outstanding),
                     bus.resp_data.eq(AnySeq(32)), bus.resp_err.eq(AnySeq(1))]
        with m.If(bus.req_valid & bus.req_ready):
            m.d.sync += outstanding.eq(1)
        with m.Elif(bus.resp_valid):
            m.d.sync += outstanding.eq(0)
        pending = Signal(name="bus_pending")
        m.d.comb += pending.eq(bus.req_valid | outstanding)
        with m.If(pending):
            m.d.comb += Assume(wait <= self.bus_bound)
        with m.If(pending & ~bus.resp_valid):   # the clocks since the request in flight was issued
            m.d.sync += wait.eq(wait + 1)
        with m.Else():
            m.d.sync += wait.eq(0)
        # the frame as the master sent it
        bits = Signal(range(128), name="frame_bits")
        sh = Signal(32, name="mosi_bits")
        miso = Signal(32, name="miso_bits")
        cmd = Signal(8, name="frame_cmd")
        addr = Signal(16, name="frame_addr")
        word = Signal(32, name="frame_word")
        words = Signal(3, name="frame_words")     # whole words written so far
        issued = Signal(3, name="bus_writes")     # write requests issued so far
        first_read = Signal(32, name="first_read")
        read_asked = Signal(name="read_asked")
        read_answered = Signal(name="read_answered")
        m.d.comb += Assume(~rise | (bits < self.max_bits))
        with m.If(c2):
            m.d.sync += [bits.eq(0), words.eq(0), issued.eq(0), read_asked.eq(0), read_answered.eq(0)]
        with m.Elif(rise):
            m.d.sync += [sh.eq(Cat(mo2, sh[:31])), bits.eq(bits + 1), miso.eq(Cat(mi2, miso[:31]))]
            with m.If(bits == 7):
                m.d.sync += cmd.eq(Cat(mo2, sh[:7]))
            with m.If(bits == 23):
                m.d.sync += addr.eq(Cat(mo2, sh[:15]))
            with m.If((bits >= 24) & (bits[:5] == 23) & (cmd == CMD_WRITE)):   # bit 31 of a data word
                m.d.sync += [word.eq(Cat(mo2, sh[:31])), words.eq(words + 1)]
        with m.If(~c2 & (bits == 8)):
            m.d.comb += Assert(miso[:8] == SYNC_BYTE, "SPI: the first MISO byte is the sync byte")
        # every request holds until taken; a new one: a write is a whole word of this frame, at the
        # frame's address + 4 per word; the first read is for the frame's address
        req = Cat(bus.req_write, bus.req_addr, bus.req_data)
        m.d.comb += Assert(self.held(m, bus.req_valid, bus.req_ready, req, "req"),
                           "SPI: a request holds until the bus takes it")
        waiting = self.past(m, bus.req_valid & ~bus.req_ready, "req_waiting")
        new = Signal(name="new_request")
        m.d.comb += new.eq(bus.req_valid & ~(self.past_ok & waiting))
        with m.If(new & bus.req_write):
            m.d.comb += [Assert(~c2 & (cmd == CMD_WRITE), "SPI: writes only in a write frame"),
                         Assert(issued + 1 == words, "SPI: one write per whole word"),
                         Assert(bus.req_data == word, "SPI: the word written is the word sent"),
                         Assert(bus.req_addr == (addr + 4 * issued)[:16], "SPI: word i goes to address + 4 i")]
            m.d.sync += issued.eq(issued + 1)
        with m.If(new & ~bus.req_write):
            m.d.comb += Assert(~c2 & (cmd == CMD_READ), "SPI: reads only in a read frame")
            with m.If(~read_asked):
                m.d.comb += Assert(bus.req_addr == addr, "SPI: the first read is of the frame's address")
                m.d.sync += read_asked.eq(1)
        with m.If(bus.resp_valid & read_asked & ~read_answered & ~c2):
            m.d.sync += [first_read.eq(bus.resp_data), read_answered.eq(1)]
        with m.If(~c2 & (cmd == CMD_READ) & (bits == 64) & read_answered):
            m.d.comb += Assert(miso == first_read, "SPI: the first word read is the bus's answer")
        m.d.comb += [Cover(bus.req_valid & bus.req_ready & bus.req_write),
                     Cover(~c2 & (cmd == CMD_READ) & (bits == 64))]
        # what the invariants need: rises since the last new request (saturating at 15), whether
        # that request was issued in this frame
        req_rises = Signal(4, name="rises_since_request")
        req_frame = Signal(name="request_in_frame")
        with m.If(new):
            m.d.sync += [req_rises.eq(0), req_frame.eq(1)]
        with m.Elif(rise & (req_rises != 15)):
            m.d.sync += req_rises.eq(req_rises + 1)
        with m.If(c2):
            m.d.sync += req_frame.eq(0)
        self.s = dict(rise=rise, gap=gap, c2=c2, pending=pending, outstanding=outstanding, wait=wait, bits=bits,
                      sh=sh, miso=miso, cmd=cmd, addr=addr, word=word, words=words, issued=issued,
                      first_read=first_read, read_asked=read_asked, read_answered=read_answered, new=new,
                      req_rises=req_rises, req_frame=req_frame)
        return m

    def _delay(self, m: Module, v: Value, n: int, name: str, init: int = 0) -> list[Signal]:
        """``v`` delayed by 1..n clocks."""
        out = []
        for i in range(n):
            r = Signal(init=init, reset_less=True, name=f"{name}_d{i + 1}")
            m.d.sync += r.eq(v)
            out.append(r)
            v = r
        return out

    def _props(self, m: Module, pr: dict[str, Any]) -> None:
        """The white-box invariants: the bridge's state as a function of the frame decoded so far."""
        if self.props_only:
            return
        s, bus = self.s, self.bridge.bus
        bits, cmd, phase, cnt = s["bits"], s["cmd"], pr["phase"], pr["cnt"]
        w, r = cmd == CMD_WRITE, cmd == CMD_READ
        new_w = s["new"] & bus.req_write
        req_frame = s["req_frame"] | s["new"]
        read_asked = s["read_asked"] | (s["new"] & ~bus.req_write)
        rises = Mux(s["new"], 0, s["req_rises"])
        fr, tx, mrec = s["first_read"], pr["tx"], s["miso"]
        inv: dict[str, Value] = {
            "inv: rx = the MOSI bits": pr["rx"] == s["sh"],
            "inv: cs_n as the bridge sees it": pr["cs_n"] == s["c2"],
            "inv: the bridge's rise is the frame's": pr["rise"] == s["rise"],
            "inv: a rise 4 clocks after the last at the earliest": ~s["rise"] | (s["gap"] == 3),
            "inv: command byte": (bits >= 8) | ((phase == Phase.CMD) & (cnt == bits)),
            "inv: ignored frame": (bits < 8) | w | r | ((phase == Phase.IGNORE) & (cnt == 0)),
            "inv: address": (bits < 8) | (bits >= 24) | ~(w | r)
            | ((phase == Phase.ADDR) & (cnt == bits - 8) & (pr["is_read"] == r)),
            "inv: write data": (bits < 24) | ~w | ((phase == Phase.WDATA) & (cnt == (bits - 24)[:5]) & ~pr["is_read"]
                                                  & (s["words"] == (bits - 24)[5:])
                                                  & (pr["addr"] == (s["addr"] + 4 * s["words"])[:16])),
            "inv: dummy byte": (bits < 24) | (bits >= 32) | ~r
            | ((phase == Phase.DUMMY) & (cnt == bits - 24) & pr["is_read"] & (pr["addr"] == (s["addr"] + 4)[:16])),
            "inv: read data": (bits < 32) | ~r | ((phase == Phase.RDATA) & (cnt == (bits - 32)[:5]) & pr["is_read"]
                                                 & (pr["addr"] == (s["addr"] + 8 + 4 * (bits - 32)[5:])[:16])),
            "inv: MISO before the read data": ((bits >= 32) & r) | (tx == (Const(SYNC_BYTE << 24, 32) << bits)[:32]),
            "inv: whole words": s["words"] == Mux(w & (bits >= 24), (bits - 24)[5:], 0),
            "inv: one write request per whole word": s["issued"] + new_w == s["words"],
            "inv: one request at a time": ~(bus.req_valid & s["outstanding"]),
            "inv: bus wait": ~s["pending"] | (s["wait"] >= 4 * rises + s["gap"]),
            "inv: a new request only right after a rise": ~s["new"] | (s["gap"] == 0),
            "inv: a request of this frame is as old as the bit counter": ~s["pending"] | ~req_frame
            | (rises == cnt),
            "inv: a request of this frame only after the address of a read or write":
                ~(s["pending"] & req_frame) | ((bits >= 24) & (w | r)),
            "inv: a request of an earlier frame is older": ~s["pending"] | req_frame | (rises >= bits),
            "inv: the first read asked only after the address of a read": ~s["read_asked"] | (r & (bits >= 24)),
            "inv: the first read answered only once asked": ~s["read_answered"] | s["read_asked"],
            "inv: the first read is asked or answered": (bits < 24) | ~r | read_asked,
            "inv: the first read, answered before the data": (bits < 32) | ~r | s["read_answered"],
            "inv: the first read, answered, in the buffer": (bits < 24) | (bits >= 32) | ~r | ~s["read_answered"]
            | (~s["pending"] & (pr["rbuf"] == fr)),
            "inv: the first read, asked, not answered": (bits < 24) | (bits >= 32) | ~r | s["read_answered"]
            | (s["pending"] & req_frame),
        }
        for j in range(1, 9):
            inv[f"inv: MISO bit {j} of the sync byte"] = (bits != j) | (mrec[:j] == SYNC_BYTE >> (8 - j))
        for j in range(32):
            inv[f"inv: read word bit {j}"] = (bits != 32 + j) | ~r | ((tx == Cat(Const(0, j), fr[:32 - j])[:32])
                                                                     & ((j == 0) | (mrec[:j] == fr[32 - j:])))
        for n, flag in pr["at"].items():
            inv[f"inv: cnt flag {n} at a rise"] = ~s["rise"] | (flag == (cnt == n))
        inv["inv: write issue flag at a rise"] = ~s["rise"] | (pr["iss_w"] == ((phase == Phase.WDATA) & (cnt == 31)))
        inv["inv: read issue flag at a rise"] = ~s["rise"] | (pr["iss_r"] == (
            ((phase == Phase.ADDR) & (cnt == 15) & pr["is_read"]) | ((phase == Phase.DUMMY) & (cnt == 7))
            | ((phase == Phase.RDATA) & (cnt == 31))))
        check(m, self.started, inv)


# ---------------------------------------------------------------------------------------------
class RouteIntervalsHarness(_Harness):
    """:class:`RouteIntervals` alone (``size``: :attr:`SIZES`; ``pipelined``: either form) against
    a shadow of :func:`mailpulse.hdl.reference.route_intervals` written here: the reference's
    one-step update of a route's bounds and flags, on the same inputs, with ``HI = (2**value_bits
    - 1) << ADAPT_FRAC``.

    The environment (the unit's input contract, as both cores drive it): ``ratio``/``step_exp``
    any value, changing at will but (single-cycle) still for three cycles before an event or
    (pipelined, with ``enable``) still from ``start`` to ``valid``; ids, values, seeds (any route
    index, any value) and reads free.
    Single-cycle: an event any cycle, a seed any cycle (in an event's cycle it comes after the
    event, as the unit documents).  Pipelined: ``start`` with no event in flight, ``route``/``value``
    still from the cycle before ``start`` to ``valid``, ``valid`` at least
    :attr:`RouteIntervals.PIPE_CYCLES` cycles after ``start`` (or, ``max_flight``, at most that
    many; 0: no bound), seeds any cycle (one that lands - a cycle after its strobe - before
    ``start`` comes before the event, any later one after it).  The shadow steps at ``valid``
    (single-cycle) or ``start`` (pipelined: the unit writes at ``valid``; in between the white-box
    invariants relate the two: the unit holds the pre-event bounds, the shadow their step).
    """

    name = "routes"

    #: ``size`` -> (routes, value bits, id bits): ``small`` for ``make test``; ``wide`` (the soak):
    #: R = 3 (a seed or read index that names no route) with the shipped 16-bit values and ids;
    #: ``r16``: the shipped unit (R = 16).
    SIZES: ClassVar[dict[str, tuple[int, int, int]]] = {"small": (2, 4, 3), "wide": (3, 16, 16),
                                                        "r16": (16, 16, 16)}

    def __init__(self, params: CoreParams, fault: str | None = None, *, pipelined: bool = False, size: str = "small",
                 max_flight: int = 0, props_only: bool = False) -> None:
        super().__init__(params, fault)
        routes, value_bits, route_bits = self.SIZES[size]
        #: True: the white-box invariants (``inv: ...``) are not asserted (a bounded check from reset
        #: needs only the properties; a fault job then shows the property itself failing).
        self.props_only = props_only
        if fault in ("range_check_off_pipelined", "seed_lost_pipelined") and not pipelined:
            raise ValueError(f"fault {fault!r} is one of the pipelined form")
        self.unit = RouteIntervals(routes, route_bits, value_bits, pipelined=pipelined)
        self.unit.formal_hook = self._faults
        self.routes = routes
        #: The longest event (``start`` to ``valid``); 0: no bound (``age`` saturates).
        self.max_flight = max_flight and max(max_flight, RouteIntervals.PIPE_CYCLES)
        self.hi = ((1 << value_bits) - 1) << ADAPT_FRAC

    def _faults(self, m: Module, pr: dict[str, Any]) -> None:
        """The faults (:data:`FAULTS`: one statement of the unit overridden), then the properties."""
        self.probes = pr
        self._fault(m, pr)
        self._props(m, pr)

    def _fault(self, m: Module, pr: dict[str, Any]) -> None:
        u, f = self.unit, self.fault
        trs = pr["trackers"]
        if f == "miss_direction_swapped":      # the upper bound widens after a hit, narrows after a miss
            m.d.comb += trs["upper"].up.eq(~(pr["above_r"] if u.pipelined else u.above))
        elif f == "no_upper_clamp":            # the upper tracker's limit left at the accumulator's top
            m.d.comb += trs["upper"].hi.eq(-1)
        elif f == "range_check_off":           # an id at or above R taken as in range
            m.d.comb += pr["in_range"].eq(1)
        elif f == "range_check_off_pipelined":  # the id's low bits name a route: ids alias
            m.d.sync += pr["inr_r"].eq(1)
        elif f == "seed_uncapped":             # a seed above HI lands as it is
            if u.pipelined:
                m.d.sync += pr["seed"].value.eq(u.seed_value)
            else:
                sd = pr["seed"]
                for r in range(self.routes):
                    with m.If(sd.we & (sd.route == r) & sd.side):
                        m.d.sync += pr["upper"][r].eq(u.seed_value)
                    with m.If(sd.we & (sd.route == r) & ~sd.side):
                        m.d.sync += pr["lower"][r].eq(u.seed_value)
        elif f == "seed_lost":                 # the event's update wins over a seed of its cycle
            for r in range(self.routes):
                with m.If(pr["act"] & (u.route == r)):
                    m.d.sync += [pr["upper"][r].eq(pr["up_next"]), pr["lower"][r].eq(pr["lo_next"])]
        elif f == "seed_lost_pipelined":       # a seed during an event is overwritten by its write-back
            m.d.sync += [pr["keep_lo"].eq(1), pr["keep_up"].eq(1)]

    @staticmethod
    def _clamp(v: Value, hi: int) -> Value:
        """:func:`mailpulse.hdl.reference.clamp` ``(v, 0, hi)`` of a signed value (upper limit first)."""
        return Mux(v > hi, hi, Mux(v < 0, 0, v))

    def _step(self, lo: Value, up: Value, value: Value, big: Value, small: Value) -> tuple[Value, ...]:
        """The reference's one-step update of a route: ``(below, above, lower', upper')``."""
        below, above = value < (lo >> ADAPT_FRAC), value > (up >> ADAPT_FRAC)
        los, ups = Cat(lo, 0).as_signed(), Cat(up, 0).as_signed()
        up_n = self._clamp(Mux(above, ups + big, ups - small), self.hi)
        lo_n = self._clamp(Mux(below, los - big, los + small), self.hi)
        return below, above, lo_n, up_n

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        self._domain(m)
        u = m.submodules.unit = self.unit
        self.free_inputs(m, u, wiring.Flow.In)
        nr, ab, hi = self.routes, u.acc_bits, self.hi
        sh_lo = [Signal(ab, name=f"shadow_lo{r}") for r in range(nr)]
        sh_up = [Signal(ab, name=f"shadow_up{r}") for r in range(nr)]
        big = Signal(32, name="sh_big")
        small = Signal(32, name="sh_small")
        m.d.comb += [big.eq(u.ratio << u.step_exp), small.eq(Const(1, 16) << u.step_exp)]   # route_steps
        # the configuration: single-cycle still for three cycles before an event (counted in
        # ``cfg_still``; the unit's documented contract: two are enough, one is not - a bounded
        # check of 8 cycles with each), pipelined still during an event (it may change in the cycle
        # of ``start``: the trackers use it two cycles later and recompute every cycle)
        cfg = Cat(u.ratio, u.step_exp, u.enable) if u.pipelined else Cat(u.ratio, u.step_exp)
        p_cfg = self.past(m, cfg, "cfg")
        still = Signal(range(4), name="cfg_still")
        changed = ~self.past_ok | (cfg != p_cfg)
        m.d.sync += still.eq(Mux(changed, 0, Mux(still == 3, 3, still + 1)))
        settled = ~changed & (still == 3)

        def sel(bounds: list[Signal], route: Value) -> Value:
            v: Value = Const(0, ab)
            for r in range(nr):
                v = Mux(route == r, bounds[r], v)
            return v

        ev_lo, ev_up = sel(sh_lo, u.route), sel(sh_up, u.route)
        below, above, lo_n, up_n = self._step(ev_lo, ev_up, u.value, big, small)
        tracked = u.route < nr
        # the seed as it lands (capped: reference.route_seed); pipelined a cycle after its strobe
        seed_in = (u.seed_we, u.seed_route, u.seed_side, Mux(u.seed_value > hi, hi, u.seed_value))
        if u.pipelined:
            s_we, s_route, s_side, s_val = (Signal.like(v, name=f"sh_{n}") if isinstance(v, Signal) else
                                            Signal(len(v), name=f"sh_{n}")
                                            for v, n in zip(seed_in, ("seed_we", "seed_route", "seed_side",
                                                                      "seed_value"), strict=True))
            m.d.sync += [s_we.eq(seed_in[0]), s_route.eq(seed_in[1]), s_side.eq(seed_in[2]), s_val.eq(seed_in[3])]
        else:
            s_we, s_route, s_side, s_val = seed_in
        event = (u.start if u.pipelined else u.valid) & u.enable & tracked
        for r in range(nr):
            with m.If(event & (u.route == r)):
                m.d.sync += [sh_lo[r].eq(lo_n), sh_up[r].eq(up_n)]
            with m.If(s_we & (s_route == r)):       # after the event (the last assignment wins)
                with m.If(s_side):
                    m.d.sync += sh_up[r].eq(s_val)
                with m.Else():
                    m.d.sync += sh_lo[r].eq(s_val)
        self._ctx = {"big": big, "small": small, "settled": settled, "changed": changed, "flags": (below, above),
                     "tracked": tracked, "sh_lo": sh_lo, "sh_up": sh_up, "seed": (s_we, s_route, s_side, s_val),
                     "sel": sel}
        return m

    def _props(self, m: Module, pr: dict[str, Any]) -> None:
        """The properties (in the unit's module: its internal signals)."""
        u, nr, hi, cx = self.unit, self.routes, self.hi, self._ctx
        unit_lo, unit_up = pr["lower"], pr["upper"]
        settled, changed, tracked, sel = cx["settled"], cx["changed"], cx["tracked"], cx["sel"]
        below, above = cx["flags"]
        sh_lo, sh_up = cx["sh_lo"], cx["sh_up"]
        s_we, s_route, s_side, s_val = cx["seed"]
        props: dict[str, Value] = {}
        for r in range(nr):
            props[f"bounds in 0..HI: route {r}"] = (unit_lo[r] <= hi) & (unit_up[r] <= hi)
        if u.pipelined:
            self._pipelined_env(m, changed, below, above, sh_lo, sh_up, (s_we, s_route, s_side, s_val), props)
            if self.props_only:
                props = {name: v for name, v in props.items() if not name.startswith("inv: ")}
        else:
            m.d.comb += Assume(~u.valid | settled)
            props["flags = the shadow's (below)"] = u.below == (u.valid & u.enable & tracked & below)
            props["flags = the shadow's (above)"] = u.above == (u.valid & u.enable & tracked & above)
            for r in range(nr):
                props[f"bounds = the shadow's: route {r}"] = (unit_lo[r] == sh_lo[r]) & (unit_up[r] == sh_up[r])
            props["read: rd_value = the shadow's bound"] = (u.rd_route >= nr) | (
                u.rd_value == Mux(u.rd_side, sel(sh_up, u.rd_route), sel(sh_lo, u.rd_route)))
            # an untracked id (or the unit disabled) changes nothing: no flag, no bound moves
            quiet = u.valid & (~tracked | ~u.enable)
            p_quiet = self.past(m, quiet & ~u.seed_we, "quiet")
            p_bounds = self.past(m, Cat(*unit_lo, *unit_up), "bounds")
            props["untracked id or disabled: no flag"] = ~quiet | ~(u.below | u.above)
            props["untracked id or disabled: no bound changes"] = ~p_quiet | (Cat(*unit_lo, *unit_up) == p_bounds)
            m.d.comb += [Cover(u.valid & u.below & (u.route == nr - 1)), Cover(u.valid & u.above),
                         Cover(u.seed_we & u.valid & (u.seed_route == u.route))]
        check(m, self.started, props)

    def _pipelined_env(self, m: Module, changed: Value, below: Value, above: Value,
                       sh_lo: list[Signal], sh_up: list[Signal], shadow_seed: tuple[Value, ...],
                       props: dict[str, Value]) -> None:
        """The pipelined form's event contract, its properties and the white-box invariants."""
        u, pr, nr = self.unit, self.probes, self.routes
        s_we, s_route, s_side, s_val = shadow_seed
        inflight = Signal(name="inflight")
        top = self.max_flight or RouteIntervals.PIPE_CYCLES
        age = Signal(range(top + 1), name="age")
        ev_route = Signal(len(u.route), name="ev_route")
        ev_tracked, ev_en = Signal(name="ev_tracked"), Signal(name="ev_enable")
        exp_below, exp_above = Signal(name="exp_below"), Signal(name="exp_above")
        pre_lo, pre_up = Signal(u.acc_bits, name="pre_lo"), Signal(u.acc_bits, name="pre_up")
        seeded_lo, seeded_up = Signal(name="seeded_lo"), Signal(name="seeded_up")
        ev_lo = Const(0, u.acc_bits)
        ev_up = Const(0, u.acc_bits)
        for r in range(nr):
            ev_lo, ev_up = Mux(u.route == r, sh_lo[r], ev_lo), Mux(u.route == r, sh_up[r], ev_up)
        # the contract
        p_ev = self.past(m, Cat(u.route, u.value), "event")
        m.d.comb += [Assume(~u.start | (self.past_ok & ~inflight)),
                     Assume(~(u.start | inflight) | (Cat(u.route, u.value) == p_ev)),
                     Assume(~inflight | ~changed),
                     Assume(~u.valid | (inflight & (age >= RouteIntervals.PIPE_CYCLES))),
                     Assume(~(inflight & (age == self.max_flight)) | u.valid if self.max_flight else Const(1))]
        tracked = u.route < nr
        same = s_we & (s_route == u.route) & tracked
        with m.If(u.start):
            m.d.sync += [inflight.eq(1), age.eq(1), ev_route.eq(u.route), ev_tracked.eq(tracked),
                         ev_en.eq(u.enable), exp_below.eq(tracked & below), exp_above.eq(tracked & above),
                         pre_lo.eq(ev_lo), pre_up.eq(ev_up),
                         seeded_lo.eq(same & ~s_side), seeded_up.eq(same & s_side)]
        with m.Elif(inflight):
            m.d.sync += age.eq(Mux(age == top, top, age + 1))
            with m.If(same & ~s_side):
                m.d.sync += seeded_lo.eq(1)
            with m.If(same & s_side):
                m.d.sync += seeded_up.eq(1)
        with m.If(u.valid):
            m.d.sync += inflight.eq(0)
        ev = u.valid & ev_en
        props["flags = the shadow's (below)"] = u.below == (ev & exp_below)
        props["flags = the shadow's (above)"] = u.above == (ev & exp_above)
        for r in range(nr):
            props[f"bounds = the shadow's with no event in flight: route {r}"] = inflight | (
                (pr["lower"][r] == sh_lo[r]) & (pr["upper"][r] == sh_up[r]))
        # the read port answers a cycle later
        p_rd = self.past(m, Cat(u.rd_route < nr, Mux(u.rd_side, Cat(*sh_up).word_select(u.rd_route, u.acc_bits),
                                                      Cat(*sh_lo).word_select(u.rd_route, u.acc_bits))), "rd")
        p_busy = self.past(m, inflight | u.start, "busy")
        props["read: rd_value = the shadow's bound a cycle later"] = ~self.past_ok | p_busy | ~p_rd[0] | (
            u.rd_value == p_rd[1:])
        # an untracked id (or the unit disabled) changes nothing
        quiet = u.valid & (~ev_tracked | ~ev_en) & ~s_we
        p_quiet = self.past(m, quiet, "quiet")
        bounds = Cat(*pr["lower"], *pr["upper"])
        p_bounds = self.past(m, bounds, "bounds")
        props["untracked id or disabled: no flag"] = ~(u.valid & (~ev_tracked | ~ev_en)) | ~(u.below | u.above)
        props["untracked id or disabled: no bound changes"] = ~p_quiet | (bounds == p_bounds)
        # white-box invariants of an event in flight: the unit holds the event's pre-event bounds,
        # the other routes are the shadow's
        inv: dict[str, Value] = {
            "inv: route_r = the event's route": ~inflight | (pr["route_r"] == ev_route[:len(pr["route_r"])]),
            "inv: in range = the event's": ~inflight | (pr["in_range"] == ev_tracked) & (pr["inr_r"] == ev_tracked),
            "inv: read bounds = the pre-event bounds": ~inflight | ~ev_tracked | (
                (pr["lo_cur"] == pre_lo) & (pr["up_cur"] == pre_up)),
            "inv: flags registered": ~inflight | (age < 2) | (
                (pr["below_r"] == exp_below) & (pr["above_r"] == exp_above)),
            "inv: keep = not seeded since start": ~inflight | (
                (pr["keep_lo"] == ~seeded_lo) & (pr["keep_up"] == ~seeded_up)),
            "inv: tracker inputs": ~inflight | (age < 2) | ~ev_tracked | (
                (pr["trackers"]["upper"].acc == pre_up) & (pr["trackers"]["lower"].acc == hi_minus(self.hi, pre_lo))),
            "inv: enable = the event's": ~inflight | (u.enable == ev_en),
            "inv: the event's route, held": ~inflight | ((ev_route == u.route) & (ev_tracked == (ev_route < nr))),
            "inv: age within the flight": ~inflight | ((age >= 1) & (age <= top)),
            "inv: route_r = the route of the cycle before": ~self.past_ok | (
                (pr["route_r"] == p_ev[:len(pr["route_r"])]) & (pr["inr_r"] == (p_ev[:len(u.route)] < nr))),
            "inv: seed register capped": pr["seed"].value <= self.hi,
            "inv: the shadow's seed = the unit's": (pr["seed"].we == s_we) & (~s_we | (
                (pr["seed"].route == s_route) & (pr["seed"].side == s_side) & (pr["seed"].value == s_val))),
        }
        # the shadow stepped at ``start`` from the pre-event bounds (the value and steps held since)
        f_below, f_above, f_lo, f_up = self._step(pre_lo, pre_up, u.value, self._ctx["big"], self._ctx["small"])
        inv["inv: the event's flags = the step of its pre-event bounds"] = ~inflight | ~ev_tracked | (
            (exp_below == f_below) & (exp_above == f_above))
        for r in range(nr):
            mine = inflight & ev_tracked & ev_en & (ev_route == r)
            inv[f"inv: route {r} in flight: the shadow = the step of the pre-event bounds (or the seed)"] = ~mine | (
                (seeded_lo | (sh_lo[r] == f_lo)) & (seeded_up | (sh_up[r] == f_up)))
            inv[f"inv: route {r} = the shadow's unless its event is in flight"] = mine | (
                (pr["lower"][r] == sh_lo[r]) & (pr["upper"][r] == sh_up[r]))
            inv[f"inv: route {r} in flight holds its pre-event bounds (or the seed)"] = ~mine | (
                (pr["lower"][r] == Mux(seeded_lo, sh_lo[r], pre_lo))
                & (pr["upper"][r] == Mux(seeded_up, sh_up[r], pre_up)))
        props.update(inv)
        m.d.comb += [Cover(u.valid & u.below & ev_en), Cover(u.valid & u.above & ev_en),
                     Cover(u.valid & ev_en & seeded_lo)]


def hi_minus(hi: int, v: Value) -> Value:
    """``HI - v`` at ``v``'s width (the lower bound's mirror)."""
    return (Const(hi, len(v)) - v)[:len(v)]


#: Harness classes by name.
HARNESSES: dict[str, type[_Harness]] = {h.name: h for h in (StreamCoreHarness, FoldedCoreHarness,
                                                             RegisterBusHarness, SPIBridgeHarness,
                                                             RouteIntervalsHarness)}

#: Faults by harness: what each changes, and the property that must then fail.
FAULTS: dict[str, dict[str, str]] = {
    "stream": {
        "ready_ignores_clear": "s_axis.tready ignores the clear after reset (the old post-reset window): "
                               "a table write into the active bank meets a sample in flight",
        "stall_ignores_full_buffer": "the pipeline advances with the output buffer full: a result is lost",
    },
    "folded": {
        "push_during_commit": "a PUSH is taken while a commit is pending: the model changes under it",
    },
    "regbus": {
        "no_time_out": "an access waits for the pipeline without a time-out: with the result stream "
                       "stalled it is never answered",
    },
    "spi": {},
    "routes": {
        "miss_direction_swapped": "the upper bound steps the wrong way: it widens (by big) after a hit and "
                                  "narrows (by small) after a miss: the bounds leave the shadow's",
        "no_upper_clamp": "the upper tracker's limit is the accumulator's top, not HI: a bound passes HI",
        "range_check_off": "an id at or above R counts as tracked: it raises a flag",
        "range_check_off_pipelined": "pipelined: an id at or above R counts as tracked: its low bits alias a "
                                     "route, whose bounds it moves",
        "seed_uncapped": "a seed above HI is written as it is: a bound passes HI",
        "seed_lost": "an event's update wins over a seed of the same bound in its cycle: the seed is lost",
        "seed_lost_pipelined": "pipelined: an event's write-back overwrites a seed that landed while it was "
                               "in flight: the seed is lost",
    },
}
