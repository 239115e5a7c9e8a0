"""Route events on the PYNQ path: unmodified PYNQ user code (Overlay, the bound driver,
pynq.lib.dma.DMA) and the ``pynq`` scorer backend send each sample's route id and latency in its
DMA sample beat and read below/above from the result beats; on the RTL (Icarus, the ``small-r4``
build the bridge's route tests make) flags, scores and the bounds read back equal
:func:`mailpulse.hdl.reference.route_intervals`; a core without routes keeps its 20-byte beats;
hostile ids and latencies get one sentence before anything is sent."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from mailpulse.hdl.beats import sample_beat, sample_bytes
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    CoreConfig,
    RouteConfig,
    random_route_events,
    route_intervals,
    route_seed,
    score,
)
from mailpulse.host_bridge.core import CoreMismatchError
from mailpulse.sim.tools import have_simulator
from test_bridge_routes import _session

from mailpulse.backends import open_scorer

P = get_params("small-r4")


class RecordingPort:
    """A core port that keeps the sample beats every DMA packet carried (a test double around the
    model or the RTL port; everything else is passed through)."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.params = port.params
        self.packets: list[bytes] = []

    def stream_raw(self, beats: bytes, tlast: npt.ArrayLike | None = None) -> tuple[bytes, npt.NDArray[np.int64]]:
        self.packets.append(bytes(beats))
        out: tuple[bytes, npt.NDArray[np.int64]] = self.port.stream_raw(beats, tlast)
        return out

    def read(self, address: int) -> int:
        return int(self.port.read(address))

    def write(self, address: int, value: int) -> None:
        self.port.write(address, value)

    def write_many(self, writes: list[tuple[int, int]]) -> None:
        write_many = getattr(self.port, "write_many", None)
        if write_many is None:
            for a, v in writes:
                self.port.write(a, v)
        else:
            write_many(writes)

    def reset(self) -> None:
        self.port.reset()

    def close(self) -> None:
        self.port.close()


def _events_user_session(dev: Any, n: int, seed: int) -> None:
    """What a user writes in a notebook for a core with routes, checked against the reference: a
    batch with events in several DMA transfers, no register access per sample."""
    from pynq import Overlay

    rng = np.random.default_rng(seed)
    cfg = CoreConfig.random(P, rng)
    x = rng.integers(P.in_min, P.in_max + 1, size=(n, P.d))
    tags = rng.integers(0, 1 << 32, size=n)
    routes, lats = random_route_events(rng, n, P.r)
    rc = RouteConfig(1, 5, 10)
    lower = (rng.integers(0x300, 0xA00, size=P.r) << ADAPT_FRAC).astype(np.int64)
    upper = lower + (rng.integers(0x100, 0x600, size=P.r) << ADAPT_FRAC)
    # ---- user code, unchanged from the board ----
    ol = Overlay("mailpulse.bit", download=False)
    scorer, dma = ol.mailpulse_0, ol.axi_dma_0
    ident = scorer.identify()
    scorer.load_model(cfg, routes=rc)
    for r in range(P.r):
        scorer.seed_route(r, lower=int(lower[r]), upper=int(upper[r]))
    before = dev.register_accesses
    got = scorer.score_batch(x, tags, dma=dma, chunk=64, routes=routes, latencies=lats)
    accesses = dev.register_accesses - before
    bounds = scorer.route_bounds()
    # ---------------------------------------------
    assert ident.params == P and scorer.params == P
    want = score(P, cfg, x, tags)
    ri = route_intervals(routes, lats, [route_seed(int(v)) for v in lower], [route_seed(int(v)) for v in upper], rc)
    for f in ("score", "anomaly", "argmax", "tag"):
        assert getattr(got, f).tolist() == getattr(want, f).tolist(), f
    assert got.below is not None and got.above is not None
    assert got.below.tolist() == ri.below.tolist() and got.above.tolist() == ri.above.tolist()
    assert ri.below.sum() and ri.above.sum(), "the case flags both sides"
    assert [b.tolist() for b in bounds] == [ri.lower.tolist(), ri.upper.tolist()]
    # by DMA: a fixed number of DMA register accesses per transfer, none per sample (PUSH takes >= 4)
    transfers = -(-n // 64)
    assert accesses < n and accesses <= 40 * transfers, accesses
    packets = dev.port.packets[-transfers:]
    assert [len(p) for p in packets] == [sample_bytes(P) * min(64, n - 64 * i) for i in range(transfers)]
    beats = sample_beat(P).beats(b"".join(packets))
    assert sample_beat(P).get(beats, "route").tolist() == routes.tolist()
    assert sample_beat(P).get(beats, "latency").tolist() == lats.tolist()


@pytest.mark.xdist_group("rtl_identity")
def test_route_events_by_dma_on_the_rtl(pynq_support: ModuleType, in_tmp: Path) -> None:
    """The unmodified driver and the ``pynq`` backend against the RTL (Icarus): flags, scores and
    bounds equal the reference, the events in the DMA beats."""
    pytest.importorskip("cocotb", reason="cocotb is not installed")
    if not have_simulator("icarus"):
        pytest.skip("icarus is not installed")
    from mailpulse.pynq_overlays.sim_device import SimulatedDevice, rtl_port

    bit = pynq_support.make_overlay_dir(in_tmp, P)
    port = RecordingPort(rtl_port(P, simulator="icarus"))
    try:
        with pynq_support.active_device(port) as dev:
            _events_user_session(dev, n=150, seed=11)
        dev = SimulatedDevice(port)
        with open_scorer("pynq", P, bitfile=bit, device=dev, download=False, batch_size=64) as s:
            before = len(port.packets)
            _session(s, seed=12, n=150)         # the Scorer interface: batch by DMA, event by PUSH, bounds
            assert len(port.packets) - before == 3    # 150 events in three DMA transfers of <= 64
    finally:
        port.port.close()


def test_route_events_by_dma_on_the_model_device(pynq_support: ModuleType, in_tmp: Path) -> None:
    from mailpulse.pynq_overlays.sim_device import EmulatedPort, SimulatedDevice

    bit = pynq_support.make_overlay_dir(in_tmp, P)
    port = RecordingPort(EmulatedPort(P))
    with pynq_support.active_device(port) as dev:
        _events_user_session(dev, n=300, seed=5)
    with open_scorer("pynq", P, bitfile=bit, device=SimulatedDevice(port), download=False, batch_size=97) as s:
        _session(s, seed=6, n=300)
        n = 40
        x = np.zeros((n, P.d), dtype=np.int64)
        plain = s.score_batch(x)                    # no events: route id 0xFFFF in every beat, no flags
        assert plain.below is None and plain.above is None
        beats = sample_beat(P).beats(port.packets[-1])
        assert beats.shape == (n, 24) and set(sample_beat(P).get(beats, "route").tolist()) == {0xFFFF}


def test_a_core_without_routes_keeps_its_beats(pynq_support: ModuleType, in_tmp: Path) -> None:
    """R = 0: 20-byte beats (tag and features only), results without flags; route arguments are
    one sentence and nothing is sent."""
    from mailpulse.pynq_overlays.sim_device import EmulatedPort
    from pynq import Overlay

    p = get_params("small")
    rng = np.random.default_rng(4)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(50, p.d))
    pynq_support.make_overlay_dir(in_tmp, p)
    port = RecordingPort(EmulatedPort(p))
    with pynq_support.active_device(port) as dev:
        ol = Overlay("mailpulse.bit", download=False)
        scorer = ol.mailpulse_0
        assert scorer.params == p
        scorer.load_model(cfg)
        got = scorer.score_batch(x, dma=ol.axi_dma_0)
        assert got.score.tolist() == score(p, cfg, x).score.tolist() and got.below is None
        assert [len(b) for b in port.packets] == [20 * 50]
        assert bytes(port.packets[0]) == sample_beat(p).pack(50, {"tag": np.arange(50), "features": x}).tobytes()
        before = dev.register_accesses
        for kw in ({"routes": [0] * 50}, {"latencies": [0] * 50}):
            with pytest.raises(ValueError) as e:
                scorer.score_batch(x, dma=ol.axi_dma_0, **kw)
            assert str(e.value) == "the core (small) has no route intervals (R = 0): it takes no route ids or latencies"
        with pytest.raises(ValueError, match=r"has no route intervals \(R = 0\)"):
            scorer.route_bounds()
        assert dev.register_accesses == before and len(port.packets) == 1


def test_hostile_ids_and_latencies_get_one_sentence(pynq_support: ModuleType, in_tmp: Path) -> None:
    """Every bad route id or latency is refused with one sentence before a register or a DMA
    transfer is touched; the core scores the next good batch as if nothing happened."""
    from mailpulse.pynq_overlays.sim_device import EmulatedPort
    from pynq import Overlay

    n = 4
    x = np.zeros((n, P.d), dtype=np.int64)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"routes": [0, 1, 2, -1]}, "route ids must be in 0..65535, not -1"),
        ({"routes": [0, 1, 2, 65536]}, "route ids must be in 0..65535, not 65536"),
        ({"latencies": [0, 1, 2, 1 << 16]}, "latencies must be in 0..65535, not 65536"),
        ({"latencies": [0, 1, 2, -7]}, "latencies must be in 0..65535, not -7"),
        ({"latencies": [0.5, 1, 2, 3]}, "latencies must be integers (Q8.8 log2 of microseconds)"),
        ({"latencies": [float("nan")] * n}, "latencies must be integers (Q8.8 log2 of microseconds)"),
        ({"latencies": [float("inf")] * n}, "latencies must be integers (Q8.8 log2 of microseconds)"),
        ({"routes": ["a", "b", "c", "d"]}, "route ids must be integers"),
        ({"routes": [0, 1, 2, 1 << 70]}, "route ids must be integers"),
        ({"routes": [None] * n}, "route ids must be integers"),
        ({"routes": [1, 2, 3]}, "4 samples but 3 route ids"),
        ({"routes": [0] * n, "latencies": [1] * 5}, "4 samples but 5 latencies"),
    ]
    pynq_support.make_overlay_dir(in_tmp, P)
    port = RecordingPort(EmulatedPort(P))
    with pynq_support.active_device(port) as dev:
        ol = Overlay("mailpulse.bit", download=False)
        scorer, dma = ol.mailpulse_0, ol.axi_dma_0
        scorer.load_model(CoreConfig.random(P, np.random.default_rng(1)), routes=RouteConfig(1, 5, 10))
        before = dev.register_accesses
        for kw, text in bad:
            with pytest.raises(ValueError) as e:
                scorer.score_batch(x, dma=dma, **kw)
            assert str(e.value) == text, (kw, str(e.value))
        assert dev.register_accesses == before and port.packets == [] and scorer.counters().samples == 0
        ok = scorer.score_batch(x, dma=dma, routes=[0, 1, 7, 0xFFFF], latencies=[0, 0xFFFF, 3, 4])
        assert ok.below is not None and len(ok.below) == n and scorer.counters().samples == n


def test_overlay_and_backend_know_r_from_the_hwh(pynq_support: ModuleType, in_tmp: Path) -> None:
    """The driver's R comes from the ``.hwh``; a ``.hwh`` that names no R (written before cores had
    routes) makes it read ``PARAMS.ROUTES_LOG2``; an R no core has is one sentence; the backend
    refuses an overlay whose R differs."""
    from mailpulse.pynq_overlays.overlay import MailpulseOverlay
    from mailpulse.pynq_overlays.sim_device import EmulatedPort, SimulatedDevice

    bit = pynq_support.make_overlay_dir(in_tmp, P)
    with pynq_support.active_device(EmulatedPort(P)) as dev:
        ol = MailpulseOverlay(str(bit), download=False)
        assert ol.scorer.params == P and int(ol.ip_dict["mailpulse_0"]["parameters"]["R"]) == P.r
        reads = dev.register_accesses
        assert reads == 0                            # from the description, no register read
        r = ol.score_batch(np.zeros((3, P.d), dtype=np.int64), routes=[0, 1, 2], latencies=[5, 6, 7])
        assert r.below is not None and r.above is not None
    hwh = bit.with_suffix(".hwh")
    hwh.write_text(hwh.read_text(encoding="utf-8").replace('<PARAMETER NAME="R" VALUE="4" />', ""), encoding="utf-8")
    with pynq_support.active_device(EmulatedPort(P)) as dev:
        ol = MailpulseOverlay(str(bit), download=False)
        assert "R" not in ol.ip_dict["mailpulse_0"]["parameters"]
        assert ol.scorer.params == P and dev.register_accesses == 2      # PARAMS and WIDTHS
    good = '<PARAMETER NAME="B" VALUE="64" />'
    text = hwh.read_text(encoding="utf-8")
    for r_value, sentence in (("3", "the .hwh describes parameters that no mailpulse core has (R must be 0 or a "
                                    "power of two in 1..64, not 3)"),
                              ("four", "the .hwh's scorer parameters D/K/B/R are not integers "
                                       "(D='8', K='8', B='64', R='four')")):
        hwh.write_text(text.replace(good, f'{good}<PARAMETER NAME="R" VALUE="{r_value}" />'), encoding="utf-8")
        with pynq_support.active_device(EmulatedPort(P)), pytest.raises(CoreMismatchError) as e:
            assert MailpulseOverlay(str(bit), download=False).scorer is None     # the driver is made here
        assert str(e.value) == sentence
    pynq_support.make_overlay_dir(in_tmp, P)
    with pytest.raises(CoreMismatchError, match=r"scorer has D=8 K=8 B=64 R=4, the host expects set small "):
        open_scorer("pynq", "small", bitfile=bit, device=SimulatedDevice(EmulatedPort(P)), download=False)
