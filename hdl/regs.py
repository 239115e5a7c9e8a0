"""Register front end of the scorer, generated from :class:`mailpulse.hdl.regmap.RegisterMap`.

The bus bridges (:mod:`mailpulse.hdl.axi`, :mod:`mailpulse.hdl.spi`) talk to it through :class:`BusSignature`, a
simple request/response port; it holds the shadow model and the push/result registers and drives
the core through :class:`mailpulse.hdl.core.ControlSignature`.

Address decoding loops over the register declarations: no address is written here.  Behaviour
that is not plain storage (strobes, status, counters, push, results, the table window) is chosen
by register name and placed by the declared field positions.
"""

from __future__ import annotations

from enum import IntEnum
from types import SimpleNamespace
from typing import Any

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .control import ControlSignature
from .params import CoreParams, clog2
from .regmap import ADDR_BITS, Register, RegisterMap

__all__ = ["BusSignature", "RegisterFile"]

#: Registers per partial OR of the read multiplexer (see ``RegisterFile.elaborate``).
_READ_GROUP = 6


class BusSignature(wiring.Signature):
    """Internal register port, from the bus bridge's (initiator's) side.

    Members
    -------
    req_valid, req_ready : request handshake (``req_ready`` only while the front end is idle)
    req_write : 1 = write, 0 = read
    req_addr : byte address, :data:`mailpulse.hdl.regmap.ADDR_BITS` wide
    req_data : write data
    resp_valid : one-cycle strobe answering the accepted request (a few cycles later)
    resp_data : read data (0 for writes, write-only registers and errors)
    resp_err : the access hit a bad address or wrote a read-only register
    err_set : strobe from the initiator: set ``STATUS.BUS_ERROR``.  Reads never set it in the
        front end, because the SPI bridge prefetches words the host may never clock out; the
        bridge reports a read error when it actually delivers the word.  Write errors set it in
        the front end.
    """

    def __init__(self) -> None:
        super().__init__({
            "req_valid": Out(1),
            "req_ready": In(1),
            "req_write": Out(1),
            "req_addr": Out(ADDR_BITS),
            "req_data": Out(32),
            "resp_valid": In(1),
            "resp_data": In(32),
            "resp_err": In(1),
            "err_set": Out(1),
        })


def _decode(reg: Register, addr: Signal):
    """Hit expression for ``reg`` at byte address ``addr``.

    An array decodes by a compare of the address bits above its power-of-two span plus a bound
    on the index (the index is then simply ``addr[2:2 + clog2(count)]``).  Every array in the map
    is aligned to its span; an unaligned one is refused at elaboration.
    """
    if reg.count == 1:
        return addr == reg.offset
    ib = clog2(reg.count)
    span = 1 << (ib + 2)
    if reg.stride != 4 or reg.offset % span:
        raise ValueError(f"register array {reg.name} at 0x{reg.offset:04X} is not aligned to its "
                         f"{span}-byte span; the front end decodes arrays by address prefix")
    hit = (addr[2 + ib:] == reg.offset >> (2 + ib)) & (addr[:2] == 0)
    if reg.count != 1 << ib:
        hit = hit & (addr[2:2 + ib] < reg.count)
    return hit


class _State(IntEnum):
    IDLE = 0
    DECODE = 1
    READ = 2
    EXEC = 3
    COPY = 4


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
    cycle after.  A write to ``FEATURE``/``TAG`` waits while a pushed sample is pending or in the
    pipeline, a write to ``PUSH`` waits while the previous pushed sample is pending or in the
    pipeline, so a pushed sample is exactly the registers at the time of the PUSH write and
    RESULT_* always answer the last PUSH.  A commit's copy (K + 2 cycles, when the core is
    drained) runs between accesses; the clear after reset (``clear_cycles``) runs beside them.
    """

    def __init__(self, params: CoreParams, latency: int, clear_cycles: int | None = None) -> None:
        self.params = params
        self.latency = latency
        #: Cycles of table clearing after reset (both banks); the shadow bank's half goes first.
        self.table_clear_cycles = 2 * params.b if clear_cycles is None else clear_cycles
        self.clear_cycles = max(params.k, self.table_clear_cycles)
        self.regmap = RegisterMap(params)
        super().__init__({
            "bus": In(BusSignature()),
            "ctrl": Out(ControlSignature(params)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        p = self.params
        rm = self.regmap
        m = Module()
        bus = self.bus
        ctrl = self.ctrl
        regs = list(rm)

        # ---- request latch ----------------------------------------------------------------
        addr = Signal(ADDR_BITS)
        wdata = Signal(32)
        write = Signal()
        hits = Signal(len(regs))
        idx_w = max(clog2(r.count) for r in regs) or 1
        idx = Signal(idx_w)
        state = Signal(range(len(_State)))
        clearing = Signal(init=1)   # the clear after reset runs (see CLEAR below)
        resp_valid = Signal()
        resp_data = Signal(32)
        resp_err = Signal()
        start_copy = Signal()   # a commit's copy has priority over bus requests
        m.d.comb += [
            start_copy.eq((state == _State.IDLE) & ctrl.drained & ~ctrl.commit_done & ~clearing),
            bus.req_ready.eq((state == _State.IDLE) & ~start_copy),
            bus.resp_valid.eq(resp_valid),
            bus.resp_data.eq(resp_data),
            bus.resp_err.eq(resp_err),
        ]
        m.d.sync += resp_valid.eq(0)

        # ---- storage ------------------------------------------------------------------------
        # Shadow arrays with one entry per projection (OFFSET, SHIFT, WEIGHTS) live in small
        # memories (one read port: bus read-back or the commit copy); everything else RW in
        # registers.  Storage holds the field bits only.
        def width_of(r: Register) -> int:
            return max(f.lsb + f.width for f in r.fields)

        mem_regs = [r for r in regs if r.access == "RW" and r.shadow and r.count == p.k]
        store: dict[str, list[Signal]] = {}
        for r in regs:
            if r.access == "RW" and r not in mem_regs:
                store[r.name] = [Signal(width_of(r), init=r.reset, name=f"{r.name.lower()}{i}")
                                 for i in range(r.count)]
        kb = max(1, clog2(p.k))
        mem_rd: dict[str, Any] = {}
        mem_wr: dict[str, Any] = {}
        for r in mem_regs:
            mem = Memory(shape=unsigned(width_of(r)), depth=p.k, init=[])
            m.submodules[f"shadow_{r.name.lower()}"] = mem
            mem_rd[r.name] = mem.read_port(domain="sync")
            port = mem.write_port(domain="sync")
            # the write is registered (it lands one cycle after the decision): the clear/EXEC
            # address and enable decode stays off the memory's (flip-flop) write enables.  The
            # next access or commit copy reads the memory three cycles later at the earliest.
            n = r.name.lower()
            mem_wr[r.name] = wr = SimpleNamespace(
                addr=Signal.like(port.addr, name=f"wr_{n}_addr"), data=Signal.like(port.data, name=f"wr_{n}_data"),
                en=Signal(name=f"wr_{n}_en"))
            m.d.comb += [port.addr.eq(wr.addr), port.data.eq(wr.data), port.en.eq(wr.en)]

        def sext_if_signed(r: Register, v):
            if len(r.fields) == 1 and r.fields[0].signed and r.fields[0].lsb == 0:
                return v.as_signed()   # sign-extended to 32 by the assignment it feeds
            return v

        # ---- status and push/result registers ----------------------------------------------
        bus_error = Signal()
        push_pending = Signal()
        result_valid = Signal()
        result_score = Signal(32)
        result_tag = Signal(p.tag_bits)
        result_anomaly = Signal()
        result_argmax = Signal(8)

        status = Signal(32)
        st = rm["STATUS"]
        m.d.comb += [
            status[st.field("COMMIT_PENDING").lsb].eq(ctrl.commit_pending),
            status[st.field("ACTIVE_BANK").lsb].eq(ctrl.active_bank),
            status[st.field("BUSY").lsb].eq(ctrl.busy),
            status[st.field("RESULT_VALID").lsb].eq(result_valid),
            status[st.field("PUSH_PENDING").lsb].eq(push_pending),
            status[st.field("BUS_ERROR").lsb].eq(bus_error),
        ]
        info = Signal(32)
        ri = rm["RESULT_INFO"]
        fa = ri.field("ARGMAX")
        m.d.comb += [
            info[ri.field("ANOMALY").lsb].eq(result_anomaly),
            info[fa.lsb:fa.lsb + fa.width].eq(result_argmax),
        ]

        def ro_value(r: Register):
            return {
                "STATUS": status,
                "THRESHOLD_ACTIVE": ctrl.threshold_active,
                "SAMPLES": ctrl.samples,
                "ANOMALIES": ctrl.anomalies,
                "LATENCY": Const(self.latency, 32),
                "RESULT_SCORE": result_score,
                "RESULT_TAG": result_tag,
                "RESULT_INFO": info,
            }.get(r.name, Const(r.reset, 32))

        # ---- strobes default low -------------------------------------------------------------
        m.d.sync += [ctrl.commit.eq(0), ctrl.commit_threshold.eq(0), ctrl.clear_counters.eq(0),
                     ctrl.table_we.eq(0), ctrl.table_clear.eq(0), ctrl.load_valid.eq(0),
                     ctrl.commit_done.eq(0)]
        for r in mem_regs:
            m.d.sync += mem_wr[r.name].en.eq(0)   # overridden below

        # ---- CLEAR (after reset): zero the shadow memories and both table banks, as the model's
        # reset does.  The shadow memories take the first K cycles; the tables take
        # `table_clear_cycles`, the shadow bank's half first (the core maps the clear index so).
        # It runs beside the bus: an access to OFFSET/SHIFT/WEIGHTS waits for the first K cycles,
        # a TABLE write only if the clear has not passed its entry yet (never, for a host that
        # writes in address order), a commit's copy and a PUSH wait for the end.  A TABLE write
        # takes the write port from the clear for its cycle.
        n_clear = self.clear_cycles
        half = self.table_clear_cycles // 2
        ccnt = Signal(range(n_clear + 1))
        table_write_now = Signal()
        with m.If(clearing & (ccnt < p.k)):
            for r in mem_regs:
                m.d.sync += [mem_wr[r.name].addr.eq(ccnt), mem_wr[r.name].data.eq(0),
                             mem_wr[r.name].en.eq(1)]
        with m.If(clearing & ~table_write_now):
            m.d.sync += ccnt.eq(ccnt + 1)
            with m.If(ccnt < self.table_clear_cycles):
                m.d.sync += [ctrl.table_we.eq(1), ctrl.table_clear.eq(1), ctrl.table_index.eq(ccnt),
                             ctrl.table_data.eq(0)]
            with m.If(ccnt == n_clear - 1):
                m.d.sync += clearing.eq(0)
        cnt = Signal(range(p.k + 2))

        # ---- COPY (commit): when the core is drained, read shadow entry c in cycle c and hand
        # it to the core in cycle c + 1 (registered); then strobe commit_done.
        for r in mem_regs:   # the access's entry, or the commit copy's
            m.d.comb += mem_rd[r.name].addr.eq(Mux(state == _State.COPY, cnt, addr[2:2 + kb]))
        with m.If(state == _State.COPY):
            m.d.sync += [
                cnt.eq(cnt + 1),
                ctrl.load_valid.eq((cnt >= 1) & (cnt <= p.k)),
                ctrl.load_index.eq(cnt - 1),
                ctrl.load_weights.eq(mem_rd["WEIGHTS"].data),
                ctrl.load_offset.eq(mem_rd["OFFSET"].data),
                ctrl.load_shift.eq(mem_rd["SHIFT"].data),
            ]
            with m.If(cnt == p.k + 1):
                m.d.sync += [ctrl.commit_done.eq(1), state.eq(_State.IDLE), cnt.eq(0)]

        # ---- bus access: latch, decode, execute --------------------------------------------
        rhits = Signal(len(regs))   # hits of a read (0 for a write): gate the read multiplexer
        arr_sel = {r.name: Signal(width_of(r), name=f"sel_{r.name.lower()}") for r in regs
                   if r.access == "RW" and r not in mem_regs and r.count > 1}
        with m.If(state == _State.IDLE):
            with m.If(start_copy):
                m.d.sync += [state.eq(_State.COPY), cnt.eq(0)]
            with m.Elif(bus.req_valid):
                m.d.sync += [addr.eq(bus.req_addr), wdata.eq(bus.req_data), write.eq(bus.req_write),
                             state.eq(_State.DECODE)]
        with m.If(state == _State.DECODE):
            m.d.sync += state.eq(_State.READ)
            for j, r in enumerate(regs):
                m.d.sync += [hits[j].eq(_decode(r, addr)), rhits[j].eq(_decode(r, addr) & ~write)]
            m.d.sync += idx.eq(addr[2:2 + idx_w])
            # register arrays: the element is selected here, so READ is only an AND-OR
            for r in regs:
                if r.access == "RW" and r not in mem_regs and r.count > 1:
                    ib = clog2(r.count)
                    sel = Const(0, len(arr_sel[r.name]))
                    for i in range(r.count):
                        sel = Mux(addr[2:2 + ib] == i, store[r.name][i], sel)
                    m.d.sync += arr_sel[r.name].eq(sel)

        # READ: the read multiplexer into a register (its own cycle: no path from the access
        # decision or the push/commit state into resp_data)
        # The OR over all registers is split: READ registers the OR of each group of
        # `_READ_GROUP` registers, EXEC ORs the groups into resp_data (two LUT levels each side
        # instead of five from the shadow memories' read data; the UP5K's critical path).
        terms = []
        for j, r in enumerate(regs):
            hit = rhits[j]
            if r.access == "RW":
                term = Signal(32, name=f"rd_{r.name.lower()}")
                if r in mem_regs:
                    m.d.comb += term.eq(sext_if_signed(r, mem_rd[r.name].data))
                elif r.count == 1:
                    m.d.comb += term.eq(sext_if_signed(r, store[r.name][0]))
                else:
                    m.d.comb += term.eq(sext_if_signed(r, arr_sel[r.name]))
                terms.append(term & hit.replicate(32))
            elif r.access == "RO":
                terms.append(ro_value(r) & hit.replicate(32))
        groups = [terms[i:i + _READ_GROUP] for i in range(0, len(terms), _READ_GROUP)]
        rdata_g = [Signal(32, name=f"rdata_g{i}") for i in range(len(groups))]
        with m.If(state == _State.READ):
            m.d.sync += state.eq(_State.EXEC)
            for g, grp in zip(rdata_g, groups):
                acc = Const(0, 32)
                for t in grp:
                    acc = acc | t
                m.d.sync += g.eq(acc)
        rdata_r = Const(0, 32)
        for g in rdata_g:
            rdata_r = rdata_r | g

        # `wait` (the access must wait: push path busy, clear not past the entry) is computed
        # from the registered hits every cycle and registered: EXEC uses the value of the cycle
        # before.  That is exact because every wait condition only ever falls during an access
        # (push_pending/push_inflight are set only by this front end's PUSH write, the clear
        # counter only grows), so a lagging 0 is still 0; a lagging 1 costs one cycle at most.
        # It keeps the compares of the clear counter and the push state off the write-enable
        # fan-out of the register file.
        wait_c = Signal()
        wait = Signal()
        waits_on_pending = [j for j, r in enumerate(regs) if r.name in ("FEATURE", "TAG")]
        j_push = next(j for j, r in enumerate(regs) if r.name == "PUSH")
        j_mem = [j for j, r in enumerate(regs) if r in mem_regs]
        j_table = next(j for j, r in enumerate(regs) if r.name == "TABLE")
        tab_ib = clog2(rm["TABLE"].count)
        # the clear's position of a table index: entry b of every projection's memory (B
        # entries a bank), or the index itself (one memory of K*B entries a bank)
        tab_key = idx[:tab_ib] if half >= rm["TABLE"].count else idx[:clog2(half)]
        m.d.sync += wait.eq(wait_c)
        m.d.comb += wait_c.eq((write & (
            (Cat(*(hits[j] for j in waits_on_pending)).any() & (push_pending | ctrl.push_inflight))
            | (hits[j_push] & (push_pending | ctrl.push_inflight))))
            | (clearing & Cat(*(hits[j] for j in j_mem)).any() & (ccnt < p.k))
            | (clearing & hits[j_table] & write & (ccnt < half) & (tab_key >= ccnt)))
        # `go` = (state == EXEC) & ~wait, as a register of its own: the access's writes fan out
        # from one flip-flop instead of a decode of `state` (an UP5K critical path).  EXEC is
        # entered only from READ and left only when ~wait, so next(state) == EXEC exactly when
        # state == READ or (state == EXEC and wait); and next(wait) is wait_c.
        go = Signal()
        m.d.sync += go.eq(((state == _State.READ) | ((state == _State.EXEC) & wait)) & ~wait_c)
        m.d.comb += table_write_now.eq(go & write & hits[j_table])

        # the access's error (no register at the address, or a write to a read-only one) depends
        # only on hits/write, which hold from DECODE to the end of EXEC: registered every cycle,
        # it is exact in EXEC (READ lies between) and keeps the wide reduction off the error flag
        err_c = hits == 0
        for j, r in enumerate(regs):
            if r.access == "RO":
                err_c = err_c | (hits[j] & write)
        err = Signal()
        m.d.sync += err.eq(err_c)

        with m.If(go):
            m.d.sync += [state.eq(_State.IDLE), resp_valid.eq(1)]
            for j, r in enumerate(regs):
                hit = hits[j]
                ib = clog2(r.count)
                ix = idx[:ib] if ib else Const(0, 1)
                # -- writes
                with m.If(write & hit):
                    if r in mem_regs:
                        m.d.sync += [mem_wr[r.name].addr.eq(ix), mem_wr[r.name].data.eq(wdata),
                                     mem_wr[r.name].en.eq(1)]
                    elif r.access == "RW":
                        for i, sig in enumerate(store[r.name]):
                            with m.If(ix == i):
                                m.d.sync += sig.eq(wdata[:len(sig)])
                    elif r.name == "CTRL":
                        m.d.sync += [
                            ctrl.commit.eq(wdata[r.field("COMMIT").lsb]),
                            ctrl.commit_threshold.eq(wdata[r.field("COMMIT_THRESHOLD").lsb]),
                            ctrl.clear_counters.eq(wdata[r.field("CLEAR_COUNTERS").lsb]),
                        ]
                        with m.If(wdata[r.field("CLEAR_ERROR").lsb]):
                            m.d.sync += bus_error.eq(0)
                    elif r.name == "PUSH":
                        m.d.sync += [push_pending.eq(1), result_valid.eq(0)]
                    elif r.name == "TABLE":
                        m.d.sync += [ctrl.table_we.eq(1), ctrl.table_index.eq(ix),
                                     ctrl.table_data.eq(wdata)]
                    elif r.access == "WO":  # pragma: no cover - a new WO register needs code here
                        raise AssertionError(f"write-only register {r.name} has no behaviour")
            m.d.sync += [resp_data.eq(rdata_r), resp_err.eq(err)]
            with m.If(write & err):
                m.d.sync += bus_error.eq(1)

        with m.If(bus.err_set):
            m.d.sync += bus_error.eq(1)

        # ---- push path ---------------------------------------------------------------------
        with m.If(ctrl.push_ready):
            m.d.sync += push_pending.eq(0)
        with m.If(ctrl.result_valid):
            m.d.sync += [
                result_valid.eq(1),
                result_score.eq(ctrl.result_score),
                result_tag.eq(ctrl.result_tag),
                result_anomaly.eq(ctrl.result_anomaly),
                result_argmax.eq(ctrl.result_argmax),
            ]

        # ---- to the core -------------------------------------------------------------------
        m.d.comb += [
            ctrl.shadow_threshold.eq(store["THRESHOLD"][0]),
            ctrl.push_valid.eq(push_pending & ~clearing),
            ctrl.push_features.eq(Cat(*store["FEATURE"])),
            ctrl.push_tag.eq(store["TAG"][0]),
            self.irq.eq(result_valid),
        ]
        return m

