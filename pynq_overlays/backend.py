"""The ``pynq`` scorer backend: the scorer overlay on a Zynq through PYNQ (driver + AXI DMA).

On a PYNQ board this opens :class:`~mailpulse.pynq_overlays.overlay.MailpulseOverlay` (downloading the
bitstream unless told not to).  It lives with the overlay, above ``host_bridge`` (whose
:class:`~mailpulse.host_bridge.scorer.Scorer` interface it implements), so that ``host_bridge``
never imports the PYNQ side; :func:`mailpulse.backends.open_scorer` opens it by name.

With ``device=`` a :class:`mailpulse.pynq_overlays.sim_device.SimulatedDevice`, the same code path
runs without a board: that is how it is tested and benchmarked here.

Batches go by DMA, with their route events when the core has routes (R > 0): ``score_batch(x,
routes=, latencies=)`` sends each event in its sample beat and reads below/above from the result
beats; ``score_one``/``score_event`` go over AXI4-Lite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import ScoreResult
from mailpulse.host_bridge.core import CoreMismatchError
from mailpulse.host_bridge.scorer import RegisterScorer

from .overlay import MailpulseOverlay


class PynqScorer(RegisterScorer):
    """:class:`~mailpulse.host_bridge.scorer.Scorer` over the PYNQ overlay.

    Parameters
    ----------
    params : CoreParams
        Expected parameters (the overlay's ``.hwh`` must describe the same core).
    bitfile : str or Path, optional
        The overlay's ``.bit``; default: the installed ``pynq_overlays/mailpulse/mailpulse.bit``.
    download : bool
        Program the PL first (default ``True``).
    device : pynq.Device, optional
        The device to use (default: ``pynq.Device.active_device``).
    overlay : MailpulseOverlay, optional
        An overlay that is already open (then ``bitfile``/``download``/``device`` are ignored).
    """

    backend = "pynq"

    def __init__(self, params: CoreParams, *, bitfile: str | Path | None = None, download: bool = True,
                 device: Any = None, overlay: Any = None, batch_size: int = 4096) -> None:
        super().__init__(params, batch_size=batch_size)
        if overlay is None:
            overlay = MailpulseOverlay(str(bitfile) if bitfile else None, download=download, device=device)
        self.overlay = overlay
        self.driver = overlay.scorer
        self.dma = overlay.dma
        hw = self.driver.params
        if (hw.d, hw.k, hw.b, hw.r) != (params.d, params.k, params.b, params.r):
            raise CoreMismatchError(f"the overlay's scorer has D={hw.d} K={hw.k} B={hw.b} R={hw.r}, the host "
                                    f"expects set {params.name} (D={params.d} K={params.k} B={params.b} R={params.r})")
        self.client = self.driver.client

    def _score_chunk(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64]) -> ScoreResult:
        return self.driver.score_batch(x, tags, dma=self.dma, chunk=self.batch_size)

    def _score_chunk_events(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                            events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> ScoreResult:
        """Route events in the sample beats, by DMA (not one ``PUSH`` each)."""
        return self.driver.score_batch(x, tags, dma=self.dma, chunk=self.batch_size, routes=events[0],
                                       latencies=events[1])
