"""The one scorer interface the firmware and the command line use, whatever the hardware.

:class:`Scorer` is what a caller sees: identify, load a model, set the threshold, score one
sample, score a batch, read counters, close; with a core that has route intervals (R > 0), score
samples with their route ids and latencies (flags below/above), read and seed the route bounds.
Backends (``mailpulse.host_bridge.backends``) differ only in how registers and sample streams
reach the core:

=========  ===========================================================================
``model``  :class:`mailpulse.hdl.reference.EmulatedCore` - the executable spec, in process
``sim``    the generated RTL under cocotb (Icarus or Verilator) via ``mailpulse.sim.device``
``pynq``   the PYNQ overlay on a Zynq: the bound driver, AXI4-Lite and an AXI DMA
``ice40``  an iCE40 on a Pi: the SPI register bridge over ``spidev``, ``gpiod`` for reset/done
=========  ===========================================================================

Every backend returns identical integers for identical inputs: that is the contract the tests
check (``tests/test_bridge_identity.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import CoreConfig, RouteConfig, ScoreResult

from mailpulse.errors import UserError
from mailpulse.modelfile import load_model

from .core import CoreClient, CoreIdentity, Counters
from .streamfmt import check_events, check_samples

#: An event's result (a core with routes): score, anomaly, argmax, tag, below, above.
EventResult = tuple[int, int, int, int, int, int]


def as_core_config(model: Any, params: CoreParams) -> CoreConfig:
    """A :class:`CoreConfig` from what a caller passes as "a model".

    Accepts a ``CoreConfig``, an object with ``core_config()`` (a loaded model file, see
    ``mailpulse.modelfile``), or a path to a model file.  Raises ``UserError`` if the file cannot
    be loaded; fit to the core is checked when the model is written.
    """
    if isinstance(model, CoreConfig):
        return model
    if hasattr(model, "core_config"):
        return model.core_config()
    if isinstance(model, str | Path):
        return load_model(model).core_config()
    raise UserError(f"a model is a CoreConfig, a loaded model file or a path, not {type(model).__name__}")


class Scorer(abc.ABC):
    """A scorer core behind some transport.

    Attributes
    ----------
    params : CoreParams
        The parameters the host expects the core to have (checked by :meth:`identify`).
    backend : str
        Name of the backend (``model``, ``sim``, ``pynq``, ``ice40``).
    batch_size : int
        Samples per transport transaction in :meth:`score_batch` (a DMA transfer, one stream
        call); larger batches amortise per-call overhead.
    """

    backend: str = "abstract"

    def __init__(self, params: CoreParams, *, batch_size: int = 4096) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.params = params
        self.batch_size = batch_size
        self._closed = False

    # -- the interface ------------------------------------------------------------------------
    @abc.abstractmethod
    def identify(self) -> CoreIdentity:
        """Read and check the core's ID, version and parameters."""

    @abc.abstractmethod
    def load_model(self, model: Any, *, commit: bool = True, routes: RouteConfig | None = None) -> None:
        """Write a model (tables, weights, offsets, shifts, threshold) to the shadow bank and commit;
        ``routes`` sets the route interval registers committed with it (a core with routes)."""

    @abc.abstractmethod
    def set_threshold(self, threshold: int) -> None:
        """Change only the active threshold."""

    @abc.abstractmethod
    def score_one(self, x: npt.ArrayLike, tag: int = 0) -> tuple[int, int, int, int]:
        """Score one sample over the register interface: (score, anomaly, argmax, tag)."""

    @abc.abstractmethod
    def _score_chunk(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64]) -> ScoreResult:
        """Score at most ``batch_size`` validated samples in one transport transaction."""

    @abc.abstractmethod
    def counters(self) -> Counters:
        """The core's sample and anomaly counters."""

    @abc.abstractmethod
    def score_event(self, x: npt.ArrayLike, tag: int, route: int, latency: int) -> EventResult:
        """Score one sample with its route id and Q8.8 log2 latency (a core with routes):
        (score, anomaly, argmax, tag, below, above)."""

    @abc.abstractmethod
    def route_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(lower, upper) bound accumulators of every route (units of ``2**-ADAPT_FRAC``)."""

    @abc.abstractmethod
    def seed_route(self, route: int, lower: int | None = None, upper: int | None = None) -> None:
        """Seed a route's lower and/or upper bound accumulator."""

    def _score_chunk_events(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                            events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> ScoreResult:
        """Score at most ``batch_size`` validated samples with their validated route events."""
        raise NotImplementedError(f"the {self.backend} backend does not score route events")

    def _close(self) -> None:
        """Backends release their transport here."""
        return None

    # -- shared behaviour -----------------------------------------------------------------
    def score_batch(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None,
                    progress: Callable[[int], None] | None = None, *, routes: npt.ArrayLike | None = None,
                    latencies: npt.ArrayLike | None = None) -> ScoreResult:
        """Score N samples (N, D) with tags (default ``0..N-1``), in chunks of ``batch_size``.

        With ``routes``/``latencies`` (a core with routes; route ids and Q8.8 log2 latencies in
        0..65535, an id >= R not tracked) each sample is also an event of the route intervals and
        the result carries ``below``/``above``.  Bad input raises ``ValueError`` with one sentence
        (:func:`~mailpulse.host_bridge.streamfmt.check_samples`, :func:`~mailpulse.host_bridge.streamfmt.check_events`).
        """
        self._check_open()
        xs, ts = check_samples(self.params, x, tags)
        with_events = routes is not None or latencies is not None
        rs, ls = check_events(self.params, len(xs), routes, latencies) if with_events else (None, None)
        parts = []
        for start in range(0, len(xs), self.batch_size):
            stop = min(start + self.batch_size, len(xs))
            if rs is not None and ls is not None:
                r = self._score_chunk_events(xs[start:stop], ts[start:stop], (rs[start:stop], ls[start:stop]))
            else:
                r = self._score_chunk(xs[start:stop], ts[start:stop])
            if len(r) != stop - start:
                raise RuntimeError(f"the {self.backend} backend returned {len(r)} results for {stop - start} samples")
            parts.append(r)
            if progress is not None:
                progress(stop)
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            return ScoreResult(z, z.copy(), z.copy(), z.copy(), below=z.copy() if with_events else None,
                               above=z.copy() if with_events else None)
        out = ScoreResult(*(np.concatenate([getattr(p, f) for p in parts]).astype(np.int64)
                            for f in ("score", "anomaly", "argmax", "tag")))
        if with_events and all(p.below is not None and p.above is not None for p in parts):
            out.below = np.concatenate([np.asarray(p.below) for p in parts]).astype(np.int64)
            out.above = np.concatenate([np.asarray(p.above) for p in parts]).astype(np.int64)
        return out

    def close(self) -> None:
        """Release the transport (idempotent)."""
        if not self._closed:
            self._closed = True
            self._close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.backend} scorer is closed")

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class RegisterScorer(Scorer):
    """A scorer whose control path is a :class:`CoreClient` (every backend here).

    Subclasses set ``self.client`` and implement :meth:`_score_chunk` with their stream path
    (or with pushes, see :meth:`_score_chunk_by_push`).
    """

    client: CoreClient

    def identify(self) -> CoreIdentity:
        self._check_open()
        return self.client.identify()

    def load_model(self, model: Any, *, commit: bool = True, routes: RouteConfig | None = None) -> None:
        self._check_open()
        cfg = as_core_config(model, self.params)
        if routes is not None:
            cfg = cfg.copy()
            cfg.routes = routes
        self.client.load_config(cfg, commit=commit)

    def set_threshold(self, threshold: int) -> None:
        self._check_open()
        self.client.set_threshold(threshold)

    def score_one(self, x: npt.ArrayLike, tag: int = 0) -> tuple[int, int, int, int]:
        self._check_open()
        return self.client.score_one(x, tag)

    def counters(self) -> Counters:
        self._check_open()
        return self.client.counters()

    def score_event(self, x: npt.ArrayLike, tag: int, route: int, latency: int) -> EventResult:
        self._check_open()
        s, a, k, t, below, above = self.client.score_event(x, tag, route, latency)
        return s, a, k, t, below, above

    def route_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        self._check_open()
        return self.client.route_bounds()

    def seed_route(self, route: int, lower: int | None = None, upper: int | None = None) -> None:
        self._check_open()
        self.client.seed_route(route, lower, upper)

    def _score_chunk_events(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                            events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> ScoreResult:
        """Through ``PUSH`` (every transport has it); a backend with a stream path overrides it."""
        return self._score_chunk_by_push(x, tags, events)

    def _score_chunk_by_push(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                             events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None
                             ) -> ScoreResult:
        arr = self.client.push_many(x, tags, events)
        out = ScoreResult(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy())
        if events is not None:
            out.below, out.above = arr[:, 4].copy(), arr[:, 5].copy()
        return out
