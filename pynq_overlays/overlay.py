"""The mailpulse overlay: a thin facade over ``pynq.Overlay`` with named parts.

Parts (block-design instance names, from ``mailpulse.pynq_overlays.hwh``):

* :attr:`MailpulseOverlay.scorer` - ``mailpulse_0``, driven by :class:`mailpulse.pynq_overlays.driver.MailpulseScorer`;
* :attr:`MailpulseOverlay.dma` - ``axi_dma_0``, driven by ``pynq.lib.dma.DMA``.

Nothing happens in the constructor beyond what ``pynq.Overlay`` does (parse the ``.hwh``, and
download the bitstream if ``download=True``); talking to the core is explicit
(``ol.scorer.identify()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy.typing as npt
from mailpulse.hdl.reference import ScoreResult
from mailpulse.host_bridge.bitstream import read_xilinx_bit
from pynq import Overlay

from mailpulse.errors import UserError

from . import driver as _driver
from .hwh import DMA_INSTANCE, OVERLAY_DIR, SCORER_INSTANCE

#: The overlay's bitstream as installed (``mailpulse.bit`` + ``mailpulse.hwh``).
DEFAULT_BITFILE = OVERLAY_DIR / "mailpulse.bit"


def fill_fclk_rates(clock_dict: Any, ip_dict: Any, ps_name: str | None) -> int:
    """Fill in the FCLK rates pynqmetadata 0.2 misses on a Zynq-7000 design; returns how many.

    It looks the achieved rates up under UltraScale parameter names, so ``frequency`` is ``None``
    for every PL clock of a Zynq-7000 and ``Overlay.download()`` fails in ``Clocks.set_pl_clk``.
    The ``.hwh`` has them as ``PCW_ACT_FPGA<i>_PERIPHERAL_FREQMHZ`` of the PS7.
    """
    params = ip_dict.get(ps_name, {}).get("parameters", {}) if ps_name else {}
    filled = 0
    for i, clk in clock_dict.items():
        key = f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ"
        if clk.get("frequency") is None and key in params:
            clk["frequency"] = float(params[key])
            filled += 1
    return filled


class MailpulseOverlay(Overlay):
    """The mailpulse scorer overlay for a Zynq-7020 (PYNQ-Z2).

    Parameters
    ----------
    bitfile_name : str, optional
        Path of the ``.bit`` (the ``.hwh`` must sit next to it); default: the installed one.
    download : bool
        Program the PL (``False`` when it is already loaded, or with the simulated device).
    **kwargs
        Passed to ``pynq.Overlay`` (``device=``, ``ignore_version=``).
    """

    def __init__(self, bitfile_name: str | None = None, download: bool = True, **kwargs: Any) -> None:
        super().__init__(str(bitfile_name or DEFAULT_BITFILE), download=False, **kwargs)
        fill_fclk_rates(self.clock_dict, self.ip_dict, getattr(self.parser, "ps_name", None))
        if download:
            self.download()

    @property
    def scorer(self) -> _driver.MailpulseScorer:
        """The scorer IP's driver."""
        return getattr(self, SCORER_INSTANCE)

    @property
    def dma(self) -> Any:
        """The AXI DMA between memory and the scorer's streams (``pynq.lib.dma.DMA``)."""
        return getattr(self, DMA_INSTANCE)

    def score_batch(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None, *,
                    routes: npt.ArrayLike | None = None, latencies: npt.ArrayLike | None = None) -> ScoreResult:
        """Score a batch through the DMA, with its route events on a core with routes (see
        :meth:`MailpulseScorer.score_batch`)."""
        return self.scorer.score_batch(x, tags, dma=self.dma, routes=routes, latencies=latencies)


def load_overlay(path: Path | str, *, download: bool = True, device: Any = None) -> MailpulseOverlay:
    """Validate a ``.bit`` (its header, part 7z020 and the ``.hwh`` beside it) and open it as the
    overlay, downloading it unless ``download`` is false.  On a board (no ``device``) the project's
    placeholder bitstream is refused: it has no logic."""
    path = Path(path)
    bit = read_xilinx_bit(path, expect_part="7z020")
    if not path.with_suffix(".hwh").is_file():
        raise UserError(f"{path.with_suffix('.hwh')} is missing: PYNQ needs the .hwh next to the .bit")
    if bit.is_placeholder and device is None:
        raise UserError(f"{path} is the placeholder bitstream (no logic); build the real one with Vivado "
                        "(docs/pynq.md) or use --backend sim")
    return MailpulseOverlay(str(path.resolve()), download=download, device=device)
