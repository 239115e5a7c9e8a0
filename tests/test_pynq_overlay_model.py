"""Unmodified PYNQ user code (Overlay, bound driver, pynq.allocate, pynq.lib.dma.DMA) against the
simulated pynq.Device backed by the register-level reference model, on every parameter set."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from mailpulse.hdl.params import PARAMETER_SETS, get_params
from mailpulse.hdl.reference import BusError, CoreConfig, score
from mailpulse.hdl.regmap import VLNV, RegisterMap
from mailpulse.host_bridge.core import CoreMismatchError
from mailpulse.pynq_overlays.hwh import OVERLAY_DIR

from mailpulse.backends import open_scorer
from mailpulse.errors import UserError


def user_session(bitname: str, cfg: CoreConfig, x: np.ndarray, tags: np.ndarray) -> tuple[Any, ...]:
    """What a user writes in a notebook: nothing here knows the device is simulated."""
    from pynq import Overlay

    ol = Overlay(bitname, download=False)
    scorer, dma = ol.mailpulse_0, ol.axi_dma_0
    ident = scorer.identify()
    scorer.load_model(cfg)
    batch = scorer.score_batch(x, tags, dma=dma, chunk=97)
    one = scorer.score_one(x[0], int(tags[0]))
    return ol, ident, batch, one, scorer.counters()


@pytest.mark.parametrize("pset", sorted(PARAMETER_SETS))
def test_unmodified_driver_and_dma_match_the_model(pset: str, pynq_support: ModuleType, in_tmp: Path) -> None:
    from mailpulse.pynq_overlays.driver import MailpulseScorer
    from mailpulse.pynq_overlays.sim_device import EmulatedPort
    from pynq.lib.dma import DMA

    p = get_params(pset)
    rng = np.random.default_rng(7)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(500, p.d))
    tags = rng.integers(0, 1 << 32, size=500)
    pynq_support.make_overlay_dir(in_tmp, p)
    with pynq_support.active_device(EmulatedPort(p)) as dev:
        ol, ident, batch, one, counters = user_session("mailpulse.bit", cfg, x, tags)
        assert isinstance(ol.mailpulse_0, MailpulseScorer) and isinstance(ol.axi_dma_0, DMA)
        assert ol.ip_dict["mailpulse_0"]["type"] == VLNV
        assert (ident.params.d, ident.params.k, ident.params.b) == (p.d, p.k, p.b)
        want = score(p, cfg, x, tags)
        for f in ("score", "anomaly", "argmax", "tag"):
            assert np.array_equal(getattr(batch, f), getattr(want, f)), f
        assert one == want.row(0)
        assert counters.samples == 501 and counters.anomalies == int(want.anomaly.sum()) + want.row(0)[1]
        # the register map PYNQ builds from the .hwh reads the same registers
        assert int(ol.mailpulse_0.register_map.PARAMS) == RegisterMap(p)["PARAMS"].reset
        assert dev.register_accesses > 0


def test_overlay_class_facade_and_threshold(pynq_support: ModuleType, in_tmp: Path) -> None:
    from mailpulse.pynq_overlays.overlay import MailpulseOverlay
    from mailpulse.pynq_overlays.sim_device import EmulatedPort

    p = get_params("small")
    rng = np.random.default_rng(3)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(64, p.d))
    bit = pynq_support.make_overlay_dir(in_tmp, p)
    with pynq_support.active_device(EmulatedPort(p)):
        ol = MailpulseOverlay(str(bit), download=False)
        ol.scorer.load_model(cfg)
        ol.scorer.set_threshold(0)
        r = ol.score_batch(x)
        assert np.array_equal(r.tag, np.arange(64))
        assert np.array_equal(r.anomaly, (score(p, cfg, x).score > 0).astype(np.int64))
        assert ol.scorer.client.thresholds() == (0, 0)


def test_download_checks_the_bitstream(pynq_support: ModuleType, in_tmp: Path) -> None:
    from mailpulse.pynq_overlays.sim_device import EmulatedPort
    from pynq import Overlay

    p = get_params("small")
    bit = pynq_support.make_overlay_dir(in_tmp, p)
    with pynq_support.active_device(EmulatedPort(p)) as dev:
        ol = Overlay(bit.name)                  # download=True: header validated, PL "reset"
        assert ol.is_loaded() and dev.timestamp
        assert dev.slcr.fclk_mhz(0) == 100.0     # PYNQ programmed FCLK0 from the .hwh through the SLCR
        ol.mailpulse_0.identify()
        bad = in_tmp / "bad.bit"
        bad.write_bytes(bit.read_bytes()[:-7])  # truncated
        (in_tmp / "bad.hwh").write_bytes((in_tmp / "mailpulse.hwh").read_bytes())
        with pytest.raises(UserError, match="truncated"):
            Overlay(bad.name)


def test_wrong_parameter_set_is_refused_by_identify(pynq_support: ModuleType, in_tmp: Path) -> None:
    from mailpulse.pynq_overlays.sim_device import EmulatedPort
    from pynq import Overlay

    pynq_support.make_overlay_dir(in_tmp, get_params("full"))       # .hwh says "full"
    with pynq_support.active_device(EmulatedPort(get_params("small"))):  # the logic is "small"
        ol = Overlay("mailpulse.bit", download=False)
        with pytest.raises(CoreMismatchError, match="D=8 K=8 B=64"):
            ol.mailpulse_0.identify()
        with pytest.raises(CoreMismatchError, match="does not fit"):
            ol.mailpulse_0.load_model(CoreConfig.zeros(get_params("small")))


def test_device_memory_is_not_coherent(pynq_support: ModuleType) -> None:
    """A driver that skipped flush would send stale data: the device keeps its own copy."""
    import pynq
    from mailpulse.pynq_overlays.sim_device import EmulatedPort

    p = get_params("small")
    with pynq_support.active_device(EmulatedPort(p)) as dev:
        buf = pynq.allocate((8,), dtype=np.uint32)
        assert isinstance(buf, pynq.buffer.PynqBuffer) and buf.physical_address % 4096 == 0
        buf[:] = np.arange(8)
        assert dev.memory_read(buf.physical_address, 32) == bytes(32)      # not flushed yet
        buf.flush()
        assert dev.memory_read(buf.physical_address, 32) == np.arange(8, dtype="<u4").tobytes()
        dev.memory_write(buf.physical_address, bytes(range(32)))
        assert int(buf[0]) == 0                                             # not invalidated yet
        buf.invalidate()
        assert buf.view(np.uint8).tolist() == list(range(32))


def test_dma_model_reports_errors_instead_of_hanging(pynq_support: ModuleType, in_tmp: Path) -> None:
    import pynq
    from mailpulse.pynq_overlays.sim_device import AxiDmaModel, EmulatedPort
    from pynq import Overlay

    p = get_params("small")
    pynq_support.make_overlay_dir(in_tmp, p)
    with pynq_support.active_device(EmulatedPort(p)) as dev:
        ol = Overlay("mailpulse.bit", download=False)
        dma = ol.axi_dma_0
        out = pynq.allocate((4, 16), dtype=np.uint8)
        dma.recvchannel.transfer(out)
        dev.dma.HANG_POLLS = 50
        assert isinstance(dev.dma, AxiDmaModel)
        with pytest.raises(RuntimeError, match="no MM2S"):
            dma.recvchannel.wait()                # nothing was sent: a board would hang here
        with pytest.raises(BusError, match="0x50000000"):
            ol.mailpulse_0.mmio.device.read_registers(0x5000_0000, 4)


def test_the_shipped_notebook_runs_in_simulation(pynq_support: ModuleType, in_tmp: Path) -> None:
    """Every code cell of the notebook, with SIMULATE switched on (its own simulated device)."""
    nb = json.loads((OVERLAY_DIR / "mailpulse.ipynb").read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "SIMULATE = False" in cells[0]
    cells[0] = cells[0].replace("SIMULATE = False", "SIMULATE = True")
    scope: dict[str, Any] = {}
    # (active_device restores pynq's active device after)
    with pynq_support.active_device(pynq_support.EmulatedPort(get_params("zynq"))):
        for code in cells:
            exec(compile(code, "mailpulse.ipynb", "exec"), scope)
    assert scope["ident"].params.name == "zynq" and len(scope["res"]) == 10000


def test_pynq_backend_of_the_scorer_interface(pynq_support: ModuleType, in_tmp: Path) -> None:
    """host_bridge's ``pynq`` backend over the same stack (the simulated device passed explicitly)."""
    from mailpulse.pynq_overlays.sim_device import EmulatedPort, SimulatedDevice

    p = get_params("full")
    rng = np.random.default_rng(8)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(9000, p.d))
    bit = pynq_support.make_overlay_dir(in_tmp, p)
    dev = SimulatedDevice(EmulatedPort(p))
    with open_scorer("pynq", p, bitfile=bit, device=dev, download=True) as s:
        assert s.identify().params == p
        s.load_model(cfg)
        r = s.score_batch(x)                                   # three DMA transfers of <= 4096
        want = score(p, cfg, x)
        assert np.array_equal(r.score, want.score) and np.array_equal(r.tag, np.arange(9000))
        assert s.counters().samples == 9000
    with pytest.raises(CoreMismatchError, match="expects set small"):
        open_scorer("pynq", "small", bitfile=bit, device=SimulatedDevice(EmulatedPort(p)), download=False)
