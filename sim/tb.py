"""cocotb testbench components for the ``mailpulse_axi`` and ``mailpulse_spi`` tops.

Runs inside the simulator (imported by the cocotb test modules ``mailpulse.sim.tb_axi``,
``mailpulse.sim.tb_spi``, ``mailpulse.sim.tb_verify``, ``mailpulse.sim.tb_selftest`` and
``mailpulse.sim.device_tb``).  :class:`TB` owns the clock, the reset, a cocotbext-axi ``AxiLiteMaster``
on ``s_axil``, an ``AxiStreamSource`` on ``s_axis`` (the dense sample beat of
:mod:`mailpulse.hdl.beats`) and an ``AxiStreamSink`` on ``m_axis`` (64-bit result beats), random idle
(source pause generator) and back-pressure (sink pause generator), and a
:class:`mailpulse.hdl.reference.EmulatedCore` that mirrors every register access.  Register reads and
writes are checked against that model on the spot; streamed samples go through the model into an in-order
:class:`Scoreboard`.  :class:`FastStreams` is a leaner stream driver for the simulated device;
:class:`SpiMaster` is a bit-level SPI mode-0 master for the SPI top.

Settings come from the environment (``mailpulse.sim.runner`` sets them): ``MAILPULSE_SIM_SET`` (parameter
set), ``MAILPULSE_SIM_SEED``, ``MAILPULSE_SIM_SAMPLES`` (samples per streaming check, default
2000), ``MAILPULSE_SIM_CONFIGS`` (random configurations, default 2).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource
from cocotbext.axi.constants import AxiResp
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import BusError, CoreConfig, EmulatedCore, ScoreResult, model_writes
from mailpulse.hdl.spiproto import SYNC_BYTE, read_frame, read_words, write_frame

from .codec import RESULT_BYTES, StreamResults, compare, pack_samples, sample_bytes, unpack_results

CLK_NS = 10


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


def settings() -> tuple[CoreParams, int, int, int]:
    """(params, seed, samples, configs) of this run, from the environment."""
    params = get_params(os.environ.get("MAILPULSE_SIM_SET", "small"))
    return (params, env_int("MAILPULSE_SIM_SEED", 1), env_int("MAILPULSE_SIM_SAMPLES", 2000),
            env_int("MAILPULSE_SIM_CONFIGS", 2))


def pauses(rng: random.Random, p: float) -> Iterator[int]:
    """A pause generator: 1 (pause this cycle) with probability ``p``, in bursts."""
    while True:
        if rng.random() < p:
            for _ in range(rng.randint(1, 8)):
                yield 1
        else:
            yield 0


class Scoreboard:
    """In-order checker: expected results (from the model) against results seen on ``m_axis``."""

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        self.expected: list[tuple[ScoreResult, np.ndarray, np.ndarray, np.ndarray]] = []
        self.checked = 0

    def expect(self, exp: ScoreResult, tlast: np.ndarray, x: np.ndarray, tags: np.ndarray) -> None:
        self.expected.append((exp, tlast, x, tags))

    def check(self, got: StreamResults) -> None:
        """Compare ``got`` with the oldest expectation; raise ``AssertionError`` with the inputs."""
        exp, tlast, x, tags = self.expected.pop(0)
        if got.stray_bits:
            raise AssertionError(f"result beats have bits set outside the documented fields: 0x{got.stray_bits:x}")
        if len(got) != len(exp):
            raise AssertionError(f"expected {len(exp)} results, got {len(got)}")
        bad = compare(exp, got)
        if bad:
            i = bad[0]
            flags = ""
            if exp.below is not None and exp.above is not None and got.below is not None and got.above is not None:
                flags = (f"; (below, above) expected ({int(exp.below[i])}, {int(exp.above[i])}) got "
                         f"({int(got.below[i])}, {int(got.above[i])})")
            raise AssertionError(
                f"result {self.checked + i} differs: x={x[i].tolist()} tag={int(tags[i])} expected "
                f"(score, anomaly, argmax, tag)={exp.row(i)} got {got.row(i)}{flags}; {len(bad)}+ mismatches at {bad}")
        if not np.array_equal(np.asarray(got.tlast), np.asarray(tlast)):
            i = int(np.flatnonzero(np.asarray(got.tlast) != np.asarray(tlast))[0])
            raise AssertionError(f"tlast of result {self.checked + i} is {int(got.tlast[i])}, the sample's is "
                                 f"{int(tlast[i])}")
        self.checked += len(got)


class TB:
    """Testbench of the ``mailpulse_axi`` top (see the module docstring)."""

    def __init__(self, dut: Any, params: CoreParams, seed: int = 1, *, fast_streams: bool = False) -> None:
        self.dut = dut
        self.params = params
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.model = EmulatedCore(params)
        self.regmap = self.model.regmap
        Clock(dut.aclk, CLK_NS, unit="ns").start()  # cocotb 2: start() schedules the clock task itself
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.aclk,
                                  dut.aresetn, reset_active_level=False)
        self.fast: FastStreams | None = None
        self.source: AxiStreamSource | None = None
        self.sink: AxiStreamSink | None = None
        if fast_streams:
            self.fast = FastStreams(dut, random.Random(seed))
        else:
            # One "byte lane" of the full width: a frame's tdata is a list of whole beats (Python
            # ints), which makes the drivers ~2x faster than 32 byte lanes per beat.
            self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis", bus_separator="__"), dut.aclk,
                                          dut.aresetn, reset_active_level=False, byte_lanes=1)
            self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis", bus_separator="__"), dut.aclk,
                                      dut.aresetn, reset_active_level=False, byte_lanes=1)
            self.sink.log.setLevel("WARNING")
            self.source.log.setLevel("ERROR")  # a reset test flushes frames on purpose; the warning prints them
        for bus in (self.axil.write_if, self.axil.read_if):
            bus.log.setLevel("WARNING")
        self.scoreboard = Scoreboard(params)
        self.latency: int | None = None

    # -- clock, reset, handshake stress ----------------------------------------------------------
    async def reset(self, cycles: int = 4) -> None:
        """Synchronous active-low reset; the model is reset too."""
        self.dut.aresetn.value = 0
        if self.source is not None:
            self.source.clear()  # frames not yet sent are dropped, as a DMA engine reset would
        await ClockCycles(self.dut.aclk, cycles)
        await FallingEdge(self.dut.aclk)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)
        while self.sink is not None and not self.sink.empty():
            self.sink.recv_nowait()
        self.model.reset()
        self.scoreboard.expected.clear()

    def set_stress(self, idle: float, backpressure: float) -> None:
        """Random idle cycles on ``s_axis`` and back-pressure on ``m_axis`` (probabilities 0..1)."""
        if self.fast is not None:
            self.fast.idle, self.fast.backpressure = idle, backpressure
            return
        assert self.source is not None and self.sink is not None
        if idle > 0:
            self.source.set_pause_generator(pauses(random.Random(self.rng.random()), idle))
        else:
            self.source.clear_pause_generator()
            self.source.pause = False  # clearing the generator can leave pause stuck at 1
        if backpressure > 0:
            self.sink.set_pause_generator(pauses(random.Random(self.rng.random()), backpressure))
        else:
            self.sink.clear_pause_generator()
            self.sink.pause = False

    def sink_empty(self) -> bool:
        """No result frame waits in the cocotbext-axi sink."""
        assert self.sink is not None, "sink_empty needs the cocotbext-axi streams"
        return bool(self.sink.empty())

    def drop_results(self) -> None:
        """Discard result frames received so far."""
        assert self.sink is not None, "drop_results needs the cocotbext-axi streams"
        while not self.sink.empty():
            self.sink.recv_nowait()

    # -- registers ---------------------------------------------------------------------------
    async def raw_read(self, addr: int) -> tuple[int, int]:
        r = await self.axil.read(addr, 4)
        return int.from_bytes(r.data, "little"), int(r.resp)

    async def raw_write(self, addr: int, value: int, nbytes: int = 4) -> int:
        r = await self.axil.write(addr, (value & 0xFFFFFFFF).to_bytes(4, "little")[:nbytes])
        return int(r.resp)

    async def read(self, addr: int) -> int:
        """Read a register and check value and response against the model."""
        value, resp = await self.raw_read(addr)
        try:
            want = self.model.read(addr)
            want_resp = AxiResp.OKAY
        except BusError:
            want, want_resp = 0, AxiResp.SLVERR
        except NotImplementedError:  # LATENCY: an RTL constant
            want, want_resp = value, AxiResp.OKAY
        name = self._name(addr)
        assert resp == want_resp, f"read of {name}: response {resp}, expected {int(want_resp)}"
        assert value == want, f"read of {name}: 0x{value:08X}, the model says 0x{want:08X}"
        return value

    async def write(self, addr: int, value: int) -> None:
        """Write a register (the model too) and check the response."""
        resp = await self.raw_write(addr, value)
        self._model_write(addr, value, resp)

    def _model_write(self, addr: int, value: int, resp: int) -> None:
        try:
            self.model.write(addr, value)
            want = AxiResp.OKAY
        except BusError:
            want = AxiResp.SLVERR
        assert resp == want, f"write of 0x{value:08X} to {self._name(addr)}: response {resp}, expected {int(want)}"

    async def write_many(self, writes: Sequence[tuple[int, int]]) -> None:
        """Pipelined writes (all issued at once, responses checked in order)."""
        events = [self.axil.init_write(a, (v & 0xFFFFFFFF).to_bytes(4, "little")) for a, v in writes]
        for (a, v), ev in zip(writes, events):
            await ev.wait()
            self._model_write(a, v, int(ev.data.resp))

    def _name(self, addr: int) -> str:
        hit = self.regmap.decode(addr)
        if hit is None:
            return f"unmapped 0x{addr:04X}"
        reg, i = hit
        return reg.name if reg.count == 1 else f"{reg.name}[{i}]"

    def addr(self, name: str, index: int = 0) -> int:
        return self.regmap[name].address(index)

    async def ctrl(self, *fields: str) -> None:
        reg = self.regmap["CTRL"]
        v = 0
        for f in fields:
            v |= reg.field(f).mask
        await self.write(reg.address(), v)

    async def wait_quiet(self, timeout_cycles: int = 10000) -> int:
        """Poll ``STATUS`` until no commit, push or sample is pending; returns STATUS."""
        reg = self.regmap["STATUS"]
        busy = reg.field("COMMIT_PENDING").mask | reg.field("BUSY").mask | reg.field("PUSH_PENDING").mask
        for _ in range(timeout_cycles // 4):
            v, _resp = await self.raw_read(reg.address())
            if not v & busy:
                return v
        raise AssertionError(f"STATUS stayed busy (0x{v:08X}) for {timeout_cycles} cycles")

    async def load(self, cfg: CoreConfig, commit: bool = True) -> None:
        """Write ``cfg`` into the shadow model over AXI4-Lite, then ``CTRL.COMMIT`` and wait for it."""
        await self.write_many(model_writes(self.regmap, cfg))
        if commit:
            await self.ctrl("COMMIT")
            await self.wait_quiet()

    # -- streams -----------------------------------------------------------------------------
    def send(self, x: np.ndarray, tags: np.ndarray, frames: Sequence[int], check: bool = True,
             routes: np.ndarray | None = None, latencies: np.ndarray | None = None) -> np.ndarray:
        """Queue samples on ``s_axis`` as frames of the given lengths; returns the tlast vector.

        With ``check`` the model scores them now (with its current active configuration) and the
        scoreboard expects the results in order.  With routes (R > 0) ``routes``/``latencies`` are
        the beats' route ids and Q8.8 latencies (default: no route).
        """
        assert sum(frames) == len(x)
        tlast = np.zeros(len(x), dtype=np.int64)
        pos = 0
        for n in frames:
            pos += n
            tlast[pos - 1] = 1
        self.send_raw(pack_samples(self.params, x, tags, routes, latencies), frames)
        if check:
            self.scoreboard.expect(self.model.stream(x, tags, routes, latencies), tlast, x, tags)
        return tlast

    def send_raw(self, data: bytes, frames: Sequence[int]) -> None:
        """Queue sample beats on ``s_axis`` as frames of the given lengths (in beats)."""
        nb = sample_bytes(self.params)
        beats = [int.from_bytes(data[i:i + nb], "little") for i in range(0, len(data), nb)]
        if self.fast is not None:
            self.fast.queue(beats, frames)
            return
        assert self.source is not None
        pos = 0
        for n in frames:
            self.source.send_nowait(AxiStreamFrame(beats[pos:pos + n]))
            pos += n
        assert pos == len(beats), f"frames cover {pos} beats, the data holds {len(beats)}"

    async def receive_raw(self, n: int, timeout_us: float | None = None) -> tuple[bytes, np.ndarray]:
        """Receive whole frames from ``m_axis`` until ``n`` result beats: (beats, tlast per beat)."""
        limit = timeout_us if timeout_us is not None else 50 + n * 0.5
        if self.fast is not None:
            vals, lasts = await self.fast.run(n, int(limit * 1000 / CLK_NS))
            return (b"".join(v.to_bytes(RESULT_BYTES, "little") for v in vals), np.asarray(lasts, dtype=np.int64))
        assert self.sink is not None
        chunks: list[bytes] = []
        tl: list[np.ndarray] = []
        got = 0
        while got < n:
            frame = await with_timeout(self.sink.recv(compact=False), limit, "us")
            m = len(frame.tdata)
            chunks.append(b"".join(int(v).to_bytes(RESULT_BYTES, "little") for v in frame.tdata))
            t = np.zeros(m, dtype=np.int64)
            t[-1] = 1
            tl.append(t)
            got += m
        return b"".join(chunks), (np.concatenate(tl) if tl else np.zeros(0, dtype=np.int64))

    async def receive(self, n: int, timeout_us: float | None = None) -> StreamResults:
        """Receive ``n`` results from ``m_axis`` (whole frames) as :class:`StreamResults`."""
        data, tl = await self.receive_raw(n, timeout_us)
        return unpack_results(data, tl, self.params)

    async def stream_check(self, x: np.ndarray, tags: np.ndarray, frames: Sequence[int] | None = None,
                           routes: np.ndarray | None = None, latencies: np.ndarray | None = None) -> None:
        """Send, receive and check one batch through the scoreboard (with route events: see :meth:`send`)."""
        if frames is None:
            frames = self.random_frames(len(x))
        self.send(x, tags, frames, routes=routes, latencies=latencies)
        got = await self.receive(len(x))
        self.scoreboard.check(got)

    def random_frames(self, n: int, mean: int = 64) -> list[int]:
        out = []
        while n > 0:
            m = min(n, self.rng.randint(1, 2 * mean))
            out.append(m)
            n -= m
        return out

    async def measure_latency(self) -> int:
        """Cycles from an accepted input beat to its result on ``m_axis`` with no stress."""
        self.set_stress(0, 0)
        dut = self.dut
        x = np.zeros((1, self.params.d), dtype=np.int64)
        self.send(x, np.array([0x1234]), [1])
        cycle = 0
        start = None
        while True:
            await RisingEdge(dut.aclk)
            cycle += 1
            if start is None and int(dut.s_axis__tvalid.value) and int(dut.s_axis__tready.value):
                start = cycle
            if start is not None and int(dut.m_axis__tvalid.value):
                break
            assert cycle < 1000, "no result within 1000 cycles"
        got = await self.receive(1)
        self.scoreboard.check(got)
        return cycle - start


class FastStreams:
    """``s_axis`` driver and ``m_axis`` receiver in one coroutine, for the simulated device.

    The testbenches use cocotbext-axi; this does the same handshakes with less Python per clock
    (one coroutine instead of two, only the signal writes that change), which the device's speed
    depends on.  Same sampling discipline as cocotbext-axi: handshakes are sampled right after the
    rising edge, new values driven after it.  Random idle (``idle``) and back-pressure
    (``backpressure``) probabilities per cycle.
    """

    def __init__(self, dut: Any, rng: random.Random) -> None:
        self.dut = dut
        self.rng = rng
        self.idle = 0.0
        self.backpressure = 0.0
        self.beats: list[int] = []
        self.lasts: list[int] = []
        dut.s_axis__tvalid.value = 0
        dut.m_axis__tready.value = 0

    def queue(self, beats: list[int], frames: Sequence[int]) -> None:
        lasts = [0] * len(beats)
        pos = 0
        for n in frames:
            pos += n
            lasts[pos - 1] = 1
        assert pos == len(beats), f"frames cover {pos} beats, the data holds {len(beats)}"
        self.beats += beats
        self.lasts += lasts

    async def run(self, n: int, timeout_cycles: int) -> tuple[list[int], list[int]]:
        """Send the queued beats and collect ``n`` result beats: (tdata values, tlast values)."""
        dut = self.dut
        edge = RisingEdge(dut.aclk)
        s_tdata, s_tvalid, s_tlast, s_tready = (dut.s_axis__tdata, dut.s_axis__tvalid, dut.s_axis__tlast,
                                                dut.s_axis__tready)
        m_tdata, m_tvalid, m_tlast, m_tready = (dut.m_axis__tdata, dut.m_axis__tvalid, dut.m_axis__tlast,
                                                dut.m_axis__tready)
        beats, lasts = self.beats, self.lasts
        self.beats, self.lasts = [], []
        idle, bp, rnd = self.idle, self.backpressure, self.rng.random
        out: list[int] = []
        outl: list[int] = []
        i = 0
        offered = False   # a beat waits for its handshake
        tv = False        # what s_axis__tvalid is driven to
        s_tvalid.value = 0
        ready = -1
        quiet = 0
        while len(out) < n:
            if not offered:
                if i < len(beats) and not (idle and rnd() < idle):
                    s_tdata.value = beats[i]
                    s_tlast.value = lasts[i]
                    if not tv:
                        s_tvalid.value = 1
                        tv = True
                    offered = True
                elif tv:
                    s_tvalid.value = 0
                    tv = False
            r = 0 if bp and rnd() < bp else 1
            if r != ready:
                m_tready.value = r
                ready = r
            await edge
            quiet += 1
            if offered and s_tready.value:
                i += 1
                offered = False
                quiet = 0
            if ready and m_tvalid.value:
                out.append(int(m_tdata.value))
                outl.append(int(m_tlast.value))
                quiet = 0
            if quiet > timeout_cycles:
                raise TimeoutError(f"stream stalled: {i} of {len(beats)} beats sent, {len(out)} of {n} results")
        s_tvalid.value = 0
        m_tready.value = 0
        return out, outl


class SpiMaster:
    """Bit-level SPI mode-0 master (CPOL=0, CPHA=0, MSB first) for the ``mailpulse_spi`` top.

    ``half_period_ns`` is half an ``sck`` period; the bridge needs ``sck <= clk/4``.
    Protocol (docs/interfaces.md): command byte (``0x02`` write, ``0x0B`` read; MISO answers
    ``0xA5``), 2 address bytes big-endian, then big-endian 32-bit words (a read has one dummy byte
    first); the address advances by 4 per word.
    """

    SYNC = SYNC_BYTE

    def __init__(self, dut: Any, half_period_ns: int = 40) -> None:
        self.dut = dut
        self.half = half_period_ns
        dut.spi__sck.value = 0
        dut.spi__cs_n.value = 1
        dut.spi__mosi.value = 0
        self.last_sync: int | None = None

    async def _xfer(self, out: bytes) -> bytes:
        dut = self.dut
        dut.spi__cs_n.value = 0
        await Timer(self.half, "ns")
        got = bytearray()
        for byte in out:
            inb = 0
            for bit in range(7, -1, -1):
                dut.spi__mosi.value = (byte >> bit) & 1
                await Timer(self.half, "ns")
                dut.spi__sck.value = 1
                inb = (inb << 1) | int(dut.spi__miso.value)
                await Timer(self.half, "ns")
                dut.spi__sck.value = 0
            got.append(inb)
        await Timer(self.half, "ns")
        dut.spi__cs_n.value = 1
        await Timer(4 * self.half, "ns")
        return bytes(got)

    async def write(self, addr: int, words: Sequence[int]) -> None:
        """One write transaction of ``words`` starting at byte address ``addr``."""
        got = await self._xfer(write_frame(addr, words))
        self.last_sync = got[0]

    async def read(self, addr: int, count: int = 1) -> list[int]:
        """One read transaction of ``count`` words starting at byte address ``addr``."""
        got = await self._xfer(read_frame(addr, count))
        self.last_sync = got[0]
        return read_words(got, count)

    async def raw(self, data: bytes) -> bytes:
        """Any byte sequence in one transaction (for protocol error tests)."""
        return await self._xfer(data)
