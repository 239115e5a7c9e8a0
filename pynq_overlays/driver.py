"""PYNQ driver of the mailpulse scorer IP, bound by VLNV.

``pynq.Overlay`` gives every IP whose VLNV is in :attr:`MailpulseScorer.bindto` this driver
(the binding happens when this module is imported: through the ``pynq.lib`` entry point, or by
``mailpulse.pynq_overlays.overlay``).  The driver's API is typed and uses the register map of
``mailpulse.hdl.regmap`` for every address; its register protocol is ``mailpulse.host_bridge.core.CoreClient``, the
same one every other backend uses.

Batches go over AXI4-Stream through ``pynq.lib.dma.DMA`` with ``pynq.allocate`` buffers: samples
are packed into dense sample beats (20 bytes for D = 8) with numpy (no per-sample Python), the S2MM
channel is armed first, then MM2S; results come back as 8-byte beats.  On a core with route
intervals (R > 0, from the ``.hwh``) each sample beat also carries a route id and a Q8.8 latency
(24 bytes for D = 8) and each result beat the interval's below/above flags (:mod:`mailpulse.hdl.beats`),
so route events travel by DMA too, in the same transfers.

Example (on a PYNQ-Z2, or against ``mailpulse.pynq_overlays.sim_device``)::

    from pynq import Overlay
    ol = Overlay("mailpulse.bit")
    ident = ol.mailpulse_0.identify()
    ol.mailpulse_0.load_model("model.json")
    res = ol.mailpulse_0.score_batch(x, tags, dma=ol.axi_dma_0)
    ev = ol.mailpulse_0.score_batch(x, tags, dma=ol.axi_dma_0, routes=ids, latencies=q88)  # R > 0: ev.below
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams
from mailpulse.hdl.reference import RouteConfig, ScoreResult
from mailpulse.hdl.regmap import VLNV, RegisterMap
from mailpulse.host_bridge.bus import BurstMixin
from mailpulse.host_bridge.core import (
    CoreClient,
    CoreIdentity,
    CoreMismatchError,
    Counters,
    named_params,
    params_from_registers,
)
from mailpulse.host_bridge.scorer import EventResult, as_core_config
from mailpulse.host_bridge.streamfmt import (
    RESULT_BYTES,
    check_events,
    check_samples,
    pack_samples,
    sample_bytes,
    unpack_results,
)
from pynq import DefaultIP, allocate

#: Samples per DMA transfer (20 B in, 8 B out each for D = 8; 24 B in with routes): 80 KiB + 32 KiB of buffers.
DEFAULT_CHUNK = 4096
#: The scorer IP parameters of the ``.hwh`` the driver takes its :class:`CoreParams` from
#: (written by :mod:`mailpulse.pynq_overlays.hwh` and the IP's ``package_ip.tcl``).
DESCRIPTION_PARAMETERS = ("D", "K", "B", "R")


class MmioBus(BurstMixin):
    """:class:`mailpulse.host_bridge.bus.RegisterBus` over a ``pynq.MMIO``; a write burst is one ``bytes`` write."""

    def __init__(self, mmio: Any) -> None:
        self.mmio = mmio

    def read(self, address: int) -> int:
        return int(self.mmio.read(address))

    def write(self, address: int, value: int) -> None:
        self.mmio.write(address, int(value) & 0xFFFFFFFF)

    def write_burst(self, address: int, values: Sequence[int]) -> None:
        self.mmio.write(address, np.asarray(values, dtype=np.int64).astype("<u4").tobytes())


def params_from_description(description: dict[str, Any], mmio_bus: MmioBus) -> CoreParams:
    """The core's parameters: from the ``.hwh`` IP parameters ``D``, ``K``, ``B`` and ``R`` (routes)
    when all are present, else read from the ``PARAMS``/``WIDTHS`` registers (offsets from the
    register map; a ``.hwh`` written before cores had routes names no ``R``, the hardware does).

    Both paths name the parameters with :func:`~mailpulse.host_bridge.core.named_params`, and the
    ``.hwh``'s numbers come from the same :class:`CoreParams` as the ``PARAMS`` register
    (:mod:`mailpulse.pynq_overlays.hwh`); :meth:`MailpulseScorer.identify` checks that the hardware agrees.
    """
    hw = description.get("parameters", {})
    if all(k in hw for k in DESCRIPTION_PARAMETERS):
        try:
            d, k, b, r = (int(hw[k]) for k in DESCRIPTION_PARAMETERS)
        except (TypeError, ValueError):
            raise CoreMismatchError(f"the .hwh's scorer parameters D/K/B/R are not integers "
                                    f"({', '.join(f'{k}={hw[k]!r}' for k in DESCRIPTION_PARAMETERS)})") from None
        return named_params(d, k, b, r, "the .hwh describes")
    probe = RegisterMap(PARAMETER_SETS["small"])
    return params_from_registers(mmio_bus.read(probe["PARAMS"].address()), mmio_bus.read(probe["WIDTHS"].address()))


class MailpulseScorer(DefaultIP):
    """Driver of one ``mailpulse.org:mailpulse:scorer`` IP.

    Attributes
    ----------
    params : CoreParams
        The core's parameters (from the ``.hwh``); :meth:`identify` checks the hardware agrees.
    client : mailpulse.host_bridge.core.CoreClient
        The register protocol, for anything the methods below do not cover.
    """

    bindto: ClassVar[list[str]] = [VLNV]

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__(description=description)
        self.bus = MmioBus(self.mmio)
        self.params = params_from_description(description, self.bus)
        self.client = CoreClient(self.bus, self.params)

    # -- control ------------------------------------------------------------------------------
    def identify(self) -> CoreIdentity:
        """Read ID, VERSION, PARAMS, WIDTHS and LATENCY; raise if this is not the expected core."""
        return self.client.identify()

    def load_model(self, model: Any, *, commit: bool = True, routes: RouteConfig | None = None) -> None:
        """Write a model (file path, loaded model or ``CoreConfig``) to the shadow bank and commit it;
        ``routes`` sets the route interval registers committed with it (a core with routes).

        A model that does not fit the core's parameters raises before any register is written.
        """
        cfg = as_core_config(model, self.params)
        if routes is not None:
            cfg = cfg.copy()
            cfg.routes = routes
        self.client.load_config(cfg, commit=commit)

    def set_threshold(self, threshold: int) -> None:
        """Set the anomaly threshold (takes effect between two samples)."""
        self.client.set_threshold(threshold)

    def counters(self) -> Counters:
        """Samples scored and anomalies flagged since reset or :meth:`clear_counters`."""
        return self.client.counters()

    def clear_counters(self) -> None:
        self.client.clear_counters()

    def status(self) -> dict[str, int]:
        return self.client.status()

    # -- scoring ------------------------------------------------------------------------------
    def score_one(self, x: npt.ArrayLike, tag: int = 0) -> tuple[int, int, int, int]:
        """Score one sample over AXI4-Lite (``FEATURE``/``TAG``/``PUSH``): (score, anomaly, argmax, tag)."""
        return self.client.score_one(x, tag)

    def score_event(self, x: npt.ArrayLike, tag: int, route: int, latency: int) -> EventResult:
        """Score one sample with its route event over AXI4-Lite (``ROUTE`` before the ``PUSH``; a
        core with routes): (score, anomaly, argmax, tag, below, above)."""
        s, a, k, t, below, above = self.client.score_event(x, tag, route, latency)
        return s, a, k, t, below, above

    def route_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(lower, upper) bound accumulators of every route (``ROUTE_BOUND``, units of ``2**-ADAPT_FRAC``)."""
        return self.client.route_bounds()

    def seed_route(self, route: int, lower: int | None = None, upper: int | None = None) -> None:
        """Seed route ``route``'s lower and/or upper bound accumulator (``ROUTE_BOUND``)."""
        self.client.seed_route(route, lower, upper)

    def score_batch(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None, *, dma: Any,
                    chunk: int = DEFAULT_CHUNK, routes: npt.ArrayLike | None = None,
                    latencies: npt.ArrayLike | None = None) -> ScoreResult:
        """Score (N, D) int16 samples over AXI4-Stream through ``dma`` (a ``pynq.lib.dma.DMA``).

        Tags default to ``0..N-1``.  With ``routes``/``latencies`` (a core with routes, R > 0:
        route ids and Q8.8 log2 latencies in 0..65535, an id >= R not tracked, either one
        defaulting to no event) every sample beat carries its event (:func:`mailpulse.hdl.beats.sample_beat`)
        and the result has ``below``/``above`` from the result beats; without them a core with routes
        gets route id 0xFFFF in every beat (nothing tracked) and the result has no flags, as on
        every backend.  Bad input raises ``ValueError`` with one sentence before anything is sent
        (:func:`~mailpulse.host_bridge.streamfmt.check_samples`,
        :func:`~mailpulse.host_bridge.streamfmt.check_events`).

        Samples go in DMA transfers of up to ``chunk`` samples; each transfer must return exactly
        as many results (else ``RuntimeError``: the stream lost or gained beats).
        """
        xs, ts = check_samples(self.params, x, tags)
        n = len(xs)
        events = routes is not None or latencies is not None
        rs, ls = check_events(self.params, n, routes, latencies) if events else (None, None)
        parts: list[ScoreResult] = []
        chunk = max(1, min(chunk, n or 1))
        nb = sample_bytes(self.params)
        with allocate((chunk, nb), dtype=np.uint8, target=self.device) as inbuf, \
                allocate((chunk, RESULT_BYTES), dtype=np.uint8, target=self.device) as outbuf:
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                part = slice(start, start + m)
                pack_samples(self.params, xs[part], ts[part], out=inbuf, routes=None if rs is None else rs[part],
                             latencies=None if ls is None else ls[part])
                dma.recvchannel.transfer(outbuf, nbytes=m * RESULT_BYTES)
                dma.sendchannel.transfer(inbuf, nbytes=m * nb)
                dma.sendchannel.wait()
                dma.recvchannel.wait()
                got = int(dma.recvchannel.transferred)
                if got != m * RESULT_BYTES:
                    raise RuntimeError(f"the DMA returned {got} bytes of results for {m} samples "
                                       f"({m * RESULT_BYTES} expected)")
                parts.append(unpack_results(np.asarray(outbuf), m, self.params))
        fields = ("score", "anomaly", "argmax", "tag")
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            out = ScoreResult(z, z.copy(), z.copy(), z.copy())
        else:
            out = ScoreResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))
        if events:      # a core with routes (check_events refused the others): its beats carry the flags
            out.below = np.concatenate([np.zeros(0, dtype=np.int64), *(np.asarray(p.below) for p in parts)])
            out.above = np.concatenate([np.zeros(0, dtype=np.int64), *(np.asarray(p.above) for p in parts)])
        return out


__all__ = ["DEFAULT_CHUNK", "MailpulseScorer", "MmioBus"]
