"""One projection's table memory with a registered read, as the streaming core's LUT variant uses
it: the read address is taken at one clock edge, the value is out of a register after the next.

Two implementations of the same behaviour:

* anywhere but ECP5 (simulation, iCE40, xc7): an Amaranth :class:`~amaranth.lib.memory.Memory`
  (its synchronous read port) and a register after it;
* on ECP5 (``platform.family == "ecp5"``): a ``DP16KD`` in 1024 x 18 mode with the output register
  of its read port switched on (``REGMODE_B = "OUTREG"``).  Yosys maps memories to DP16KDs only
  without that register, and the block RAM's clock-to-out without it (5.8 ns at speed grade 6)
  plus the route to a fabric register was the ECP5 streaming build's critical path.

Both read with ``rd_en`` as the clock enable of both stages (the pipeline's enable: a stalled
pipeline holds the value), write ``wr_data`` to ``wr_addr`` when ``wr_en``, and never read and
write one address in the same cycle in the core (the active and the shadow bank differ), so the
two agree cycle for cycle.  The ECP5 variant ignores the contents of ``data`` (the front end clears
the tables after reset).
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import C, Cat, ClockSignal, Instance, Module, Shape, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

__all__ = ["DP16KD_DEPTH", "TableMemory"]

#: Entries of a DP16KD in its 18-bit-wide mode.
DP16KD_DEPTH = 1024


class TableMemory(wiring.Component):
    """``data`` (a :class:`~amaranth.lib.memory.MemoryData`, 16-bit entries at most on ECP5) with a
    two-stage registered read (``rd_addr`` -> ``rd_data`` two clock edges later, both stages
    enabled by ``rd_en``) and a write port, in the ``sync`` domain."""

    def __init__(self, data: MemoryData) -> None:
        self.data = data
        abits = max(1, (data.depth - 1).bit_length())
        self.width = Shape.cast(data.shape).width
        super().__init__({
            "rd_addr": In(abits), "rd_en": In(1), "rd_data": Out(self.width),
            "wr_addr": In(abits), "wr_data": In(self.width), "wr_en": In(1),
        })

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        if getattr(platform, "family", None) == "ecp5" and self.width <= 18 and self.data.depth <= DP16KD_DEPTH:
            self._dp16kd(m)
            return m
        mem = m.submodules.mem = Memory(data=self.data)
        rd = mem.read_port(domain="sync")
        wr = mem.write_port(domain="sync")
        out = Signal(unsigned(self.width), reset_less=True, name="rd_reg")
        m.d.comb += [rd.addr.eq(self.rd_addr), rd.en.eq(self.rd_en),
                     wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data), wr.en.eq(self.wr_en),
                     self.rd_data.eq(out)]
        with m.If(self.rd_en):
            m.d.sync += out.eq(rd.data)
        return m

    def _dp16kd(self, m: Module) -> None:
        """Port A writes, port B reads through its output register; x18 mode: the address is
        AD[13:4], AD[1:0] are the byte enables of a write."""
        dob = Signal(18, name="dob")
        ad_a = Cat(C(0b11, 2), C(0, 2), self.wr_addr, C(0, 10 - len(self.wr_addr)))
        ad_b = Cat(C(0, 4), self.rd_addr, C(0, 10 - len(self.rd_addr)))
        ports: dict[str, Any] = {}
        for i in range(14):
            ports[f"i_ADA{i}"] = ad_a[i]
            ports[f"i_ADB{i}"] = ad_b[i]
        wdata = Cat(self.wr_data, C(0, 18 - self.width))
        for i in range(18):
            ports[f"i_DIA{i}"] = wdata[i]
            ports[f"i_DIB{i}"] = C(0, 1)
            ports[f"o_DOB{i}"] = dob[i]
        for x in ("A", "B"):
            for j in range(3):
                ports[f"i_CS{x}{j}"] = C(0, 1)
        m.submodules.bram = Instance(
            "DP16KD",
            p_DATA_WIDTH_A=18, p_DATA_WIDTH_B=18,
            p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
            p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
            p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
            p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
            p_GSR="AUTO",
            i_CLKA=ClockSignal("sync"), i_CLKB=ClockSignal("sync"),
            i_WEA=self.wr_en, i_CEA=C(1, 1), i_OCEA=C(1, 1), i_RSTA=C(0, 1),
            i_WEB=C(0, 1), i_CEB=self.rd_en, i_OCEB=self.rd_en, i_RSTB=C(0, 1),
            **ports,
        )
        m.d.comb += self.rd_data.eq(dob[:self.width])
