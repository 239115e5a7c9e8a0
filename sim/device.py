"""A simulated scorer device: the RTL under cocotb, driven synchronously from ordinary Python.

:class:`SimCore` starts the ``mailpulse_axi`` top in a simulator (Verilator or Icarus, through
cocotb's runner) in a child process and talks to a cocotb test (:mod:`mailpulse.sim.device_tb`) over a Unix
socket.  The cocotb side blocks on the socket between requests, so simulated time stands still
while the host thinks; each request advances the clock only as far as the bus transactions need.

API::

    from mailpulse.sim.device import SimCore
    with SimCore("small", simulator="verilator") as dev:     # builds once, ~1 s to start after that
        dev.read(addr) -> int                 # AXI4-Lite read; BusError on SLVERR (unmapped address)
        dev.write(addr, value)                # AXI4-Lite write; BusError on SLVERR (RO/unmapped/...)
        dev.write_many([(addr, value), ...])  # pipelined writes (a whole model in one request)
        dev.stream(x, tags=None, tlast=None) -> StreamResults   # samples in on s_axis, results out
        dev.stream_raw(beats: bytes, tlast=None) -> (bytes, tlast)  # sample beats in (20 bytes for D = 8),
                                                                    # 8-byte result beats out
        dev.cycles(n)                         # let n clock cycles pass
        dev.reset()                           # pulse aresetn
        dev.set_stress(idle, backpressure)    # random idle / back-pressure probabilities on the streams
    # dev.close() is called by the with-block; it stops the simulator process group.

    with open_device("small", top="spi", simulator="icarus") as dev:   # the iCE40/ECP5 SPI top
        dev.spi_transfer(mosi: bytes) -> bytes   # one cs_n-low transaction, bit-level, sck = clk/4
        dev.read(addr), dev.write(addr, value), dev.write_many(...)  # over that SPI protocol
        dev.cycles(n), dev.reset()

``x`` is an (N, D) integer array, ``tags`` N 32-bit tags, ``tlast`` N 0/1 flags marking the end
of each DMA-style frame (default: one frame, ``tlast`` on the last sample).  Results come back in
order as :class:`mailpulse.sim.codec.StreamResults` (``score``, ``anomaly``, ``argmax``, ``tag``, ``tlast``),
directly comparable with :func:`mailpulse.hdl.reference.score`.

Failures: a simulator that does not start within ``start_timeout`` seconds, dies, or answers a
request with an error raises :class:`SimDeviceError` naming the log file; a stream that does not
complete (a hung core) is an error after ``50 us + 0.5 us`` per sample of simulated time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import BusError
from mailpulse.hdl.regmap import RegisterMap
from mailpulse.hdl.spiproto import SYNC_BYTE, read_frame, read_words, write_frame

from .codec import RESULT_BYTES, StreamResults, frame_lengths, pack_samples, sample_bytes, unpack_results
from .rtl import ROOT, build_root
from .runner import build, run_cocotb
from .tools import have_simulator

_HDR = struct.Struct("<II")


class SimDeviceError(RuntimeError):
    """The simulated device failed to start, died, or reported an error."""


def send_msg(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    h = json.dumps(header).encode()
    sock.sendall(_HDR.pack(len(h), len(payload)) + h + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the connection")
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    hl, pl = _HDR.unpack(_recv_exact(sock, _HDR.size))
    header = json.loads(_recv_exact(sock, hl))
    return header, _recv_exact(sock, pl) if pl else b""


class SimCore:
    """The ``mailpulse_axi`` RTL in a simulator, as a synchronous device (see the module docstring).

    Parameters
    ----------
    params : str or CoreParams
        Parameter set (``small``, ``full``, ``zynq``).
    simulator : str
        ``verilator`` (fast start-up after a one-time build) or ``icarus``.
    seed : int
        Seed of the random idle/back-pressure generators.
    start_timeout : float
        Seconds to wait for the simulator to connect (the build happens before this clock starts).
    """

    def __init__(self, params: str | CoreParams = "small", simulator: str = "verilator", *, top: str = "axi",
                 seed: int = 1, start_timeout: float = 120.0) -> None:
        self.params = params if isinstance(params, CoreParams) else get_params(params)
        self.simulator = simulator
        self.top = top
        self.regmap = RegisterMap(self.params)
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        #: CPU seconds the simulator process spent on the last request (for benchmarks).
        self.last_cpu_seconds = 0.0
        if top not in ("axi", "spi"):
            raise ValueError(f"unknown top {top!r}; use axi or spi")
        build(simulator, top, self.params.name)
        base = build_root() / "device"
        base.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=base)
        tmp = Path(self._tmp.name)
        self.log_path = tmp / "device.log"
        # Unix socket paths are limited to ~107 bytes: the socket lives in a short /tmp directory.
        self._sockdir = tempfile.TemporaryDirectory(prefix="mpsim")
        path = str(Path(self._sockdir.name) / "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(0.5)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "mailpulse.sim.device", simulator, top, self.params.name, path, str(seed)]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + start_timeout
        try:
            while True:
                try:
                    conn, _ = listener.accept()
                    break
                except TimeoutError:
                    if self._proc.poll() is not None:
                        raise SimDeviceError(f"the simulator exited ({self._proc.returncode}) before it connected; "
                                             f"log: {self.log_path}\n{self._log_tail()}") from None
                    if time.monotonic() > deadline:
                        self._kill()
                        raise SimDeviceError(f"the simulator did not connect within {start_timeout} s; "
                                             f"log: {self.log_path}") from None
        finally:
            listener.close()
        conn.settimeout(None)
        self._sock = conn
        hello, _ = recv_msg(conn)
        if hello.get("op") != "hello":
            raise SimDeviceError(f"unexpected greeting from the simulator: {hello}")

    # -- plumbing ---------------------------------------------------------------------------------
    def _log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _call(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        if self._sock is None:
            raise SimDeviceError("the simulated device is closed")
        try:
            send_msg(self._sock, header, payload)
            resp, data = recv_msg(self._sock)
        except (OSError, EOFError) as e:
            self.close()
            raise SimDeviceError(f"the simulator went away ({e}); log: {self.log_path}\n{self._log_tail()}") from e
        self.last_cpu_seconds = float(resp.get("cpu_s", 0.0))
        if not resp.get("ok"):
            raise SimDeviceError(f"simulated device: {resp.get('error')} (log: {self.log_path})")
        return resp, data

    def _need(self, top: str, what: str) -> None:
        if self.top != top:
            raise SimDeviceError(f"{what} needs the {top} top; this device simulates the {self.top} top")

    # -- SPI top --------------------------------------------------------------------------------------
    def spi_transfer(self, data: bytes) -> bytes:
        """One ``cs_n``-low SPI transaction (mode 0, sck = clk/4): MOSI bytes in, MISO bytes out."""
        self._need("spi", "spi_transfer")
        _resp, miso = self._call({"op": "spi"}, bytes(data))
        return miso

    def _spi_read(self, addr: int) -> int:
        miso = self.spi_transfer(read_frame(addr, 1))
        if miso[0] != SYNC_BYTE:
            raise SimDeviceError(f"SPI sync byte 0x{miso[0]:02X}, not 0x{SYNC_BYTE:02X}")
        return read_words(miso, 1)[0]

    def _spi_write(self, addr: int, value: int) -> None:
        miso = self.spi_transfer(write_frame(addr, [value]))
        if miso[0] != SYNC_BYTE:
            raise SimDeviceError(f"SPI sync byte 0x{miso[0]:02X}, not 0x{SYNC_BYTE:02X}")

    # -- registers ----------------------------------------------------------------------------------
    def read(self, addr: int) -> int:
        """Read the 32-bit register at byte address ``addr``.

        AXI top: BusError on SLVERR.  SPI top: no per-access error (a bad address reads 0 and sets
        ``STATUS.BUS_ERROR``, as on the board).
        """
        if self.top == "spi":
            return self._spi_read(addr)
        resp, _ = self._call({"op": "read", "addr": int(addr)})
        if resp["resp"]:
            raise BusError(f"read of 0x{addr:04X} answered SLVERR")
        return int(resp["value"])

    def write(self, addr: int, value: int) -> None:
        """Write a register.  AXI top: BusError on SLVERR (read-only or unmapped address)."""
        if self.top == "spi":
            self._spi_write(addr, value)
            return
        resp, _ = self._call({"op": "write", "addr": int(addr), "value": int(value) & 0xFFFFFFFF})
        if resp["resp"]:
            raise BusError(f"write of 0x{addr:04X} answered SLVERR")

    def write_many(self, writes: list[tuple[int, int]]) -> None:
        """Pipelined writes; BusError naming the first that answered SLVERR (all are still issued).

        SPI top: consecutive addresses go out as burst transactions.
        """
        if self.top == "spi":
            run: list[int] = []
            start = 0
            for a, v in [*writes, (-1, 0)]:
                if run and a != start + 4 * len(run):
                    self.spi_transfer(write_frame(start, run))
                    run = []
                if not run:
                    start = a
                run.append(int(v))
            return
        arr = np.asarray([(int(a), int(v) & 0xFFFFFFFF) for a, v in writes], dtype="<u4").reshape(-1, 2)
        resp, _ = self._call({"op": "write_many", "count": len(arr)}, arr.tobytes())
        if resp["bad"] is not None:
            raise BusError(f"write of 0x{int(arr[resp['bad'], 0]):04X} answered SLVERR")

    # -- streams ------------------------------------------------------------------------------------
    def stream_raw(self, beats: bytes, tlast: npt.ArrayLike | None = None) -> tuple[bytes, npt.NDArray[np.int64]]:
        """Send sample beats on ``s_axis``; returns the result beats and their tlast."""
        self._need("axi", "streaming")
        nb = sample_bytes(self.params)
        if len(beats) % nb:
            raise ValueError(f"{len(beats)} bytes is not a whole number of {nb}-byte beats")
        n = len(beats) // nb
        if n == 0:
            return b"", np.zeros(0, dtype=np.int64)
        tl = np.zeros(n, dtype=np.int64) if tlast is None else np.asarray(tlast, dtype=np.int64)
        if tlast is None:
            tl[-1] = 1
        if tl.shape != (n,):
            raise ValueError(f"{n} beats but tlast of shape {tl.shape}")
        if not tl[-1]:
            raise ValueError("the last beat must have tlast set (a frame left open would never complete)")
        _resp, data = self._call({"op": "stream", "frames": frame_lengths(tl)}, beats)
        m = len(data) // RESULT_BYTES
        return data, np.frombuffer(_resp_tlast(_resp, m), dtype=np.uint8).astype(np.int64)

    def stream(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None,
               tlast: npt.ArrayLike | None = None, *, routes: npt.ArrayLike | None = None,
               latencies: npt.ArrayLike | None = None) -> StreamResults:
        """Score samples through ``s_axis``/``m_axis``; results in order (see the module docstring).
        With routes (R > 0) the beats carry ``routes``/``latencies`` and the results below/above."""
        xs = np.asarray(x, dtype=np.int64)
        data, tl = self.stream_raw(pack_samples(self.params, xs, tags, routes, latencies), tlast)
        return unpack_results(data, tl, self.params)

    # -- time, reset, stress ------------------------------------------------------------------------
    def cycles(self, n: int) -> None:
        """Let ``n`` clock cycles pass."""
        self._call({"op": "cycles", "n": int(n)})

    def reset(self) -> None:
        """Pulse ``aresetn`` (the core returns to its reset state; queued stream data is dropped)."""
        self._call({"op": "reset"})

    def set_stress(self, idle: float = 0.0, backpressure: float = 0.0) -> None:
        """Random idle cycles on ``s_axis`` / back-pressure on ``m_axis`` (probabilities 0..1)."""
        self._need("axi", "set_stress")
        self._call({"op": "stress", "idle": float(idle), "backpressure": float(backpressure)})

    # -- life cycle ---------------------------------------------------------------------------------
    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)  # the group we created: python + simulator
            except ProcessLookupError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def close(self) -> None:
        """Stop the simulation (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                send_msg(sock, {"op": "close"})
                recv_msg(sock)
            except (OSError, EOFError):
                pass
            sock.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._kill()
        self._sockdir.cleanup()

    def __enter__(self) -> SimCore:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None and self._proc is not None and self._proc.poll() is None:
            self._kill()


def open_device(params: str | CoreParams = "small", top: str = "axi", simulator: str | None = None,
                **kwargs: Any) -> SimCore:
    """Start a :class:`SimCore` (``simulator`` defaults to Verilator when installed, else Icarus)."""
    if simulator is None:
        simulator = "verilator" if have_simulator("verilator") else "icarus"
    return SimCore(params, simulator, top=top, **kwargs)


def _resp_tlast(resp: dict[str, Any], m: int) -> bytes:
    tl = bytes.fromhex(resp["tlast"])
    if len(tl) != m:
        raise SimDeviceError(f"{m} results but {len(tl)} tlast flags")
    return tl


def _serve(argv: list[str]) -> int:
    """Child process: run the cocotb device test until the host closes the connection."""
    sim, top, params_name, sock_path, seed = argv
    res = run_cocotb(sim, top, params_name, "mailpulse.sim.device_tb", testcase=[f"serve_{top}"], seed=int(seed),
                     tag=f"device_{os.getpid()}",
                     env={"MAILPULSE_SIM_SOCKET": sock_path, "COCOTB_LOG_LEVEL": "WARNING"})
    if not res.ok:
        print(f"device simulation failed: {res.failed}; run directory {res.results_xml.parent}", file=sys.stderr)
        return 1
    shutil.rmtree(res.results_xml.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
