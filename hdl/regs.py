"""Register front end of the scorer, generated from :class:`mailpulse.hdl.regmap.RegisterMap`.

The bus bridges (:mod:`mailpulse.hdl.axi`, :mod:`mailpulse.hdl.spi`) talk to it through
:class:`BusSignature`, a simple request/response port; it holds the shadow model and the
push/result registers and drives the core through :class:`mailpulse.hdl.control.ControlSignature`.

Address decoding loops over the register declarations: no address is written here.  What an
access does follows the register's declared :class:`~mailpulse.hdl.regmap.Kind` (as amaranth-soc's
field actions do): ``CONST`` reads its reset, ``STATUS`` reads live sources field by field,
``STORAGE`` stores (flip-flops; the per-projection shadow arrays in small memories), ``ACTION``
fields fire one-cycle pulses, a ``PUSH`` write sends its operand registers as a sample, a
``WINDOW`` write goes to a memory port, a ``LIVE`` register reads the core's value of the
addressed element (through a read port: index out, value in) and a write seeds it (a write port:
strobe, index, data).  What the sources, pulses and ports connect to in the core
is one table, :meth:`RegisterFile._connections`; a declared field without a connection is an
elaboration error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bus import BusSignature, decode, sext_if_signed
from .control import ControlSignature
from .params import CoreParams, clog2
from .regmap import ADDR_BITS, WAIT_LIMIT, Kind, Register, RegisterMap

__all__ = ["BusSignature", "RegisterFile"]

#: Registers per partial OR of the read multiplexer (see ``RegisterFile.elaborate``).
_READ_GROUP = 6


class _State(IntEnum):
    IDLE = 0
    DECODE = 1
    READ = 2
    EXEC = 3
    COPY = 4


@dataclass
class _MemPort:
    """The registered write of a shadow memory (it lands one cycle after the decision)."""

    addr: Signal
    data: Signal
    en: Signal


@dataclass
class _Storage:
    """``STORAGE`` registers: flip-flops (``regs``: one Signal per array element, field bits
    only), or - the shadow arrays with one entry per projection, which only the bus and the
    commit copy read, one entry at a time - small memories (``mem_rd`` read ports, ``mem_wr``
    registered writes)."""

    regs: dict[str, list[Signal]] = field(default_factory=dict)
    #: Per flip-flop array: the register that DECODE loads with the addressed element.
    sel: dict[str, Signal] = field(default_factory=dict)
    mem_rd: dict[str, Any] = field(default_factory=dict)
    mem_wr: dict[str, _MemPort] = field(default_factory=dict)
    #: The memories themselves (a test sets their ``init`` to what block RAM holds across a reset).
    mems: dict[str, Memory] = field(default_factory=dict)


@dataclass
class _Access:
    """The bus access pipeline: the latched request, the registered decode (``hits``: one bit per
    register; ``rhits``: the same for a read, 0 for a write), the state, the response, the
    registered decisions ``go``/``err`` and the wait counter ``waited`` (see
    :meth:`RegisterFile._wait_go_err`), and the entry counter of a commit's copy (state COPY) with
    ``resume`` (the copy interrupted a waiting access, which EXEC takes up again after it)."""

    addr: Signal
    wdata: Signal
    write: Signal
    hits: Signal
    rhits: Signal
    idx: Signal
    state: Signal
    resp_valid: Signal
    resp_data: Signal
    resp_err: Signal
    start_copy: Signal
    #: ``drained & ~commit_done`` of the cycle before (see :meth:`RegisterFile._access`).
    copy_req: Signal
    go: Signal
    err: Signal
    copy_cnt: Signal
    resume: Signal
    waited: Signal


@dataclass
class _PushResult:
    """Front-end state that is not storage: the sticky bus error, the pending PUSH, and the
    result registers of the last pushed sample."""

    bus_error: Signal
    push_pending: Signal
    result_valid: Signal
    score: Signal
    tag: Signal
    anomaly: Signal
    argmax: Signal
    #: The route interval flags of the last pushed sample (R > 0).
    below: Signal
    above: Signal


@dataclass
class _LivePort:
    """What a ``LIVE`` register connects to in the core: the read port (``rd_index`` out from
    DECODE on, ``rd_value`` in at READ: combinational or registered once) and the seed port
    (``we`` strobe, ``index``, ``data``)."""

    rd_index: Signal
    rd_value: Signal
    we: Signal
    index: Signal
    data: Signal


@dataclass
class _Clear:
    """The clear after reset (see :meth:`RegisterFile._clear_after_reset`)."""

    clearing: Signal
    ccnt: Signal
    window_write_now: Signal
    #: The shadow memories are being cleared (the first K cycles): no request is taken.
    mem_clearing: Signal


class RegisterFile(wiring.Component):
    """Register front end.

    Parameters
    ----------
    params : CoreParams
    latency : int
        The core's latency (read back through ``LATENCY``).

    Attributes
    ----------
    bus : In(BusSignature)
        Register port for one bridge.
    ctrl : Out(ControlSignature)
        To the core.
    irq : Out(1)
        ``STATUS.RESULT_VALID``.

    Timing: a request is latched (cycle 0), decoded into registered hit bits (cycle 1), read into
    a register (cycle 2) and executed (cycle 3, or later while it waits); ``resp_valid`` rises the
    cycle after.  A write to a ``PUSH`` register's operands (``FEATURE``/``TAG``) or to ``PUSH``
    itself waits while a pushed sample is pending or in the pipeline, so a pushed sample is
    exactly the registers at the time of the PUSH write and RESULT_* always answer the last
    PUSH.  A commit's copy (K + 2 cycles, when the core is drained) runs between accesses; the
    clear after reset (``clear_cycles``) runs beside them.
    """

    def __init__(self, params: CoreParams, latency: int, clear_cycles: int | None = None, *,
                 wait_limit: int = WAIT_LIMIT) -> None:
        self.params = params
        self.latency = latency
        if wait_limit < 2 or wait_limit & (wait_limit - 1):
            raise ValueError(f"the wait limit must be a power of two >= 2, not {wait_limit}")
        #: Cycles an access waits before it is answered with an error (:data:`WAIT_LIMIT`; the
        #: formal fault-injection test shortens it so that a bounded model check reaches it).
        self.wait_limit = wait_limit
        #: Cycles of table clearing after reset (both banks); the shadow bank's half goes first.
        self.table_clear_cycles = 2 * params.b if clear_cycles is None else clear_cycles
        self.clear_cycles = max(params.k, self.table_clear_cycles)
        if wait_limit == WAIT_LIMIT and self.clear_cycles + 4 * latency + 2 * params.k + 100 > WAIT_LIMIT:
            raise ValueError(f"the clear after reset ({self.clear_cycles} cycles) and the latency ({latency}) "
                             f"leave too little margin below the access time-out WAIT_LIMIT ({WAIT_LIMIT} cycles)")
        self.regmap = RegisterMap(params)
        #: Formal verification only (:mod:`mailpulse.hdl.formal`): called at the end of
        #: :meth:`elaborate` with the module and the access/clear/push state.
        self.formal_hook: Callable[[Module, dict[str, Any]], None] | None = None
        super().__init__({
            "bus": In(BusSignature()),
            "ctrl": Out(ControlSignature(params)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        res = _PushResult(bus_error=Signal(name="bus_error"), push_pending=Signal(name="push_pending"),
                          result_valid=Signal(name="result_valid"), score=Signal(32, name="result_score"),
                          tag=Signal(self.params.tag_bits, name="result_tag"),
                          anomaly=Signal(name="result_anomaly"), argmax=Signal(8, name="result_argmax"),
                          below=Signal(name="result_below"), above=Signal(name="result_above"))
        conn = self._connections(res)
        strobes = self._check_connections(conn)
        m = Module()
        clr = _Clear(clearing=Signal(init=1, name="clearing"),   # the clear after reset runs
                     ccnt=Signal(range(self.clear_cycles + 2), name="ccnt"),
                     window_write_now=Signal(name="table_write_now"),
                     mem_clearing=Signal(init=1, name="mem_clearing"))
        acc = self._access(m, clr)
        st = self._storage(m)
        ro = self._read_only_values(m, conn["status"])
        ctrl = self.ctrl
        # strobes to the core default low (the access, the clear and the copy raise them)
        m.d.sync += [*(s.eq(0) for s in strobes), ctrl.table_we.eq(0), ctrl.table_clear.eq(0),
                     ctrl.load_valid.eq(0), ctrl.commit_done.eq(0), *(lp.we.eq(0) for lp in conn["live"].values())]
        for wr in st.mem_wr.values():
            m.d.sync += wr.en.eq(0)   # overridden below
        self._clear_after_reset(m, st, clr)
        self._commit_copy(m, acc, st, conn["copy"])
        self._latch_and_decode(m, acc, st)
        rdata = self._read(m, acc, st, ro, conn["live"])
        self._wait_go_err(m, acc, clr, res)
        self._execute(m, acc, st, rdata, res, conn)
        with m.If(self.bus.err_set):
            m.d.sync += res.bus_error.eq(1)
        self._push_path(m, res)
        m.d.comb += [port.eq(Cat(*st.regs[name])) for name, port in conn["storage"].items()]
        m.d.comb += [ctrl.push_valid.eq(res.push_pending & ~clr.clearing), ctrl.clearing.eq(clr.clearing),
                     self.irq.eq(res.result_valid)]
        if self.formal_hook is not None:
            self.formal_hook(m, {"access": acc, "clear": clr, "push": res, "storage": st})
        return m

    # ---- what the registers connect to -------------------------------------------------------
    def _connections(self, res: _PushResult) -> dict[str, dict[str, Any]]:
        """The one table of what the declared registers connect to (a declaration table).

        ``status``: the live source of each ``STATUS`` field.  ``actions``: what writing a field
        of an ``ACTION`` register with 1 does - a ``ControlSignature`` strobe (a Signal: high for
        the one cycle after the write) or a list of statements (run once, in the write's cycle);
        for a ``PUSH`` register, the statements any write runs.  ``copy``: the core load port each
        per-projection shadow array feeds during a commit.  ``windows``: the (enable, index, data)
        write port of each ``WINDOW``.  ``storage``: the core port that each flip-flop
        ``STORAGE`` register (an array: its elements concatenated) drives.  ``live``: the read and
        seed ports (:class:`_LivePort`) of each ``LIVE`` register.  With routes (R > 0) the route
        interval registers join the tables.
        """
        ctrl = self.ctrl
        routes = self.params.r > 0
        flags = {"BELOW": res.below, "ABOVE": res.above} if routes else {}
        return {
            "status": {
                "STATUS": {"COMMIT_PENDING": ctrl.commit_pending, "ACTIVE_BANK": ctrl.active_bank,
                           "BUSY": ctrl.busy, "RESULT_VALID": res.result_valid,
                           "PUSH_PENDING": res.push_pending, "BUS_ERROR": res.bus_error},
                "THRESHOLD_ACTIVE": {"THRESHOLD": ctrl.threshold_active},
                "SAMPLES": {"COUNT": ctrl.samples},
                "ANOMALIES": {"COUNT": ctrl.anomalies},
                "LATENCY": {"CYCLES": Const(self.latency, 32)},
                "RESULT_SCORE": {"SCORE": res.score},
                "RESULT_TAG": {"TAG": res.tag},
                "RESULT_INFO": {"ANOMALY": res.anomaly, "ARGMAX": res.argmax, **flags},
                "THRESHOLD_FRAC": {"FRAC": ctrl.threshold_frac},
            },
            "actions": {
                "CTRL": {
                    "COMMIT": ctrl.commit,
                    "COMMIT_THRESHOLD": ctrl.commit_threshold,
                    "CLEAR_COUNTERS": ctrl.clear_counters,
                    "CLEAR_ERROR": [res.bus_error.eq(0)],
                },
                "PUSH": {"PUSH": [res.push_pending.eq(1), res.result_valid.eq(0)]},
            },
            "copy": {"WEIGHTS": ctrl.load_weights, "OFFSET": ctrl.load_offset, "SHIFT": ctrl.load_shift},
            "storage": {"THRESHOLD": ctrl.shadow_threshold, "FEATURE": ctrl.push_features, "TAG": ctrl.push_tag,
                        "ADAPT": ctrl.shadow_adapt, "T_MIN": ctrl.shadow_t_min, "T_MAX": ctrl.shadow_t_max,
                        **({"ROUTE": ctrl.push_route} if routes else {})},
            "windows": {"TABLE": (ctrl.table_we, ctrl.table_index, ctrl.table_data)},
            "live": {"ROUTE_BOUND": _LivePort(ctrl.route_rd_index, ctrl.route_rd_value, ctrl.route_seed_we,
                                              ctrl.route_seed_index, ctrl.route_seed_value)} if routes else {},
        }

    def _read_only_values(self, m: Module, status: dict[str, dict[str, Any]]) -> dict[str, Value]:
        """The value each read-only register reads: a ``CONST`` its reset, a ``STATUS`` register
        its fields' sources in their declared places."""
        out: dict[str, Value] = {}
        for r in self.regmap:
            if r.kind is Kind.CONST:
                out[r.name] = Const(r.reset, 32)
            elif r.kind is Kind.STATUS:
                src = status[r.name]
                if len(r.fields) == 1 and r.fields[0].lsb == 0:
                    out[r.name] = src[r.fields[0].name]
                else:
                    v = Signal(32, name=r.name.lower())
                    for f in r.fields:
                        m.d.comb += v[f.lsb:f.lsb + f.width].eq(src[f.name])
                    out[r.name] = v
        return out

    def _check_connections(self, conn: dict[str, dict[str, Any]]) -> list[Signal]:
        """Every field of every ``STATUS`` register has a source, every field of every ``ACTION``
        and ``PUSH`` register an action, every ``STORAGE`` register a destination (the core, or the
        commit copy for the memory-backed ones), every ``WINDOW`` a port, and nothing else has any
        (a ``ValueError`` naming them otherwise).  Returns the strobe Signals among the actions."""
        rm = self.regmap
        checks = {
            "status": ({f"{r.name}.{f.name}" for r in rm if r.kind is Kind.STATUS for f in r.fields},
                       {f"{r}.{f}" for r, fields in conn["status"].items() for f in fields}),
            "actions": ({f"{r.name}.{f.name}" for r in rm if r.kind in (Kind.ACTION, Kind.PUSH) for f in r.fields},
                        {f"{r}.{f}" for r, fields in conn["actions"].items() for f in fields}),
            "storage": ({r.name for r in rm if r.kind is Kind.STORAGE and not self._memory_backed(r)},
                        set(conn["storage"])),
            "copy": ({r.name for r in rm if self._memory_backed(r)}, set(conn["copy"])),
            "windows": ({r.name for r in rm if r.kind is Kind.WINDOW}, set(conn["windows"])),
            "live": ({r.name for r in rm if r.kind is Kind.LIVE}, set(conn["live"])),
        }
        for key, (declared, connected) in checks.items():
            if declared != connected:
                raise ValueError(f"register front end: {key} not connected for "
                                 f"{', '.join(sorted(declared - connected)) or 'none'}; connected but not declared: "
                                 f"{', '.join(sorted(connected - declared)) or 'none'}")
        return [a for fields in conn["actions"].values() for a in fields.values() if isinstance(a, Value)]

    # ---- access state and storage ------------------------------------------------------------
    def _access(self, m: Module, clr: _Clear) -> _Access:
        regs = list(self.regmap)
        bus = self.bus
        idx_w = max(clog2(r.count) for r in regs) or 1
        acc = _Access(
            addr=Signal(ADDR_BITS, name="addr"), wdata=Signal(32, name="wdata"), write=Signal(name="write"),
            hits=Signal(len(regs), name="hits"), rhits=Signal(len(regs), name="rhits"), idx=Signal(idx_w, name="idx"),
            state=Signal(range(len(_State)), name="state"), resp_valid=Signal(name="resp_valid"),
            resp_data=Signal(32, name="resp_data"), resp_err=Signal(name="resp_err"),
            start_copy=Signal(name="start_copy"),   # a commit's copy has priority over bus requests
            copy_req=Signal(name="copy_req"),
            go=Signal(name="go"), err=Signal(name="err"),
            copy_cnt=Signal(range(self.params.k + 2), name="cnt"),   # the commit copy's entry
            resume=Signal(name="resume"),
            # cycles the access in EXEC has waited; its top bit is the time-out (WAIT_LIMIT)
            waited=Signal(clog2(self.wait_limit) + 1, name="waited"),
        )
        # the copy starts between accesses, or while an access waits in EXEC (which may wait for
        # this very commit: a shadow write, or an operand write behind a PUSH held by the commit)
        idle_or_waiting = (acc.state == _State.IDLE) | ((acc.state == _State.EXEC) & ~acc.go)
        m.d.comb += [
            acc.start_copy.eq(idle_or_waiting & acc.copy_req & ~self.ctrl.commit_done & ~clr.clearing),
            bus.req_ready.eq((acc.state == _State.IDLE) & ~acc.start_copy & ~clr.mem_clearing),
            bus.resp_valid.eq(acc.resp_valid),
            bus.resp_data.eq(acc.resp_data),
            bus.resp_err.eq(acc.resp_err),
        ]
        # ``drained`` a cycle late (it stays high until the copy's ``commit_done``: no sample enters
        # while a commit is pending), so the core's pipeline state is off the copy's start path
        m.d.sync += [acc.resp_valid.eq(0), acc.copy_req.eq(self.ctrl.drained & ~self.ctrl.commit_done)]
        return acc

    def _memory_backed(self, r: Register) -> bool:
        """Shadow storage with one entry per projection: read only by the bus and the commit copy,
        one entry at a time, so it lives in a small memory (one read port) instead of flip-flops."""
        return r.kind is Kind.STORAGE and r.shadow and r.count == self.params.k

    def _storage(self, m: Module) -> _Storage:
        p = self.params
        st = _Storage()
        for r in self.regmap:
            if r.kind is Kind.STORAGE and not self._memory_backed(r):
                st.regs[r.name] = [Signal(r.width, init=r.reset, name=f"{r.name.lower()}{i}") for i in range(r.count)]
                if r.count > 1:
                    st.sel[r.name] = Signal(r.width, name=f"sel_{r.name.lower()}")
        for r in self.regmap:
            if not self._memory_backed(r):
                continue
            if r.reset:
                raise ValueError(f"register {r.name} lives in a memory, which the clear after reset zeroes; "
                                 "it cannot declare a reset value")
            mem = Memory(shape=unsigned(r.width), depth=p.k, init=[])
            m.submodules[f"shadow_{r.name.lower()}"] = st.mems[r.name] = mem
            st.mem_rd[r.name] = mem.read_port(domain="sync")
            port = mem.write_port(domain="sync")
            # the write is registered (it lands one cycle after the decision): the clear/EXEC
            # address and enable decode stays off the memory's (flip-flop) write enables.  The
            # next access or commit copy reads the memory three cycles later at the earliest.
            n = r.name.lower()
            st.mem_wr[r.name] = wr = _MemPort(
                addr=Signal.like(port.addr, name=f"wr_{n}_addr"), data=Signal.like(port.data, name=f"wr_{n}_data"),
                en=Signal(name=f"wr_{n}_en"))
            m.d.comb += [port.addr.eq(wr.addr), port.data.eq(wr.data), port.en.eq(wr.en)]
        return st

    # ---- the clear after reset and the commit copy ------------------------------------------------
    def _clear_after_reset(self, m: Module, st: _Storage, clr: _Clear) -> None:
        """Zero the shadow memories and both table banks, as the model's reset does.  The shadow
        memories take the first K cycles; the tables take ``table_clear_cycles``, the shadow bank's
        half first (the core maps the clear index so).  It runs beside the bus: no request is taken
        in its first K cycles (``mem_clearing``), a window write waits only if it has not passed
        its entry yet (never, for a host that writes in address order), a commit's copy and a PUSH
        wait for the end.  A window write takes the write port from the clear for its cycle."""
        p = self.params
        ctrl = self.ctrl
        with m.If(clr.mem_clearing):
            for wr in st.mem_wr.values():
                m.d.sync += [wr.addr.eq(clr.ccnt), wr.data.eq(0), wr.en.eq(1)]
        with m.If(clr.clearing & ~clr.window_write_now):
            m.d.sync += clr.ccnt.eq(clr.ccnt + 1)
            with m.If(clr.ccnt == p.k - 1):
                m.d.sync += clr.mem_clearing.eq(0)
            with m.If(clr.ccnt < self.table_clear_cycles):
                m.d.sync += [ctrl.table_we.eq(1), ctrl.table_clear.eq(1), ctrl.table_index.eq(clr.ccnt),
                             ctrl.table_data.eq(0)]
            # the strobes and memory writes are registered: the last one reaches its memory in the
            # cycle after it is decided, so ``clearing`` falls one cycle after that decision
            with m.If(clr.ccnt == self.clear_cycles):
                m.d.sync += clr.clearing.eq(0)

    def _commit_copy(self, m: Module, acc: _Access, st: _Storage, copy: dict[str, Any]) -> None:
        """COPY (commit): when the core is drained, read shadow entry c in cycle c and hand it to
        the core in cycle c + 1 (registered); then strobe ``commit_done``.  The shadow memories'
        read address is a register: the request's entry from the latch on, the copy's entry
        (``copy_cnt``, which is 0 outside COPY) during it."""
        p = self.params
        ctrl = self.ctrl
        kb = max(1, clog2(p.k))
        cnt = acc.copy_cnt
        rd_addr = Signal(kb, name="shadow_rd_addr")
        with m.If(acc.start_copy):
            m.d.sync += rd_addr.eq(0)
        with m.Elif(acc.state == _State.COPY):
            m.d.sync += rd_addr.eq(cnt + 1)
        with m.Elif(self.bus.req_valid & self.bus.req_ready):
            m.d.sync += rd_addr.eq(self.bus.req_addr[2:2 + kb])
        for rd in st.mem_rd.values():   # the access's entry, or the commit copy's
            m.d.comb += rd.addr.eq(rd_addr)
        with m.If(acc.state == _State.COPY):
            m.d.sync += [
                cnt.eq(cnt + 1),
                ctrl.load_valid.eq((cnt >= 1) & (cnt <= p.k)),
                ctrl.load_index.eq(cnt - 1),
                *(port.eq(st.mem_rd[name].data) for name, port in copy.items()),
            ]
            with m.If(cnt == p.k + 1):
                m.d.sync += [ctrl.commit_done.eq(1), acc.state.eq(Mux(acc.resume, _State.EXEC, _State.IDLE)),
                             cnt.eq(0)]

    # ---- the bus access: latch, decode, read, execute -----------------------------------------------
    def _latch_and_decode(self, m: Module, acc: _Access, st: _Storage) -> None:
        """IDLE starts a commit's copy (it has priority) or latches a request; DECODE registers the
        hit bits and, for register arrays, the selected element (so READ is only an AND-OR)."""
        bus = self.bus
        regs = list(self.regmap)
        with m.If(acc.start_copy):   # (copy_cnt is 0: COPY leaves it so)
            m.d.sync += [acc.state.eq(_State.COPY), acc.resume.eq(acc.state == _State.EXEC)]
        with m.Elif(bus.req_valid & bus.req_ready):
            m.d.sync += [acc.addr.eq(bus.req_addr), acc.wdata.eq(bus.req_data), acc.write.eq(bus.req_write),
                         acc.state.eq(_State.DECODE)]
        with m.If(acc.state == _State.DECODE):
            m.d.sync += acc.state.eq(_State.READ)
            for j, r in enumerate(regs):
                m.d.sync += [acc.hits[j].eq(decode(r, acc.addr)), acc.rhits[j].eq(decode(r, acc.addr) & ~acc.write)]
            m.d.sync += acc.idx.eq(acc.addr[2:2 + len(acc.idx)])
            for name, target in st.sel.items():
                elems = st.regs[name]
                ib = clog2(len(elems))
                sel: Value = Const(0, len(elems[0]))
                for i, e in enumerate(elems):
                    sel = Mux(acc.addr[2:2 + ib] == i, e, sel)
                m.d.sync += target.eq(sel)

    def _read(self, m: Module, acc: _Access, st: _Storage, ro: dict[str, Value],
              live: dict[str, _LivePort]) -> Value:
        """READ: the read multiplexer into registers (its own cycle: no path from the access
        decision or the push/commit state into ``resp_data``).  The OR over all registers is
        split: READ registers the OR of each group of ``_READ_GROUP`` registers, EXEC ORs the
        groups into ``resp_data`` (two LUT levels each side instead of five from the shadow
        memories' read data; the UP5K's critical path).  Returns the OR of the groups."""
        terms = []
        for j, r in enumerate(self.regmap):
            hit = acc.rhits[j]
            if r.kind is Kind.STORAGE:
                term = Signal(32, name=f"rd_{r.name.lower()}")
                if r.name in st.mem_rd:
                    m.d.comb += term.eq(sext_if_signed(r, st.mem_rd[r.name].data))
                elif r.count == 1:
                    m.d.comb += term.eq(sext_if_signed(r, st.regs[r.name][0]))
                else:
                    m.d.comb += term.eq(sext_if_signed(r, st.sel[r.name]))
                terms.append(term & hit.replicate(32))
            elif r.kind is Kind.LIVE:
                # the element's index from the latched address (arrays sit on a boundary of their
                # size), valid from DECODE on: the core may answer combinationally or a cycle later
                lp = live[r.name]
                m.d.comb += lp.rd_index.eq(acc.addr[2:2 + len(lp.rd_index)])
                term = Signal(32, name=f"rd_{r.name.lower()}")
                m.d.comb += term.eq(lp.rd_value)
                terms.append(term & hit.replicate(32))
            elif r.access == "RO":
                terms.append(ro[r.name] & hit.replicate(32))
        groups = [terms[i:i + _READ_GROUP] for i in range(0, len(terms), _READ_GROUP)]
        rdata_g = [Signal(32, name=f"rdata_g{i}") for i in range(len(groups))]
        with m.If(acc.state == _State.READ):
            m.d.sync += acc.state.eq(_State.EXEC)
            for g, grp in zip(rdata_g, groups):
                v: Value = Const(0, 32)
                for t in grp:
                    v = v | t
                m.d.sync += g.eq(v)
        rdata: Value = Const(0, 32)
        for g in rdata_g:
            rdata = rdata | g
        return rdata

    def _wait_go_err(self, m: Module, acc: _Access, clr: _Clear, res: _PushResult) -> None:
        """The registered decisions of EXEC, and the time-out.

        ``wait_c`` (the access must wait) holds for: a write to a PUSH register or its operands,
        or a CTRL write with COMMIT_THRESHOLD (a push is scored with the threshold active when PUSH
        was written, as the model says), while a pushed sample is pending or in the pipeline; a write
        to a shadow register, or a COMMIT, while a commit is pending (so a COMMIT takes the shadow model as it was when
        COMMIT was written, as the model says); a window write the clear has not passed yet (no
        request is taken at all while the clear zeroes the shadow memories, its first K cycles:
        a read of one would see what it held before the reset).  Every
        condition only ever falls during an access (push_pending, push_inflight and
        commit_pending are set only by this front end's own writes, the clear counter only
        grows), so a decision taken on the value of a cycle before is still right.

        ``go`` = the access executes next cycle, as a register of its own: the access's writes fan
        out from one flip-flop instead of a decode of ``state`` (an UP5K critical path).  EXEC is
        entered from READ (or from COPY, see ``resume``) and left the cycle after ``go``.

        The time-out: ``waited`` counts the cycles an access waits in EXEC (a commit's copy in
        between does not count).  When its top bit sets (:data:`WAIT_LIMIT` cycles) the hit bits
        are cleared, so the access executes as one to no register: nothing is written, the answer
        is an error (AXI ``SLVERR``) and a write sets ``STATUS.BUS_ERROR``.  Only writes wait for
        longer than the clear or a copy, and they wait for the pipeline: with ``o_stream`` stalled
        and the pipeline full, a pushed sample or a commit never gets through, and without the
        time-out the bus (and a CPU on it) would hang.

        ``err`` (no register at the address, or a write to a read-only one) depends only on
        hits/write, which hold from DECODE to the end of EXEC (or change once, by the time-out,
        two cycles before ``go``): registered every cycle, it is exact when ``go`` is.
        """
        ctrl = self.ctrl
        regs = list(self.regmap)
        hits, write = acc.hits, acc.write
        push_busy = res.push_pending | ctrl.push_inflight
        pushes = [r for r in regs if r.kind is Kind.PUSH]
        # a LIVE register (a route bound) waits like an operand: the pushed sample's event comes
        # first, as in the model, whatever stage of the core it is at
        j_operand = [j for j, r in enumerate(regs) if any(r.name in q.operands for q in pushes) or r.kind is Kind.LIVE]
        j_push = [j for j, r in enumerate(regs) if r.kind is Kind.PUSH]
        j_window = [j for j, r in enumerate(regs) if r.kind is Kind.WINDOW]
        j_shadow = [j for j, r in enumerate(regs) if r.shadow]
        j_ctrl = [j for j, r in enumerate(regs) if r.name == "CTRL"]
        commit_bit = self.regmap["CTRL"].field("COMMIT").lsb
        threshold_bit = self.regmap["CTRL"].field("COMMIT_THRESHOLD").lsb
        half = self.table_clear_cycles // 2
        wait_c = Signal(name="wait_c")
        window_waits: Value = Const(0, 1)
        for j in j_window:
            # the clear's position of a window index: entry b of every projection's memory (B
            # entries a bank), or the index itself (one memory of K*B entries a bank); compared
            # with the clear counter of the cycle before (registered: the compare is off ``go``'s
            # path; the counter only grows, so the write may wait one cycle more, never less)
            count = regs[j].count
            key = acc.addr[2:2 + clog2(min(count, half))]
            ahead = Signal(name=f"{regs[j].name.lower()}_ahead_of_clear")
            m.d.sync += ahead.eq(clr.clearing & (clr.ccnt < half) & (key >= clr.ccnt))
            window_waits = window_waits | (hits[j] & write & ahead)
        commit_waits = write & ctrl.commit_pending & (
            Cat(*(hits[j] for j in j_shadow)).any() | (Cat(*(hits[j] for j in j_ctrl)).any() & acc.wdata[commit_bit]))
        ctrl_hit = Cat(*(hits[j] for j in j_ctrl)).any()
        m.d.comb += wait_c.eq((write & push_busy & (Cat(*(hits[j] for j in j_operand + j_push)).any()
                                                    | (ctrl_hit & acc.wdata[threshold_bit])))
                              | commit_waits
                              | window_waits)
        waiting = (acc.state == _State.EXEC) & ~acc.go
        m.d.sync += acc.go.eq(((acc.state == _State.READ) | (waiting & ~acc.start_copy)) & ~wait_c)
        with m.If(acc.state == _State.READ):
            m.d.sync += acc.waited.eq(0)
        with m.Elif(waiting & ~acc.waited[-1]):
            m.d.sync += acc.waited.eq(acc.waited + 1)
        with m.If(waiting & acc.waited[-1]):
            m.d.sync += [acc.hits.eq(0), acc.rhits.eq(0)]   # time-out: executes as no register
        m.d.comb += clr.window_write_now.eq(acc.go & write & Cat(*(hits[j] for j in j_window)).any())
        err_c = hits == 0
        for j, r in enumerate(regs):
            if r.access == "RO":
                err_c = err_c | (hits[j] & write)
        m.d.sync += acc.err.eq(err_c)

    def _execute(self, m: Module, acc: _Access, st: _Storage, rdata: Value, res: _PushResult,
                 conn: dict[str, dict[str, Any]]) -> None:
        """EXEC (``go``): the write, by kind - store it (``STORAGE``), write the window's port
        (``WINDOW``), run the actions of the fields written with 1 (``ACTION``) or of any write
        (``PUSH``) - and the response."""
        actions, windows, live = conn["actions"], conn["windows"], conn["live"]
        with m.If(acc.go):
            m.d.sync += [acc.state.eq(_State.IDLE), acc.resp_valid.eq(1)]
            for j, r in enumerate(self.regmap):
                ix = acc.idx[:clog2(r.count)] if r.count > 1 else Const(0, 1)
                with m.If(acc.write & acc.hits[j]):
                    if r.kind is Kind.STORAGE and r.name in st.mem_wr:
                        wr = st.mem_wr[r.name]
                        m.d.sync += [wr.addr.eq(ix), wr.data.eq(acc.wdata), wr.en.eq(1)]
                    elif r.kind is Kind.STORAGE:
                        for i, sig in enumerate(st.regs[r.name]):
                            with m.If(ix == i):   # only the fields' bits (a register may have gaps)
                                m.d.sync += sig.eq(acc.wdata[:len(sig)] & r.write_mask)
                    elif r.kind is Kind.ACTION:
                        fields = [(f, actions[r.name][f.name]) for f in r.fields]
                        # strobes follow their bit; statements run when their bit is 1
                        m.d.sync += [a.eq(acc.wdata[f.lsb]) for f, a in fields if isinstance(a, Value)]
                        for f, a in fields:
                            if not isinstance(a, Value):
                                with m.If(acc.wdata[f.lsb]):
                                    m.d.sync += a
                    elif r.kind is Kind.PUSH:
                        m.d.sync += [s for f in r.fields for s in actions[r.name][f.name]]
                    elif r.kind is Kind.WINDOW:
                        we, index, data = windows[r.name]
                        m.d.sync += [we.eq(1), index.eq(ix), data.eq(acc.wdata)]
                    elif r.kind is Kind.LIVE:   # the seed: the field's bits, one strobe
                        lp = live[r.name]
                        m.d.sync += [lp.we.eq(1), lp.index.eq(ix), lp.data.eq(acc.wdata[:len(lp.data)])]
            m.d.sync += [acc.resp_data.eq(rdata), acc.resp_err.eq(acc.err)]
            with m.If(acc.write & acc.err):
                m.d.sync += res.bus_error.eq(1)

    def _push_path(self, m: Module, res: _PushResult) -> None:
        """A pending PUSH clears when the core takes it; the result of a pushed sample lands in
        the RESULT_* registers."""
        ctrl = self.ctrl
        with m.If(ctrl.push_ready):
            m.d.sync += res.push_pending.eq(0)
        with m.If(ctrl.result_valid):
            m.d.sync += [
                res.result_valid.eq(1),
                res.score.eq(ctrl.result_score),
                res.tag.eq(ctrl.result_tag),
                res.anomaly.eq(ctrl.result_anomaly),
                res.argmax.eq(ctrl.result_argmax),
            ]
            if self.params.r:
                m.d.sync += [res.below.eq(ctrl.result_below), res.above.eq(ctrl.result_above)]
