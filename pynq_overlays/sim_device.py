"""A simulated ``pynq.Device``: the unmodified PYNQ stack (Overlay, the bound driver,
``pynq.allocate``, ``pynq.lib.dma.DMA``) running against the scorer core without a board.

What PYNQ needs from a device, and what this one provides:

* ``REGISTER_RW`` capability: every ``MMIO`` access becomes ``read_registers`` /
  ``write_registers``; addresses are decoded with the memory map of the ``.hwh`` (parsed by
  ``pynqmetadata``, exactly as on the board) and routed to the scorer core or to the DMA model.
* ``allocate``: returns real ``pynq.buffer.PynqBuffer`` objects with *non-coherent* device memory:
  the device keeps its own copy, ``flush`` copies host to device and ``invalidate`` device to host,
  so a driver that forgets ``flush``/``invalidate`` reads stale data here as it would on a Zynq.
* An AXI DMA model (PG021 simple mode: ``DMACR``/``DMASR``/``SA``/``DA``/``LENGTH``) that moves
  device memory over the scorer's AXI4-Stream ports: MM2S packets go in, results (one packet per
  packet, ``tlast`` carried through) go to a FIFO that S2MM transfers drain.
* ``download`` validates the ``.bit`` header (a wrong file is an error, as on the board), then
  resets the core.

The *core* behind the device is a :class:`CorePort`: anything with ``read``, ``write`` and
``stream``.  :class:`EmulatedPort` wraps :class:`mailpulse.hdl.reference.EmulatedCore`; :func:`rtl_port` opens the
generated RTL under cocotb (``mailpulse.sim.device``), where each register access is an AXI4-Lite
transaction and each DMA packet goes through ``s_axis``/``m_axis``.

Limits: the DMA completes a transfer as soon as it is started (its FIFO towards S2MM is unbounded,
a real one back-pressures); scatter-gather mode and interrupts are not modelled (the overlay uses
neither); an AXI ``SLVERR`` raises :class:`mailpulse.hdl.reference.BusError` in the caller (on a Zynq it is a bus
fault).
"""

from __future__ import annotations

import bisect
import ctypes
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pynq
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import BusError, EmulatedCore, ScoreResult
from mailpulse.hdl.regmap import VLNV
from mailpulse.host_bridge.backends.sim import open_rtl
from mailpulse.host_bridge.bitstream import read_xilinx_bit
from mailpulse.host_bridge.bus import EmulatedBus
from mailpulse.host_bridge.streamfmt import RESULT_BYTES, pack_results, sample_bytes, unpack_events, unpack_samples
from pynq.buffer import PynqBuffer
from pynq.ps import Clocks
from pynqmetadata.frontends import Metadata
from pynqmetadata.views.runtime import RuntimeMetadataParser

from .hwh import DMA_VLNV
from .overlay import fill_fclk_rates

#: First physical address handed out by :meth:`SimulatedDevice.allocate` (inside the HP0 DDR window).
MEMORY_BASE = 0x1000_0000
MEMORY_END = 0x2000_0000
PAGE = 4096


class CorePort(Protocol):
    """The scorer core as the simulated device drives it."""

    params: CoreParams

    def read(self, address: int) -> int: ...

    def write(self, address: int, value: int) -> None: ...

    def stream_raw(self, beats: bytes, tlast: npt.ArrayLike | None = None) -> tuple[bytes, npt.NDArray[np.int64]]:
        """Sample beats in on ``s_axis`` (``tlast`` on the last), 8-byte result beats out."""
        ...

    def close(self) -> None: ...


class EmulatedPort(EmulatedBus):
    """:class:`CorePort` over the register-level reference model."""

    def __init__(self, params: CoreParams) -> None:
        super().__init__(EmulatedCore(params))
        self.params = params

    def stream(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64], *, routes: npt.ArrayLike | None = None,
               latencies: npt.ArrayLike | None = None) -> ScoreResult:
        return self.model.stream(x, tags, routes, latencies)

    def stream_raw(self, beats: bytes, tlast: npt.ArrayLike | None = None) -> tuple[bytes, npt.NDArray[np.int64]]:
        """Sample beats in, result beats out; with routes (R > 0) every beat is an event (its route
        id and latency, as the RTL takes them) and every result beat carries below/above."""
        x, tags = unpack_samples(self.params, beats)
        events = unpack_events(self.params, beats) if self.params.r else (None, None)
        n = len(x)
        tl = np.zeros(n, dtype=np.int64)
        if n:
            tl[-1] = 1
        if tlast is not None:
            tl = np.asarray(tlast, dtype=np.int64)
        return pack_results(self.model.stream(x, tags, *events)).tobytes(), tl

    def reset(self) -> None:
        self.model.reset()

    def close(self) -> None:
        return None


def rtl_port(params: CoreParams, simulator: str | None = None) -> CorePort:
    """The AXI top of the generated RTL under cocotb, as a :class:`CorePort` (see ``mailpulse.sim.device``)."""
    port: CorePort = open_rtl(params, simulator=simulator, top="axi")
    return port


class SlcrModel:
    """The Zynq-7000 SLCR clock registers PYNQ touches when it downloads an overlay.

    Reset values are a PYNQ-Z2's: 50 MHz PS reference, IO PLL x20 (1000 MHz), ARM PLL x26,
    DDR PLL x21, FCLK0 = IO PLL / 10 / 1 = 100 MHz.  ``Overlay.download`` reprograms the FCLK
    divisors from the ``.hwh`` through these registers, as on the board.
    """

    BASE = 0xF800_0000
    SIZE = 0x1000

    def __init__(self) -> None:
        self.regs = {0x100: 26 << 12, 0x104: 21 << 12, 0x108: 20 << 12, 0x120: (2 << 8) | (0 << 4),
                     0x170: (1 << 20) | (10 << 8), 0x180: (1 << 20) | (20 << 8), 0x190: (1 << 20) | (20 << 8),
                     0x1A0: (1 << 20) | (20 << 8)}

    def read(self, offset: int) -> int:
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self.regs[offset] = value & 0xFFFFFFFF

    def fclk_mhz(self, index: int, ref_mhz: float = 50.0) -> float:
        """FCLK<index> as programmed (IO PLL source)."""
        ctrl = self.regs[0x170 + 0x10 * index]
        pll = ref_mhz * ((self.regs[0x108] >> 12) & 0x7F)
        return pll / (((ctrl >> 8) & 0x3F) * ((ctrl >> 20) & 0x3F))


class _Channel:
    """One AXI DMA channel's registers (PG021 simple mode)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.run = False
        self.idle = False
        self.ioc = False
        self.err = 0
        self.addr = 0
        self.length = 0
        self.armed = False
        self.transferred = 0
        self.stalled_polls = 0

    @property
    def dmasr(self) -> int:
        return ((0 if self.run else 1) | (2 if self.idle else 0) | self.err | (0x1000 if self.ioc else 0))


class AxiDmaModel:
    """AXI DMA (simple mode) between device memory and the scorer's streams.

    Register offsets are the Xilinx AXI DMA's (PG021), not the scorer's.
    """

    MM2S, S2MM = 0x00, 0x30
    DMACR, DMASR, ADDR_LO, ADDR_HI, LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
    #: DMASR polls without progress after which a wait is reported as a hang instead of looping forever.
    HANG_POLLS = 100_000

    def __init__(self, device: SimulatedDevice) -> None:
        self.device = device
        self.ch = {self.MM2S: _Channel(), self.S2MM: _Channel()}
        self.fifo: deque[bytearray] = deque()   # result packets waiting for S2MM

    def _split(self, offset: int) -> tuple[_Channel, int, int]:
        base = self.S2MM if offset >= self.S2MM else self.MM2S
        rel = offset - base
        if base == self.S2MM:
            rel = {0x0: self.DMACR, 0x4: self.DMASR, 0x18: self.ADDR_LO, 0x1C: self.ADDR_HI, 0x28: self.LENGTH}.get(
                rel, -1)
        return self.ch[base], base, rel

    def read(self, offset: int) -> int:
        ch, _base, rel = self._split(offset)
        if rel == self.DMACR:
            return 1 if ch.run else 0
        if rel == self.DMASR:
            if ch.run and ch.armed and not ch.idle:
                ch.stalled_polls += 1
                if ch.stalled_polls > self.HANG_POLLS:
                    raise RuntimeError("simulated AXI DMA: the S2MM channel waits for a result packet that no MM2S "
                                       "transfer will produce (the driver would hang here on a board)")
            return ch.dmasr
        if rel == self.ADDR_LO:
            return ch.addr & 0xFFFFFFFF
        if rel == self.ADDR_HI:
            return ch.addr >> 32
        if rel == self.LENGTH:
            return ch.transferred if ch.idle else ch.length
        return 0

    def write(self, offset: int, value: int) -> None:
        ch, base, rel = self._split(offset)
        if rel == self.DMACR:
            if value & 0x4:              # soft reset resets both channels and drops buffered data
                for c in self.ch.values():
                    c.reset()
                self.fifo.clear()
                return
            ch.run = bool(value & 1)
        elif rel == self.DMASR:
            if value & 0x1000:
                ch.ioc = False
        elif rel == self.ADDR_LO:
            ch.addr = (ch.addr & ~0xFFFFFFFF) | (value & 0xFFFFFFFF)
        elif rel == self.ADDR_HI:
            ch.addr = (ch.addr & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32)
        elif rel == self.LENGTH:
            if not ch.run:
                return
            ch.length = value & ((1 << 26) - 1)
            ch.idle, ch.armed, ch.transferred, ch.stalled_polls = False, True, 0, 0
            if ch.length == 0:
                ch.err |= 0x10       # DMAIntErr: zero-length transfer
                ch.armed = False
                return
            if base == self.MM2S:
                self._run_mm2s(ch)
            self._service_s2mm()

    def _run_mm2s(self, ch: _Channel) -> None:
        data = self.device.memory_read(ch.addr, ch.length)
        if data is None:
            ch.err |= 0x40          # DMADecErr: address outside memory
            ch.armed = False
            return
        # the AXI4-Stream width converter regroups the DMA's 64-bit beats into sample beats; a
        # partial last sample beat: the scorer ignores tkeep, the missing bytes read as 0
        nb = sample_bytes(self.device.port.params)
        if len(data) % nb:
            data += bytes(nb - len(data) % nb)
        out, _tlast = self.device.port.stream_raw(data)      # one packet: tlast on the last beat
        self.fifo.append(bytearray(out))
        ch.transferred, ch.idle, ch.ioc, ch.armed = ch.length, True, True, False

    def _service_s2mm(self) -> None:
        ch = self.ch[self.S2MM]
        if not (ch.run and ch.armed) or not self.fifo:
            return
        packet = self.fifo[0]
        n = min(len(packet), ch.length)
        if not self.device.memory_write(ch.addr, bytes(packet[:n])):
            ch.err |= 0x40
            ch.armed = False
            return
        del packet[:n]
        if not packet:
            self.fifo.popleft()
        ch.transferred, ch.idle, ch.ioc, ch.armed = n, True, True, False


class SimulatedDevice(pynq.Device):
    """``pynq.Device`` whose programmable logic is a simulated (or modelled) scorer plus an AXI DMA.

    Parameters
    ----------
    port : CorePort
        The core: :class:`EmulatedPort` or :func:`rtl_port`.
    tag : str
        Device tag (``pynq.Device`` identity).

    Use :meth:`activate` to make it ``pynq.Device.active_device`` so that unmodified user code
    (``Overlay("mailpulse.bit", download=False)``, ``pynq.allocate``) finds it.
    """

    def __init__(self, port: CorePort, tag: str = "mailpulse_sim0") -> None:
        super().__init__(tag)
        self.name = tag
        self.port = port
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
        self.arch = "armv7l"                       # a Zynq-7000 (pynq.ps.Clocks checks it)
        self.slcr = SlcrModel()
        self.bitfile_name = ""
        self.timestamp = ""
        self._windows: list[tuple[int, int, Any]] = []
        self._bases: list[int] = []
        self.dma = AxiDmaModel(self)
        self._next = MEMORY_BASE
        self._bo_base: dict[int, int] = {}
        self._mem: dict[int, bytearray] = {}       # physical base -> device memory
        self._mem_bases: list[int] = []
        self._next_bo = 1
        self.register_accesses = 0

    # -- metadata -------------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False) -> Any:
        """Parse the ``.hwh`` next to the bitstream with ``pynqmetadata`` (as ``EmbeddedDevice`` does)."""
        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError(f"unable to find metadata for bitstream: {hwh} does not exist")
        parser = RuntimeMetadataParser(Metadata(input=hwh))
        # pynqmetadata 0.2 misses a Zynq-7000's FCLK rates (see overlay.fill_fclk_rates); plain
        # pynq.Overlay(..., download=True) needs them, so the simulated board fills them in.
        fill_fclk_rates(parser.clock_dict, parser.ip_dict, parser.ps_name)
        self._map_windows(parser.ip_dict)
        return parser

    def _map_windows(self, ip_dict: dict[str, Any]) -> None:
        windows: list[tuple[int, int, Any]] = [(SlcrModel.BASE, SlcrModel.SIZE, self.slcr)]
        for _name, ip in ip_dict.items():
            if ip.get("phys_addr") is None:
                continue
            if ip["type"] == VLNV:
                windows.append((ip["phys_addr"], ip["addr_range"], self.port))
            elif ip["type"] == DMA_VLNV:
                windows.append((ip["phys_addr"], ip["addr_range"], self.dma))
        windows.sort(key=lambda w: w[0])
        self._windows = windows
        self._bases = [w[0] for w in windows]

    # -- register access (REGISTER_RW) ----------------------------------------------------
    def _target(self, address: int, length: int) -> tuple[Any, int]:
        i = bisect.bisect_right(self._bases, address) - 1
        if i >= 0:
            base, size, target = self._windows[i]
            if address + length <= base + size:
                return target, address - base
        raise BusError(f"no IP of the loaded design answers at 0x{address:08X} (a bus fault on a board)")

    def read_registers(self, address: int, length: int) -> bytes:
        target, off = self._target(address, length)
        out = bytearray()
        for i in range(0, length, 4):
            self.register_accesses += 1
            out += int(target.read(off + i)).to_bytes(4, "little")
        return bytes(out[:length])

    def write_registers(self, address: int, data: bytes) -> None:
        target, off = self._target(address, len(data))
        if len(data) % 4:
            raise BusError("the scorer's AXI4-Lite port takes whole 32-bit words only")
        words = np.frombuffer(bytes(data), dtype="<u4")
        self.register_accesses += len(words)
        write_many = getattr(target, "write_many", None)
        if write_many is not None and len(words) > 1:     # pipelined AXI4-Lite writes, one request
            write_many([(off + 4 * i, int(w)) for i, w in enumerate(words)])
            return
        for i, w in enumerate(words):
            target.write(off + 4 * i, int(w))

    # -- memory ---------------------------------------------------------------------------
    def allocate(self, shape: Any, dtype: Any = "u4", **kwargs: Any) -> PynqBuffer:
        """A ``PynqBuffer`` backed by non-coherent simulated device memory."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        size = max(PAGE, -(-nbytes // PAGE) * PAGE)
        if self._next + size > MEMORY_END:
            raise RuntimeError(f"simulated device memory exhausted ({nbytes} bytes requested)")
        base, self._next = self._next, self._next + size
        bo, self._next_bo = self._next_bo, self._next_bo + 1
        self._mem[base] = bytearray(size)
        bisect.insort(self._mem_bases, base)
        self._bo_base[bo] = base
        buf = PynqBuffer(shape, dtype, device=self, device_address=base, bo=bo, coherent=False)
        weakref.finalize(buf, self._free, bo)
        return buf

    def _free(self, bo: int) -> None:
        base = self._bo_base.pop(bo, None)
        if base is not None:
            self._mem.pop(base, None)
            self._mem_bases.remove(base)

    def flush(self, bo: int, offset: int, vaddr: int, nbytes: int) -> None:
        """Host cache to device memory."""
        base = self._bo_base[bo]
        self._mem[base][offset:offset + nbytes] = ctypes.string_at(vaddr, nbytes)

    def invalidate(self, bo: int, offset: int, vaddr: int, nbytes: int) -> None:
        """Device memory to host."""
        base = self._bo_base[bo]
        ctypes.memmove(vaddr, bytes(self._mem[base][offset:offset + nbytes]), nbytes)

    def _region(self, address: int, nbytes: int) -> tuple[bytearray, int] | None:
        i = bisect.bisect_right(self._mem_bases, address) - 1
        if i < 0:
            return None
        base = self._mem_bases[i]
        mem = self._mem[base]
        if address + nbytes > base + len(mem):
            return None
        return mem, address - base

    def memory_read(self, address: int, nbytes: int) -> bytes | None:
        r = self._region(address, nbytes)
        return None if r is None else bytes(r[0][r[1]:r[1] + nbytes])

    def memory_write(self, address: int, data: bytes) -> bool:
        r = self._region(address, len(data))
        if r is None:
            return False
        r[0][r[1]:r[1] + len(data)] = data
        return True

    # -- bitstream ------------------------------------------------------------------------
    def download(self, bitstream: Any, parser: Any = None) -> None:
        """Validate the ``.bit`` (header, part, length), then reset the simulated logic."""
        read_xilinx_bit(Path(bitstream.bitfile_name), expect_part="7z020")
        reset = getattr(self.port, "reset", None)
        if reset is not None:
            reset()
        self.dma = AxiDmaModel(self)
        self._map_windows(parser.ip_dict if parser is not None else {})
        self.post_download(bitstream, parser, self.name)

    def activate(self) -> SimulatedDevice:
        """Make this ``pynq.Device.active_device`` (what ``Overlay`` and ``allocate`` use by default)."""
        pynq.Device.active_device = self
        if "_real_instance" in vars(Clocks):      # pynq caches the clock driver of the previous device
            del Clocks._real_instance
        return self

    def close(self) -> None:
        """Stop the simulation behind the device."""
        self.port.close()


__all__ = ["RESULT_BYTES", "AxiDmaModel", "CorePort", "EmulatedPort", "SimulatedDevice", "rtl_port"]
