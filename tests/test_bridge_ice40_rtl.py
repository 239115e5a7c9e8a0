"""The iCE40 path byte for byte: the ice40 backend's SPI frames go through a spidev-compatible fake
into the RTL's SPI register bridge (the ``mailpulse_spi`` top under cocotb), and every score is
compared with the reference model."""

from __future__ import annotations

import os

import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import CoreConfig, score
from mailpulse.host_bridge.backends.ice40 import Ice40Scorer
from mailpulse.host_bridge.backends.sim import open_rtl
from mailpulse.host_bridge.spi import FakeSpiDev
from mailpulse.sim.tools import have_simulator

#: Bit-level SPI under cocotb is slow (Icarus: ~1 s per sample): a few samples, the whole model load.
N = int(os.environ.get("MAILPULSE_SPI_SAMPLES", "6"))
#: Verilator by default: tests/test_sim_spi.py builds the same spi_small model, so the build is shared.
SIMULATOR = os.environ.get("MAILPULSE_SPI_SIM", "verilator")


@pytest.mark.xdist_group("rtl_pynq")
def test_ice40_backend_through_the_rtl_spi_bridge() -> None:
    pytest.importorskip("cocotb", reason="cocotb is not installed")

    simulator = SIMULATOR if have_simulator(SIMULATOR) else "icarus"
    if not have_simulator(simulator):
        pytest.skip("neither Verilator nor Icarus is installed")

    p = get_params("small")
    rng = np.random.default_rng(31)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(N, p.d))
    tags = rng.integers(0, 1 << 32, size=N)
    tags[1] = tags[0]                                  # a repeated tag takes the STATUS-polling path
    dev = open_rtl(p, simulator=simulator, top="spi")
    try:
        spi = FakeSpiDev(dev.spi_transfer, keep_log=True)
        spi.max_speed_hz = 1_000_000
        with Ice40Scorer(p, spi=spi, batch_size=4) as s:
            ident = s.identify()
            s.load_model(cfg)
            got = s.score_batch(x, tags)
            counters = s.counters()
    finally:
        dev.close()
    assert ident.params == p and ident.latency > 0
    want = score(p, cfg, x, tags)
    for f in ("score", "anomaly", "argmax", "tag"):
        bad = np.flatnonzero(getattr(got, f) != getattr(want, f))
        assert bad.size == 0, f"{f} differs at samples {bad[:5].tolist()}"
    assert counters.samples == N
    assert all(miso[0] == 0xA5 for _mosi, miso in spi.log)      # every frame answered with the sync byte
