"""The ``sim`` backend: the generated RTL itself, simulated under cocotb (Icarus or Verilator).

The simulated device comes from ``mailpulse.sim.device`` (the verification side): it starts the simulator
with the ``mailpulse_axi`` (or ``mailpulse_spi``) top and offers synchronous ``read``/``write``/
``stream`` (or ``spi_transfer``) calls to normal Python.  Register accesses are real AXI4-Lite
transactions, batches are real AXI4-Stream packets, so what this backend returns is what the
hardware computes.  Slow (thousands of samples per second at best): for development and CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import ScoreResult
from mailpulse.sim import device as simdev
from mailpulse.sim.tools import have_simulator

from mailpulse.errors import UserError

from ..bus import BurstMixin
from ..core import CoreClient
from ..scorer import RegisterScorer
from ..spi import FakeSpiDev, SpiRegisterBus


def default_simulator() -> str:
    """Verilator when it is installed (slow first build, fast runs), else Icarus."""
    return "verilator" if have_simulator("verilator") else "icarus"


def open_rtl(params: CoreParams, *, simulator: str | None = None, top: str = "axi") -> Any:
    """Start the RTL of ``top`` (``axi`` or ``spi``) for ``params`` under ``simulator``
    (default :func:`default_simulator`).

    Raises ``UserError`` when the simulator is missing.
    """
    simulator = simulator or default_simulator()
    if not have_simulator(simulator):
        raise UserError(f"the simulator {simulator!r} is not installed (see tools/setup.sh)")
    return simdev.open_device(params, top=top, simulator=simulator)


class _RtlBus(BurstMixin):
    """RegisterBus over the simulated AXI top (each access is one AXI4-Lite transaction)."""

    def __init__(self, dev: Any) -> None:
        self.dev = dev

    def read(self, address: int) -> int:
        return int(self.dev.read(address))

    def write(self, address: int, value: int) -> None:
        self.dev.write(address, value)

    def write_burst(self, address: int, values: Sequence[int]) -> None:
        self.dev.write_many([(address + 4 * i, int(v)) for i, v in enumerate(values)])


class SimScorer(RegisterScorer):
    """:class:`~mailpulse.host_bridge.scorer.Scorer` over the simulated RTL.

    Parameters
    ----------
    params : CoreParams
        Parameter set to elaborate and simulate.
    simulator : str
        ``icarus`` or ``verilator``.
    top : str
        ``axi`` (registers over AXI4-Lite, batches over AXI4-Stream) or ``spi`` (everything over
        the SPI bridge, batches by pushes: the iCE40 path, byte for byte).
    """

    backend = "sim"

    def __init__(self, params: CoreParams, *, simulator: str | None = None, top: str = "axi",
                 batch_size: int = 512, device: Any = None) -> None:
        super().__init__(params, batch_size=batch_size)
        if top not in ("axi", "spi"):
            raise UserError(f"the sim backend simulates the 'axi' or the 'spi' top, not {top!r}")
        self.top = top
        self.dev = device if device is not None else open_rtl(params, simulator=simulator, top=top)
        if top == "axi":
            self.client = CoreClient(_RtlBus(self.dev), params, poll_timeout=30.0)
        else:
            spi = FakeSpiDev(self.dev.spi_transfer)
            spi.max_speed_hz = 1_000_000
            self.client = CoreClient(SpiRegisterBus(spi), params, poll_timeout=30.0)

    def _score_chunk(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64]) -> ScoreResult:
        if self.top == "spi":
            return self._score_chunk_by_push(x, tags)
        r = self.dev.stream(x, tags)
        return ScoreResult(np.asarray(r.score, dtype=np.int64), np.asarray(r.anomaly, dtype=np.int64),
                           np.asarray(r.argmax, dtype=np.int64), np.asarray(r.tag, dtype=np.int64))

    def _score_chunk_events(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                            events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> ScoreResult:
        if self.top == "spi":
            return self._score_chunk_by_push(x, tags, events)
        r = self.dev.stream(x, tags, routes=events[0], latencies=events[1])
        return ScoreResult(np.asarray(r.score, dtype=np.int64), np.asarray(r.anomaly, dtype=np.int64),
                           np.asarray(r.argmax, dtype=np.int64), np.asarray(r.tag, dtype=np.int64),
                           below=r.below, above=r.above)

    def _close(self) -> None:
        self.dev.close()
