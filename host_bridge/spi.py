"""The SPI register bridge protocol (``docs/interfaces.md``), host side and a model of the device side.

Host side: :class:`SpiRegisterBus` turns register reads/writes into SPI transactions on a
``spidev.SpiDev``-compatible object (``xfer2(list[int]) -> list[int]``)::

    write  MOSI: 0x02 A1 A0 W0 W1 ...      (words big-endian, address +4 per word)
    read   MOSI: 0x0B A1 A0 00 xx xx ...   MISO: A5 00 00 00 W0 W1 ...

(the frame layout and the command bytes are declared in :mod:`mailpulse.hdl.spiproto`, which the
gateware bridge and the simulation use too).  The first MISO byte of every transaction is the sync
byte ``0xA5``; anything else means no configured bridge answers (an unconfigured iCE40 reads
``0x00`` or ``0xFF``), and the bus raises :class:`SpiSyncError` instead of returning garbage.

Device side for tests and benchmarks without the RTL: :class:`SpiBridgeModel` implements the same
byte protocol over :class:`mailpulse.hdl.reference.EmulatedCore`, and :class:`FakeSpiDev` is a
``spidev``-compatible object that forwards each transaction to any ``transfer(bytes) -> bytes``
callable - the model, or the simulated RTL's SPI top (``mailpulse.sim.device``), where the
byte-level protocol is the real one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mailpulse.hdl.reference import BusError, EmulatedCore
from mailpulse.hdl.spiproto import (
    CMD_READ,
    CMD_WRITE,
    MIN_CLK_BEFORE_READ_DATA,
    READ_HEADER_BYTES,
    SYNC_BYTE,
    WORD_BYTES,
    WRITE_HEADER_BYTES,
    read_frame,
    read_words,
    write_frame,
)

from .bus import BurstMixin

__all__ = ["CMD_READ", "CMD_WRITE", "MIN_CLK_BEFORE_READ_DATA", "SYNC_BYTE", "FakeSpiDev", "SpiBridgeModel",
           "SpiDevLike", "SpiRegisterBus", "SpiSyncError"]
#: spidev's default buffer (``/sys/module/spidev/parameters/bufsiz``): the longest transaction.
SPIDEV_BUFSIZ = 4096


class SpiSyncError(RuntimeError):
    """The first MISO byte was not the bridge's sync byte: no configured scorer on the bus."""


class SpiDevLike(Protocol):
    """The part of ``spidev.SpiDev`` the bridge uses."""

    mode: int
    max_speed_hz: int

    def xfer2(self, data: list[int]) -> list[int]: ...

    def close(self) -> None: ...


class SpiRegisterBus(BurstMixin):
    """:class:`~mailpulse.host_bridge.bus.RegisterBus` over the SPI bridge.

    Parameters
    ----------
    spi : SpiDevLike
        An open ``spidev.SpiDev`` (mode 0) or a compatible object.
    max_transfer : int
        Longest transaction in bytes (spidev's ``bufsiz``); bursts are split to fit.
    """

    def __init__(self, spi: SpiDevLike, *, max_transfer: int = SPIDEV_BUFSIZ) -> None:
        if max_transfer < 8:
            raise ValueError(f"max_transfer must be at least 8 bytes, not {max_transfer}")
        self.spi = spi
        self.max_words = (max_transfer - READ_HEADER_BYTES) // WORD_BYTES
        self.transactions = 0

    def xfer(self, data: list[int]) -> list[int]:
        """One raw frame (command byte first); checks the sync byte and returns MISO."""
        return self._xfer(data)

    def _xfer(self, data: list[int]) -> list[int]:
        self.transactions += 1
        miso = self.spi.xfer2(data)
        if len(miso) != len(data):
            raise SpiSyncError(f"the SPI device returned {len(miso)} bytes for a {len(data)}-byte transaction")
        if miso[0] != SYNC_BYTE:
            raise SpiSyncError(f"the SPI bridge answered 0x{miso[0]:02X} instead of the sync byte 0x{SYNC_BYTE:02X}: "
                               "no configured mailpulse FPGA on this bus (check the bitstream, CDONE and wiring)")
        return miso

    def write_burst(self, address: int, values: Sequence[int]) -> None:
        for i in range(0, len(values), self.max_words):
            chunk = values[i:i + self.max_words]
            a = address + 4 * i
            self._xfer(list(write_frame(a, chunk)))

    def read_burst(self, address: int, count: int) -> list[int]:
        out: list[int] = []
        for i in range(0, count, self.max_words):
            n = min(self.max_words, count - i)
            a = address + 4 * i
            out += read_words(self._xfer(list(read_frame(a, n))), n)
        return out

    def write(self, address: int, value: int) -> None:
        self.write_burst(address, [value])

    def read(self, address: int) -> int:
        return self.read_burst(address, 1)[0]


class SpiBridgeModel:
    """The SPI bridge's byte protocol over :class:`~mailpulse.hdl.reference.EmulatedCore` (one call per ``cs_n`` frame).

    Bus errors (unmapped address, read-only write) set ``STATUS.BUS_ERROR`` in the model and the
    frame continues, as the RTL bridge does.  A partial word at the end of a write is discarded;
    an unknown command makes the rest of the frame ignored (MISO 0x00 after the sync byte).
    """

    def __init__(self, model: EmulatedCore) -> None:
        self.model = model

    def transfer(self, mosi: bytes) -> bytes:
        miso = bytearray(len(mosi))
        if not mosi:
            return bytes(miso)
        miso[0] = SYNC_BYTE
        cmd = mosi[0]
        if len(mosi) < WRITE_HEADER_BYTES or cmd not in (CMD_WRITE, CMD_READ):
            return bytes(miso)
        addr = int.from_bytes(mosi[1:WRITE_HEADER_BYTES], "big")
        if cmd == CMD_WRITE:
            body = mosi[WRITE_HEADER_BYTES:]
            for j in range(len(body) // WORD_BYTES):
                try:
                    self.model.write(addr, int.from_bytes(body[WORD_BYTES * j:WORD_BYTES * (j + 1)], "big"))
                except BusError:
                    pass
                addr = (addr + WORD_BYTES) & 0xFFFF
            return bytes(miso)
        pos = READ_HEADER_BYTES
        while pos < len(mosi):
            reg = self.model.regmap.decode(addr)
            try:
                value = 0 if reg is not None and reg[0].name == "LATENCY" else self.model.read(addr)
            except BusError:
                value = 0
            word = value.to_bytes(WORD_BYTES, "big")
            for j in range(min(WORD_BYTES, len(mosi) - pos)):
                miso[pos + j] = word[j]
            pos += WORD_BYTES
            addr = (addr + WORD_BYTES) & 0xFFFF
        return bytes(miso)


class FakeSpiDev:
    """A ``spidev.SpiDev`` stand-in that forwards every transaction to ``transfer(bytes) -> bytes``.

    It checks what the real driver would need (mode 0, a speed set, 8 bits per word, transfers no
    longer than ``bufsiz``) and records each transaction in ``log`` as ``(mosi, miso)``.
    """

    def __init__(self, transfer: Callable[[bytes], bytes], *, bufsiz: int = SPIDEV_BUFSIZ,
                 keep_log: bool = False) -> None:
        self._transfer = transfer
        self.bufsiz = bufsiz
        self.mode = 0
        self.max_speed_hz = 0
        self.bits_per_word = 8
        self.lsbfirst = False
        self.no_cs = False
        self.opened: tuple[int, int] | None = None
        self.keep_log = keep_log
        self.log: list[tuple[bytes, bytes]] = []
        self.bytes_moved = 0
        self.transactions = 0
        #: Seconds spent inside ``transfer`` (the device side), to separate host cost in benchmarks.
        self.device_seconds = 0.0

    def open(self, bus: int, device: int) -> None:
        self.opened = (bus, device)

    def close(self) -> None:
        self.opened = None

    def _check(self, n: int) -> None:
        if self.mode != 0 or self.bits_per_word != 8 or self.lsbfirst:
            raise OSError("the mailpulse SPI bridge needs mode 0, 8-bit words, MSB first")
        if self.max_speed_hz <= 0:
            raise OSError("max_speed_hz is not set")
        if n > self.bufsiz:
            raise OSError(f"a {n}-byte transfer exceeds spidev's bufsiz ({self.bufsiz})")

    def xfer2(self, data: list[int]) -> list[int]:
        self._check(len(data))
        mosi = bytes(data)
        t = time.perf_counter()
        miso = self._transfer(mosi)
        self.device_seconds += time.perf_counter() - t
        self.bytes_moved += len(mosi)
        self.transactions += 1
        if self.keep_log:
            self.log.append((mosi, miso))
        return list(miso)

    xfer = xfer2

    def xfer3(self, data: list[int]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(data), self.bufsiz):
            out += self.xfer2(list(data[i:i + self.bufsiz]))
        return out

    def writebytes2(self, data: bytes | list[int]) -> None:
        self.xfer3(list(data))
