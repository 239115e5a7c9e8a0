"""Co-simulation: unmodified PYNQ user code (Overlay, bound driver, pynq.lib.dma.DMA) against the
generated RTL under cocotb, on Icarus and on Verilator; every score is compared with the model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import CoreConfig, score
from mailpulse.sim.tools import have_simulator

N_SAMPLES = int(os.environ.get("MAILPULSE_COSIM_SAMPLES", "300"))


#: (simulator, parameter set): the builds tests/test_sim_axi.py makes anyway, so they are shared.
CASES = [("icarus", "small"), ("verilator", "full")]


@pytest.mark.xdist_group("rtl_pynq")
@pytest.mark.parametrize(("simulator", "pset"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_unmodified_pynq_stack_on_the_rtl(simulator: str, pset: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pynq", reason="pynq is not installed")

    if not have_simulator(simulator):
        pytest.skip(f"{simulator} is not installed")
    import pynq_sim_support
    from mailpulse.pynq_overlays.driver import MailpulseScorer
    from mailpulse.pynq_overlays.sim_device import rtl_port
    from pynq import Overlay
    from pynq.lib.dma import DMA

    p = get_params(pset)
    rng = np.random.default_rng(2024)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(N_SAMPLES, p.d))
    tags = rng.integers(0, 1 << 32, size=N_SAMPLES)
    want = score(p, cfg, x, tags)
    pynq_sim_support.make_overlay_dir(tmp_path, p)
    monkeypatch.chdir(tmp_path)
    port = rtl_port(p, simulator=simulator)
    try:
        with pynq_sim_support.active_device(port) as dev:
            # ---- user code, unchanged from the board ----
            ol = Overlay("mailpulse.bit", download=False)
            scorer, dma = ol.mailpulse_0, ol.axi_dma_0
            ident = scorer.identify()
            scorer.load_model(cfg)
            got = scorer.score_batch(x, tags, dma=dma, chunk=128)      # 3 DMA transfers
            one = scorer.score_one(x[7], int(tags[7]))
            counters = scorer.counters()
            # ---------------------------------------------
            assert isinstance(scorer, MailpulseScorer) and isinstance(dma, DMA)
            assert dev.port is port
    finally:
        port.close()
    assert ident.latency > 0                     # the RTL reports its pipeline depth
    for f in ("score", "anomaly", "argmax", "tag"):
        bad = np.flatnonzero(getattr(got, f) != getattr(want, f))
        assert bad.size == 0, f"{simulator}: {f} differs at samples {bad[:5].tolist()}"
    assert one == want.row(7)
    assert counters.samples == N_SAMPLES + 1
    assert counters.anomalies == int(want.anomaly.sum()) + want.row(7)[1]
