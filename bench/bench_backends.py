"""Samples per second of each scorer backend (and transport), with the same model and samples.

Rows:

* ``model``            - host_bridge ModelScorer (vectorised reference model).
* ``pynq/model-dev``   - the PYNQ driver + pynq.lib.dma.DMA + pynq.allocate against the simulated
                         pynq.Device backed by the model: the driver's own cost per sample.
* ``ice40/spi-model``  - the iCE40 backend (SPI frames, four per sample) against the byte-level
                         model of the SPI bridge: Python cost; plus the wire-time bound at the
                         given SCK (bytes per sample on the bus).
* ``sim/<simulator>``  - the RTL under cocotb, batch over AXI4-Stream.
* ``pynq/rtl-<sim>``   - the PYNQ driver + DMA against the simulated device backed by the RTL.
* ``pynq/... events``  - a set with routes (``BENCH_SET=small-r4``): the same samples as route
                         events in the DMA beats, and ``events/PUSH`` (a tenth of them) by
                         ``ROUTE`` + ``PUSH`` over AXI4-Lite, each checked against route_intervals.

Every row is checked against mailpulse.hdl.reference.score before its number is printed.  Sizes from the
environment: ``BENCH_N`` (model rows, default 200000), ``BENCH_SIM_N`` (RTL rows, default 2000),
``BENCH_SIMS`` (simulators, default "icarus,verilator"), ``BENCH_SCK_HZ`` (default 8 MHz).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import (
    CoreConfig,
    EmulatedCore,
    RouteConfig,
    ScoreResult,
    random_route_events,
    route_intervals,
    score,
)
from mailpulse.host_bridge.backends.ice40 import Ice40Scorer
from mailpulse.host_bridge.backends.model import ModelScorer
from mailpulse.host_bridge.backends.sim import SimScorer
from mailpulse.host_bridge.spi import FakeSpiDev, SpiBridgeModel
from mailpulse.sim.tools import have_simulator

#: tests/pynq_sim_support.py (overlay folder + active simulated device) is shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def check(got: ScoreResult, want: ScoreResult, name: str) -> None:
    for f in ("score", "anomaly", "argmax", "tag"):
        if not np.array_equal(getattr(got, f), getattr(want, f)):
            raise SystemExit(f"{name}: {f} differs from the reference model")


#: The route interval configuration of a set with routes (``BENCH_SET=small-r4``).
ROUTES = RouteConfig(1, 5, 10)


def check_events(got: ScoreResult, routes: np.ndarray, lats: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 name: str) -> None:
    """below/above equal the reference's for events that start from bounds ``lower``/``upper``."""
    ri = route_intervals(routes, lats, lower, upper, ROUTES)
    if got.below is None or got.above is None or not (
            np.array_equal(got.below, ri.below) and np.array_equal(got.above, ri.above)):
        raise SystemExit(f"{name}: below/above differ from the reference model")


def row(name: str, n: int, seconds: float, note: str = "") -> None:
    print(f"{name:<28} {n:>8} samples {seconds:9.3f} s {n / seconds:>12,.0f} samples/s  {note}")


def main() -> int:
    pset = os.environ.get("BENCH_SET", "small")
    n = int(os.environ.get("BENCH_N", "200000"))
    n_sim = int(os.environ.get("BENCH_SIM_N", "2000"))
    sims = [s for s in os.environ.get("BENCH_SIMS", "icarus,verilator").split(",") if s]
    sck = int(os.environ.get("BENCH_SCK_HZ", "8000000"))
    p = get_params(pset)
    rng = np.random.default_rng(0)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(n, p.d))
    tags = rng.integers(0, 1 << 32, size=n)
    want = score(p, cfg, x, tags)
    routes, lats = random_route_events(rng, n, p.r)
    print(f"parameter set {pset}: D={p.d} K={p.k} B={p.b} R={p.r}")

    with ModelScorer(p) as s:
        s.load_model(cfg)
        t = time.perf_counter()
        got = s.score_batch(x, tags)
        row("model", n, time.perf_counter() - t)
        check(got, want, "model")

    have_pynq = importlib.util.find_spec("pynq") is not None
    if not have_pynq:
        print("pynq rows skipped: pynq is not installed")

    def pynq_row(name: str, port: Any, m: int) -> None:
        import pynq_sim_support
        from pynq import Overlay

        with tempfile.TemporaryDirectory() as d, pynq_sim_support.active_device(port):
            bit = pynq_sim_support.make_overlay_dir(Path(d), p)
            ol = Overlay(str(bit), download=False)
            ol.mailpulse_0.load_model(cfg, routes=ROUTES if p.r else None)
            t = time.perf_counter()
            got = ol.mailpulse_0.score_batch(x[:m], tags[:m], dma=ol.axi_dma_0)
            row(name, m, time.perf_counter() - t, "driver + DMA, 4096-sample transfers")
            if p.r:
                events_rows(name, ol.mailpulse_0, ol.axi_dma_0, m)
        check(got, score(p, cfg, x[:m], tags[:m]), name)

    def events_rows(name: str, scorer: Any, dma: Any, m: int) -> None:
        """A core with routes: the same samples as route events, in the DMA beats, and (for
        comparison, fewer) one ``ROUTE`` + ``PUSH`` each over AXI4-Lite."""
        lower, upper = scorer.route_bounds()
        t = time.perf_counter()
        got = scorer.score_batch(x[:m], tags[:m], dma=dma, routes=routes[:m], latencies=lats[:m])
        row(f"{name} events", m, time.perf_counter() - t, "route events in the DMA sample beats")
        check_events(got, routes[:m], lats[:m], lower, upper, f"{name} events")
        check(got, want_m(m), f"{name} events")
        k = max(1, min(m // 10, 2000))
        lower, upper = scorer.route_bounds()
        t = time.perf_counter()
        pushed = scorer.client.push_many(x[:k], tags[:k], (routes[:k], lats[:k]))
        row(f"{name} events/PUSH", k, time.perf_counter() - t, "the same events by ROUTE + PUSH (AXI4-Lite)")
        as_result = ScoreResult(*(pushed[:, i].copy() for i in range(4)), below=pushed[:, 4].copy(),
                                above=pushed[:, 5].copy())
        check_events(as_result, routes[:k], lats[:k], lower, upper, f"{name} events/PUSH")

    def want_m(m: int) -> ScoreResult:
        return score(p, cfg, x[:m], tags[:m])

    if have_pynq:
        from mailpulse.pynq_overlays.sim_device import EmulatedPort

        pynq_row("pynq/model-dev", EmulatedPort(p), n)

    m = min(n, 5000)
    spi = FakeSpiDev(SpiBridgeModel(EmulatedCore(p)).transfer)
    spi.max_speed_hz = sck
    with Ice40Scorer(p, spi=spi) as s:
        s.load_model(cfg)
        s.identify()
        before, dev_before = spi.bytes_moved, spi.device_seconds
        t = time.perf_counter()
        got = s.score_batch(x[:m], tags[:m])
        dt = time.perf_counter() - t
        per = (spi.bytes_moved - before) / m
        host = dt - (spi.device_seconds - dev_before)
        row("ice40/spi-model", m, dt, "(host + Python model of the bridge)")
        row("ice40 host side", m, host, f"{per:.0f} B/sample on the bus -> wire bound "
                                        f"{sck / 8 / per:,.0f} samples/s at {sck / 1e6:g} MHz")
        check(got, score(p, cfg, x[:m], tags[:m]), "ice40")

    for sim in sims:
        if not have_simulator(sim):
            print(f"sim/{sim} skipped: {sim} is not installed")
            continue
        t0 = time.perf_counter()
        with SimScorer(p, simulator=sim, batch_size=n_sim) as s:
            start = time.perf_counter() - t0
            s.load_model(cfg)
            t = time.perf_counter()
            got = s.score_batch(x[:n_sim], tags[:n_sim])
            row(f"sim/{sim}", n_sim, time.perf_counter() - t, f"(start-up {start:.1f} s)")
        check(got, score(p, cfg, x[:n_sim], tags[:n_sim]), f"sim/{sim}")
        if have_pynq:
            from mailpulse.pynq_overlays.sim_device import rtl_port

            port = rtl_port(p, simulator=sim)
            try:
                pynq_row(f"pynq/rtl-{sim}", port, n_sim)
            finally:
                port.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
