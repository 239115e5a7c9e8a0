"""PYNQ driver of the mailpulse scorer IP, bound by VLNV.

``pynq.Overlay`` gives every IP whose VLNV is in :attr:`MailpulseScorer.bindto` this driver
(the binding happens when this module is imported: through the ``pynq.lib`` entry point, or by
``mailpulse.pynq_overlays.overlay``).  The driver's API is typed and uses the register map of
``mailpulse.hdl.regmap`` for every address; its register protocol is ``mailpulse.host_bridge.core.CoreClient``, the
same one every other backend uses.

Batches go over AXI4-Stream through ``pynq.lib.dma.DMA`` with ``pynq.allocate`` buffers: samples
are packed into dense sample beats (20 bytes for D = 8) with numpy (no per-sample Python), the S2MM channel is armed
first, then MM2S; results come back as 8-byte beats.

Example (on a PYNQ-Z2, or against ``mailpulse.pynq_overlays.sim_device``)::

    from pynq import Overlay
    ol = Overlay("mailpulse.bit")
    ident = ol.mailpulse_0.identify()
    ol.mailpulse_0.load_model("model.json")
    res = ol.mailpulse_0.score_batch(x, tags, dma=ol.axi_dma_0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams
from mailpulse.hdl.reference import ScoreResult
from mailpulse.hdl.regmap import VLNV, RegisterMap
from mailpulse.host_bridge.bus import BurstMixin
from mailpulse.host_bridge.core import CoreClient, CoreIdentity, Counters, params_from_registers
from mailpulse.host_bridge.scorer import as_core_config
from mailpulse.host_bridge.streamfmt import RESULT_BYTES, check_samples, pack_samples, sample_bytes, unpack_results
from pynq import DefaultIP, allocate

#: Samples per DMA transfer (32 B in, 16 B out each): 128 KiB + 64 KiB of buffers.
DEFAULT_CHUNK = 4096


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
    """The core's parameters: from the ``.hwh`` IP parameters (``D``, ``K``, ``B``) when present,
    else read from the ``PARAMS``/``WIDTHS`` registers (offsets from the register map)."""
    hw = description.get("parameters", {})
    if all(k in hw for k in ("D", "K", "B")):
        d, k, b = int(hw["D"]), int(hw["K"]), int(hw["B"])
        for ps in PARAMETER_SETS.values():
            if (ps.d, ps.k, ps.b) == (d, k, b):
                return ps
        return CoreParams(str(hw.get("PARAMS_NAME", "custom")), d=d, k=k, b=b)
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

    def load_model(self, model: Any, *, commit: bool = True) -> None:
        """Write a model (file path, loaded model or ``CoreConfig``) to the shadow bank and commit it.

        A model that does not fit the core's parameters raises before any register is written.
        """
        self.client.load_config(as_core_config(model, self.params), commit=commit)

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

    def score_batch(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None, *, dma: Any,
                    chunk: int = DEFAULT_CHUNK) -> ScoreResult:
        """Score (N, D) int16 samples over AXI4-Stream through ``dma`` (a ``pynq.lib.dma.DMA``).

        Tags default to ``0..N-1``.  Samples go in DMA transfers of up to ``chunk`` samples; each
        transfer must return exactly as many results (else ``RuntimeError``: the stream lost or
        gained beats).
        """
        xs, ts = check_samples(self.params, x, tags)
        n = len(xs)
        parts: list[ScoreResult] = []
        chunk = max(1, min(chunk, n or 1))
        nb = sample_bytes(self.params)
        with allocate((chunk, nb), dtype=np.uint8, target=self.device) as inbuf, \
                allocate((chunk, RESULT_BYTES), dtype=np.uint8, target=self.device) as outbuf:
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                pack_samples(self.params, xs[start:start + m], ts[start:start + m], out=inbuf)
                dma.recvchannel.transfer(outbuf, nbytes=m * RESULT_BYTES)
                dma.sendchannel.transfer(inbuf, nbytes=m * nb)
                dma.sendchannel.wait()
                dma.recvchannel.wait()
                got = int(dma.recvchannel.transferred)
                if got != m * RESULT_BYTES:
                    raise RuntimeError(f"the DMA returned {got} bytes of results for {m} samples "
                                       f"({m * RESULT_BYTES} expected)")
                parts.append(unpack_results(np.asarray(outbuf), m, self.params))
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            return ScoreResult(z, z.copy(), z.copy(), z.copy())
        fields = ("score", "anomaly", "argmax", "tag")
        return ScoreResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


__all__ = ["DEFAULT_CHUNK", "MailpulseScorer", "MmioBus"]
