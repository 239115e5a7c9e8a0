"""The front end's internal register port (:class:`BusSignature`, between a bus bridge and
:class:`mailpulse.hdl.regs.RegisterFile`) and the address decode of a declared register."""

from __future__ import annotations

from amaranth.hdl import Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import clog2
from .regmap import ADDR_BITS, Register

__all__ = ["BusSignature", "decode", "sext_if_signed"]


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


def decode(reg: Register, addr: Signal):
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


def sext_if_signed(r: Register, v: Value) -> Value:
    """A register with one signed field at bit 0 reads sign-extended (by the 32-bit assignment it feeds)."""
    if len(r.fields) == 1 and r.fields[0].signed and r.fields[0].lsb == 0:
        return v.as_signed()
    return v
