"""The simulated device (sim/device.py): host Python driving the RTL synchronously.

Each test starts a real simulator process (Verilator on the full set, whose build the AXI
testbench shares; Icarus on the small set) and checks what host code relies on: register access
and bus errors, a model load, streamed scores equal to :func:`mailpulse.hdl.reference.score` (with frames and
stress), reset, the SPI top's byte transfers, and that ``close`` leaves no process behind.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from mailpulse.hdl.reference import BusError, CoreConfig, bins, model_writes, score
from mailpulse.hdl.regmap import CORE_ID
from mailpulse.sim.codec import compare, pack_samples, random_samples, unpack_results
from mailpulse.sim.device import SimCore, SimDeviceError, open_device
from mailpulse.sim.tools import have_simulator


def need(sim: str) -> None:
    if not have_simulator(sim):
        pytest.skip(f"simulator {sim} is not installed")


def load(dev: SimCore, cfg: CoreConfig) -> None:
    rm = dev.regmap
    dev.write_many(model_writes(rm, cfg))
    dev.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT").mask)
    for _ in range(100):
        if not dev.read(rm["STATUS"].address()) & rm["STATUS"].field("COMMIT_PENDING").mask:
            return
    raise AssertionError("COMMIT stayed pending")


@pytest.mark.parametrize(("sim", "params", "n"), [
    pytest.param("verilator", "full", 20000, marks=pytest.mark.xdist_group("sim_verilator_axi")),
    pytest.param("icarus", "small", 1500, marks=pytest.mark.xdist_group("sim_icarus_spi"))])
def test_axi_device(sim: str, params: str, n: int) -> None:
    need(sim)
    rng = np.random.default_rng(11)
    with SimCore(params, sim) as dev:
        p, rm = dev.params, dev.regmap
        assert dev.read(rm["ID"].address()) == CORE_ID
        assert dev.read(rm["PARAMS"].address()) == rm["PARAMS"].reset
        with pytest.raises(BusError):
            dev.write(rm["ID"].address(), 0)
        with pytest.raises(BusError):
            dev.read(rm["TABLE"].last_address + 4)
        assert dev.read(rm["STATUS"].address()) & rm["STATUS"].field("BUS_ERROR").mask
        dev.write(rm["CTRL"].address(), rm["CTRL"].field("CLEAR_ERROR").mask)
        with pytest.raises(BusError):
            dev.write_many([(rm["THRESHOLD"].address(), 5), (rm["SAMPLES"].address(), 1)])
        assert dev.read(rm["THRESHOLD"].address()) == 5
        cfg = CoreConfig.random(p, rng)
        load(dev, cfg)
        x, tags = random_samples(p, rng, n)
        cfg.threshold = int(np.median(score(p, cfg, x[:100], tags[:100]).score))
        dev.write(rm["THRESHOLD"].address(), cfg.threshold)
        dev.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT_THRESHOLD").mask)
        # one frame, then DMA-like frames under idle and back-pressure
        got = dev.stream(x, tags)
        exp = score(p, cfg, x, tags)
        assert compare(exp, got) == []
        assert got.tlast.tolist() == [0] * (n - 1) + [1]
        tlast = (rng.random(n) < 0.02).astype(np.int64)
        tlast[-1] = 1
        dev.set_stress(0.3, 0.3)
        got = dev.stream(x, tags, tlast)
        assert compare(exp, got) == [] and np.array_equal(got.tlast, tlast)
        dev.set_stress(0, 0)
        raw, tl = dev.stream_raw(pack_samples(p, x[:10], tags[:10]))
        assert compare(score(p, cfg, x[:10], tags[:10]), unpack_results(raw, tl)) == []
        dev.cycles(20)
        assert dev.read(rm["SAMPLES"].address()) == 2 * n + 10
        assert dev.read(rm["ANOMALIES"].address()) == (2 * int(exp.anomaly.sum())
                                                        + int(exp.anomaly[:10].sum())) & 0xFFFFFFFF
        with pytest.raises(ValueError):
            dev.stream_raw(b"\0" * 33)
        with pytest.raises(SimDeviceError):
            dev.spi_transfer(b"\x0b")
        dev.reset()
        assert dev.read(rm["SAMPLES"].address()) == 0
        assert dev.read(rm["THRESHOLD"].address()) == rm["THRESHOLD"].reset
        pid = dev._proc.pid if dev._proc else None
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(SimDeviceError):
        dev.read(0)


@pytest.mark.xdist_group("sim_icarus_spi")
def test_spi_device() -> None:
    need("icarus")
    rng = np.random.default_rng(5)
    with open_device("small", top="spi", simulator="icarus") as dev:
        p, rm = dev.params, dev.regmap
        miso = dev.spi_transfer(bytes([0x0B, 0, 0, 0]) + bytes(8))
        assert miso[0] == 0xA5
        assert int.from_bytes(miso[4:8], "big") == CORE_ID
        assert int.from_bytes(miso[8:12], "big") == rm["VERSION"].reset
        dev.write(rm["THRESHOLD"].address(), 1234)
        assert dev.read(rm["THRESHOLD"].address()) == 1234
        # a small model: weights/offsets/shifts/threshold, table entries the sample uses
        cfg = CoreConfig.random(p, rng)
        x, tags = random_samples(p, rng, 1)
        used = {int(k) * p.b + int(b) for k, b in enumerate(bins(p, cfg, x)[0])}
        tab = rm["TABLE"]
        cfg.tables[:] = 0
        for i in used:
            cfg.tables[i // p.b, i % p.b] = int(rng.integers(1, p.table_max))
        writes = [(a, v) for a, v in model_writes(rm, cfg)
                  if not tab.offset <= a <= tab.last_address or (a - tab.offset) // 4 in used]
        dev.write_many(writes)
        dev.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT").mask)
        for d in range(p.d):
            dev.write(rm["FEATURE"].address(d), int(x[0, d]) & 0xFFFFFFFF)
        dev.write(rm["TAG"].address(), int(tags[0]))
        dev.write(rm["PUSH"].address(), 1)
        dev.cycles(50)
        exp = score(p, cfg, x, tags)
        assert dev.read(rm["RESULT_SCORE"].address()) == int(exp.score[0])
        assert dev.read(rm["RESULT_TAG"].address()) == int(tags[0])
        with pytest.raises(SimDeviceError):
            dev.stream(x, tags)
