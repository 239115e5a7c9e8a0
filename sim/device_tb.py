"""cocotb side of :class:`mailpulse.sim.device.SimCore`: serve register and stream requests from a socket.

The test connects to ``MAILPULSE_SIM_SOCKET`` and answers requests until ``close`` (or until the
host goes away).  It blocks on the socket between requests, which freezes simulated time: the
device only advances while it works on a request.  Errors inside a request are answered with
``{"ok": false, "error": ...}`` and the device keeps serving.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from .device import recv_msg, send_msg
from .tb import TB, settings
from .tb_spi import SpiTB


async def handle(tb: TB, req: dict, payload: bytes) -> tuple[dict, bytes]:
    op = req["op"]
    if op == "read":
        value, resp = await tb.raw_read(req["addr"])
        return {"ok": True, "value": value, "resp": resp}, b""
    if op == "write":
        resp = await tb.raw_write(req["addr"], req["value"])
        return {"ok": True, "resp": resp}, b""
    if op == "write_many":
        arr = np.frombuffer(payload, dtype="<u4").reshape(-1, 2)
        events = [tb.axil.init_write(int(a), int(v).to_bytes(4, "little")) for a, v in arr]
        bad = None
        for i, ev in enumerate(events):
            await ev.wait()
            if int(ev.data.resp) and bad is None:
                bad = i
        return {"ok": True, "bad": bad}, b""
    if op == "stream":
        frames = req["frames"]
        tb.send_raw(payload, frames)
        data, tlast = await tb.receive_raw(sum(frames))
        return {"ok": True, "tlast": np.asarray(tlast, dtype=np.uint8).tobytes().hex()}, data
    if op == "cycles":
        await ClockCycles(tb.dut.aclk, max(1, int(req["n"])))
        return {"ok": True}, b""
    if op == "reset":
        await tb.reset()
        return {"ok": True}, b""
    if op == "stress":
        tb.set_stress(req["idle"], req["backpressure"])
        return {"ok": True}, b""
    return {"ok": False, "error": f"unknown request {op!r}"}, b""


async def handle_spi(tb: SpiTB, req: dict, payload: bytes) -> tuple[dict, bytes]:
    op = req["op"]
    if op == "spi":
        return {"ok": True}, await tb.spi.raw(payload)
    if op == "cycles":
        await ClockCycles(tb.dut.clk, max(1, int(req["n"])))
        return {"ok": True}, b""
    if op == "reset":
        await tb.reset()
        return {"ok": True}, b""
    return {"ok": False, "error": f"unknown request {op!r} for the SPI top"}, b""


@cocotb.test()
async def serve_axi(dut: object) -> None:
    params, seed, _n, _m = settings()
    tb = TB(dut, params, seed, fast_streams=True)
    await tb.reset()
    await serve(tb, handle)


@cocotb.test()
async def serve_spi(dut: object) -> None:
    params, seed, _n, _m = settings()
    tb = SpiTB(dut, params, seed)
    await tb.reset()
    await serve(tb, handle_spi)


async def serve(tb: Any, handler: Any) -> None:
    params = tb.params
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["MAILPULSE_SIM_SOCKET"])
    send_msg(sock, {"op": "hello", "params": params.name})
    try:
        while True:
            try:
                req, payload = recv_msg(sock)
            except (EOFError, OSError):
                return  # the host went away
            if req["op"] == "close":
                send_msg(sock, {"ok": True})
                return
            t0 = time.process_time()
            try:
                resp, data = await handler(tb, req, payload)
            except Exception as e:  # answer, keep serving
                resp, data = {"ok": False, "error": f"{type(e).__name__}: {e}"}, b""
            resp["cpu_s"] = time.process_time() - t0  # simulator process CPU time of this request
            send_msg(sock, resp, data)
    finally:
        sock.close()
