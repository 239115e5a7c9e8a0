"""The SPI register bridge's frame protocol (``docs/interfaces.md``), declared once.

The gateware bridge (:mod:`mailpulse.hdl.spi`), the simulated device and testbenches
(:mod:`mailpulse.sim`) and the host side (:mod:`mailpulse.host_bridge.spi`) all take the command
bytes and the frame layout from here.  Pure Python, no Amaranth import.

SPI mode 0, MSB first, one transaction per ``cs_n`` low::

    write  MOSI: 0x02 A1 A0 W0 W1 ...      words big-endian, address + 4 per word
    read   MOSI: 0x0B A1 A0 00 xx xx ...   MISO: A5 00 00 00 W0 W1 ...

The first MISO byte of every transaction is :data:`SYNC_BYTE`; an unconfigured FPGA or an empty
bus reads ``0x00`` or ``0xFF`` there.  A partial last word of a write is discarded; any other
command byte makes the bridge ignore the rest of the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from .regmap import ADDR_BITS

__all__ = [
    "ADDR_BYTES",
    "CMD_READ",
    "CMD_WRITE",
    "MIN_CLK_BEFORE_READ_DATA",
    "MIN_CLK_PER_SCK",
    "READ_HEADER_BYTES",
    "SYNC_BYTE",
    "WORD_BYTES",
    "WRITE_HEADER_BYTES",
    "read_frame",
    "read_words",
    "write_frame",
]

#: Command byte of a write: the words that follow go to consecutive registers.
CMD_WRITE = 0x02
#: Command byte of a read: after one dummy byte, MISO carries consecutive registers.
CMD_READ = 0x0B
#: The bridge's first MISO byte of every transaction.
SYNC_BYTE = 0xA5
#: Bytes of the (big-endian) byte address after the command: the register window's address.
ADDR_BYTES = ADDR_BITS // 8
#: Bytes per register word (big-endian on the wire).
WORD_BYTES = 4
#: Bytes before the first data word of a write: command and address.
WRITE_HEADER_BYTES = 1 + ADDR_BYTES
#: Bytes before the first data word of a read: command, address and one dummy byte.
READ_HEADER_BYTES = 1 + ADDR_BYTES + 1
#: The bridge oversamples ``sck`` through synchronisers: ``sck`` must stay at or below ``clk / 4``.
MIN_CLK_PER_SCK = 4
#: Core clocks between ``cs_n`` falling and the first read-data bit, at the fastest ``sck``.
MIN_CLK_BEFORE_READ_DATA = READ_HEADER_BYTES * 8 * MIN_CLK_PER_SCK


def _address(address: int) -> bytes:
    return (address & ((1 << (8 * ADDR_BYTES)) - 1)).to_bytes(ADDR_BYTES, "big")


def write_frame(address: int, words: Sequence[int]) -> bytes:
    """MOSI of one write transaction: ``words`` to ``address``, ``address + 4``, ..."""
    return bytes([CMD_WRITE]) + _address(address) + b"".join(
        (int(w) & 0xFFFFFFFF).to_bytes(WORD_BYTES, "big") for w in words)


def read_frame(address: int, count: int) -> bytes:
    """MOSI of one read transaction of ``count`` words from ``address`` on."""
    return bytes([CMD_READ]) + _address(address) + bytes(1 + WORD_BYTES * count)


def read_words(miso: bytes | Sequence[int], count: int | None = None) -> list[int]:
    """The data words of a read transaction's MISO (after the header), ``count`` of them or all."""
    body = bytes(miso[READ_HEADER_BYTES:])
    n = len(body) // WORD_BYTES if count is None else count
    if len(body) < n * WORD_BYTES:
        raise ValueError(f"a read of {n} words needs {READ_HEADER_BYTES + n * WORD_BYTES} MISO bytes, "
                         f"not {len(miso)}")
    return [int.from_bytes(body[WORD_BYTES * i:WORD_BYTES * (i + 1)], "big") for i in range(n)]
