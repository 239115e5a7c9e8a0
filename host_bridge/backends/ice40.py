"""The ``ice40`` backend: the scorer on an iCE40 behind the SPI register bridge, from a Pi.

Registers travel as SPI transactions (``mailpulse.host_bridge.spi``); the SPI top has no sample stream,
so a batch is scored sample by sample through ``FEATURE``/``TAG``/``PUSH``/``RESULT_*`` (three
transactions, 62 bytes for D=8, once :meth:`Ice40Scorer.identify` has established that results
settle before the next read frame; four with a ``STATUS`` poll otherwise).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import ScoreResult

from mailpulse.errors import UserError

from ..core import CoreClient, CoreIdentity
from ..scorer import RegisterScorer
from ..spi import CMD_READ, CMD_WRITE, MIN_CLK_BEFORE_READ_DATA, SpiDevLike, SpiRegisterBus

#: Default SCK: well under the bridge's limit of clk/4 for the 48 MHz UP5K build.
DEFAULT_SPEED_HZ = 8_000_000


def open_spidev(bus: int, device: int, speed_hz: int) -> SpiDevLike:
    """Open ``/dev/spidev<bus>.<device>`` in mode 0, or raise ``UserError`` saying what is missing."""
    try:
        import spidev
    except ImportError:
        raise UserError("the ice40 backend needs the 'spidev' package (pip install spidev) on the Pi") from None
    spi = spidev.SpiDev()
    try:
        spi.open(bus, device)
    except OSError as e:
        raise UserError(f"cannot open /dev/spidev{bus}.{device} ({e.strerror}); enable SPI (dtparam=spi=on)") from None
    spi.mode = 0
    spi.max_speed_hz = speed_hz
    return spi


class Ice40Scorer(RegisterScorer):
    """:class:`~mailpulse.host_bridge.scorer.Scorer` over SPI.

    Parameters
    ----------
    params : CoreParams
        Expected parameters of the core (``small`` for a UP5K, ``full`` for an HX8K, ``zynq`` for an
        ECP5 board; the HX8K and ECP5 bitstreams carry 16 route intervals, ``full-r16`` /
        ``zynq-r16`` use them, with ``full`` / ``zynq`` they stay off).
    spi : SpiDevLike, optional
        An open spidev-compatible object; if absent, ``/dev/spidev<spi_bus>.<spi_device>`` is opened.
    spi_bus, spi_device, speed_hz : int
        Where and how fast to talk when ``spi`` is not given.
    """

    backend = "ice40"

    def __init__(self, params: CoreParams, *, spi: SpiDevLike | None = None, spi_bus: int = 0,
                 spi_device: int = 0, speed_hz: int = DEFAULT_SPEED_HZ, batch_size: int = 256) -> None:
        super().__init__(params, batch_size=batch_size)
        self._own_spi = spi is None
        self.spi = spi if spi is not None else open_spidev(spi_bus, spi_device, speed_hz)
        self.bus = SpiRegisterBus(self.spi)
        self.client = CoreClient(self.bus, params, routes_optional=True)   # registers only: see CoreClient

    def identify(self) -> CoreIdentity:
        """Identify the core; also decides whether pushes may skip the STATUS poll.

        A read frame delivers data no earlier than 32 SCK cycles (command, address, dummy byte)
        after ``cs_n`` falls, i.e. at least :data:`~mailpulse.host_bridge.spi.MIN_CLK_BEFORE_READ_DATA`
        core clocks at SCK <= clk/4: a core whose ``LATENCY`` is below that has its result in
        ``RESULT_*`` before the first data bit of the next read, so the poll is skipped.
        """
        ident = super().identify()
        self.client.results_settle = ident.latency + 8 < MIN_CLK_BEFORE_READ_DATA
        return ident

    def _score_chunk(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64]) -> ScoreResult:
        """Three pre-built frames per sample (all frames of the chunk are built with numpy first).

        Falls back to :meth:`CoreClient.push_many` (which polls ``STATUS``) when results are not
        known to settle before the next frame; a sample whose ``RESULT_TAG`` does not show its
        tag, or whose tag repeats the previous one, is re-read after a ``STATUS`` poll.
        """
        c = self.client
        if not c.results_settle:
            return self._score_chunk_by_push(x, tags)
        n, d = len(x), self.params.d
        r = c.regmap
        fa, ta, ra = r["FEATURE"].address(0), r["TAG"].address(), r["RESULT_SCORE"].address()
        feat = np.empty((n, 3 + 4 * d), dtype=np.uint8)
        feat[:, :3] = (CMD_WRITE, fa >> 8, fa & 0xFF)
        feat[:, 3:] = (x & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(n, 4 * d)
        push = np.empty((n, 11), dtype=np.uint8)
        push[:, :3] = (CMD_WRITE, ta >> 8, ta & 0xFF)
        push[:, 3:7] = tags.astype(">u4").view(np.uint8).reshape(n, 4)
        push[:, 7:] = (0, 0, 0, 1)                        # PUSH follows TAG (checked in CoreClient)
        read = [CMD_READ, ra >> 8, ra & 0xFF, 0] + [0] * 12
        feat_l, push_l, tag_l = feat.tolist(), push.tolist(), tags.tolist()
        out = np.empty((n, 4), dtype=np.int64)
        xfer = self.bus.xfer
        last = c._last_tag
        for i in range(n):
            xfer(feat_l[i])
            xfer(push_l[i])
            score, rtag, info = struct.unpack(">3I", bytes(xfer(read)[4:16]))
            if rtag != tag_l[i] or tag_l[i] == last:
                c._wait_status("a pushed sample", "RESULT_VALID", busy="PUSH_PENDING")
                score, rtag, info = self.bus.read_burst(ra, 3)
            last = tag_l[i]
            out[i] = (score, (info >> c._anomaly_lsb) & 1, (info >> c._argmax_lsb) & c._argmax_mask, rtag)
        c._last_tag = last
        return ScoreResult(out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy(), out[:, 3].copy())

    def _close(self) -> None:
        if self._own_spi:
            self.spi.close()
