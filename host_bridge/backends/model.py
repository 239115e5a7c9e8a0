"""The ``model`` backend: the register-level reference model in process."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import EmulatedCore, ScoreResult

from ..bus import EmulatedBus
from ..core import CoreClient
from ..scorer import RegisterScorer


class ModelScorer(RegisterScorer):
    """:class:`~mailpulse.host_bridge.scorer.Scorer` over :class:`mailpulse.hdl.reference.EmulatedCore`.

    The control path goes through the same register protocol as the hardware backends (so a
    protocol bug shows up here too); batches go through the model's stream, vectorised.
    """

    backend = "model"

    def __init__(self, params: CoreParams, *, batch_size: int = 1 << 16) -> None:
        super().__init__(params, batch_size=batch_size)
        self.model = EmulatedCore(params)
        self.client = CoreClient(EmulatedBus(self.model), params)

    def _score_chunk(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64]) -> ScoreResult:
        return self.model.stream(x, tags)

    def _score_chunk_events(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                            events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> ScoreResult:
        return self.model.stream(x, tags, *events)
