"""The node's pipeline: observe -> parse -> featurise -> score -> sink, in batches.

Observers (the Postfix log follower, the Maildir watcher, the prober) produce :class:`Event`
objects and hand them to :meth:`Pipeline.submit`.  The pipeline buffers them; when ``batch_size``
events are waiting, or when the caller calls :meth:`Pipeline.flush` (the daemon does after each
read round, so a lone event is not held back), it

1. featurises the batch at once (:func:`mailpulse.features.encode_array`: one numpy pass),
2. scales the vectors with the model's input scaling and scores them in one call of the scorer
   (any backend behind ``host_bridge.Scorer``, or :func:`mailpulse.hdl.reference.score` directly), and
3. hands the scored events to the sink.

A **sink** is anything with ``emit_many(events)`` and ``close()`` (:class:`Sink`): the MQTT
publisher with its disk spool (``mailpulse.pi_firmware.mqtt.MqttSink``), or here :class:`CountingSink`
(``replay --no-publish``), :class:`ListSink` (tests) and :class:`JsonLinesSink` (stdout).

Scoring is bit-exact: a batch gives the integers :func:`mailpulse.hdl.reference.score` gives for the same
vectors, whatever the batch size (``tests/test_fw_pipeline.py`` checks it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig, ScoreResult
from mailpulse.hdl.reference import score as model_score

from mailpulse import features as F
from mailpulse.modelfile import load_model

from .events import Event, Scored
from .routefeed import RouteFeed

IntArray = npt.NDArray[np.int64]

#: Scores a batch: (N, D) int64 core inputs and N tags -> the core's results.
ScoreFn = Callable[[IntArray, IntArray], ScoreResult]
#: Scores a batch with its events' routes (a core with route intervals, :mod:`.routefeed`): the events,
#: their (N, D) schema vectors and N tags -> the core's results (with ``below``/``above``) and which
#: events carry the flags.
RoutedScoreFn = Callable[[Sequence[Event], IntArray, IntArray], tuple[ScoreResult, npt.NDArray[np.bool_]]]


class Sink(Protocol):
    """Where scored events go."""

    def emit_many(self, events: Sequence[Event]) -> None: ...

    def close(self) -> Any: ...


class CountingSink:
    """Counts events and anomalies, keeps nothing (``replay --no-publish``)."""

    def __init__(self) -> None:
        self.events = 0
        self.anomalies = 0

    def emit_many(self, events: Sequence[Event]) -> None:
        self.events += len(events)
        self.anomalies += sum(1 for e in events if e.scored is not None and e.scored.anomaly)

    def close(self) -> None:
        return None


class ListSink(CountingSink):
    """Keeps every event in memory (tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Event] = []

    def emit_many(self, events: Sequence[Event]) -> None:
        super().emit_many(events)
        self.items.extend(events)


class JsonLinesSink(CountingSink):
    """Writes one JSON payload per line (``node run --sink stdout``, debugging)."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__()
        self.out = out or sys.stdout

    def emit_many(self, events: Sequence[Event]) -> None:
        super().emit_many(events)
        for e in events:
            self.out.write(json.dumps(e.payload(), separators=(",", ":"), ensure_ascii=False) + "\n")
        self.out.flush()


# --------------------------------------------------------------------------------------------
# the scoring model
# --------------------------------------------------------------------------------------------


@dataclass
class ScoringSetup:
    """What the pipeline scores with: core parameters, registers and the input scaling.

    ``scale`` maps the schema's fixed-point vectors to the core's inputs (identity for models
    trained on node events; a model file's ``TrainedModel.scale``, transform included).  ``version`` is
    reported in status.
    """

    params: CoreParams
    config: CoreConfig
    scale: Callable[[IntArray], IntArray]
    version: str = "untrained"

    def scorer(self) -> ScoreFn:
        """Score function over the bit-exact reference model (the ``model`` backend)."""
        params, cfg, scale = self.params, self.config, self.scale

        def fn(x: IntArray, tags: IntArray) -> ScoreResult:
            return model_score(params, cfg, scale(x), tags)

        return fn


def _identity(x: IntArray) -> IntArray:
    return x


def untrained_model(params: CoreParams | str = "small") -> ScoringSetup:
    """A model for bring-up without a trained file: every projection reads one feature, bins
    span the fixed-point range, all tables are 0 and the threshold is the maximum, so every event
    scores 0 and none is flagged.  Replaced by the first real model file."""
    p = get_params(params) if isinstance(params, str) else params
    cfg = CoreConfig.zeros(p)
    for k in range(p.k):
        cfg.weights[k, k % p.d] = 1
    cfg.offsets[:] = p.in_min
    cfg.shifts[:] = p.in_bits - p.b_log2
    cfg.threshold = 0xFFFFFFFF
    return ScoringSetup(p, cfg, _identity, "untrained")


def load_scoring_model(path: Path | str, params: CoreParams | str | None = None) -> ScoringSetup:
    """Load a model file (``mailpulse.modelfile``) and check that it fits the node.

    Raises ``UserError`` when the file is bad, was trained on another feature schema, or does not
    fit the expected core parameters.
    """
    m = load_model(path)
    m.check_node_schema(f"model {path}")
    if params is not None:
        m.check_against(get_params(params) if isinstance(params, str) else params)
    cfg = m.core_config()
    version = str((m.provenance or {}).get("version") or Path(path).name)
    return ScoringSetup(m.params, cfg, m.scale, version)


# --------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class PipelineStats:
    """Counts since the pipeline was created."""

    events: int = 0
    batches: int = 0
    anomalies: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def featurise(events: Sequence[Event]) -> IntArray:
    """(N, D) fixed-point vectors of events, computed in one numpy pass (cached in ``e.x``)."""
    if not events:
        return np.zeros((0, F.D), dtype=np.int64)
    raw = np.array([e.raw_row() for e in events], dtype=np.float64)
    kinds = {e.KIND for e in events}
    if len(kinds) == 1:
        raw[:, ~F.KIND_MASK[next(iter(kinds))]] = np.nan
    else:
        mask = np.array([F.KIND_MASK[e.KIND] for e in events])
        raw[~mask] = np.nan
    return F.encode_array(raw)


class Pipeline:
    """Featurise, score and sink events in batches (see the module docstring).

    Parameters
    ----------
    score : callable
        ``score(x, tags) -> ScoreResult`` for (N, D) core inputs, e.g.
        :meth:`ScoringSetup.scorer` or a ``host_bridge`` scorer's ``score_batch`` composed with the
        model's input scaling (:func:`bridge_scorer`).
    sink : Sink
        Receives every scored event, in order.
    batch_size : int
        Events per scoring call.
    routed : callable, optional
        Scores instead of ``score`` when set: a core with route intervals fed each event's route
        (:func:`routed_scorer`); a delivery it flags carries ``below``/``above``.
    """

    def __init__(self, score: ScoreFn, sink: Sink, batch_size: int = 4096, routed: RoutedScoreFn | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.score = score
        self.routed = routed
        self.sink = sink
        self.batch_size = batch_size
        self.stats = PipelineStats()
        self._buf: list[Event] = []

    def submit(self, event: Event) -> None:
        """Queue one event (scored when the batch is full or at :meth:`flush`)."""
        self._buf.append(event)
        if len(self._buf) >= self.batch_size:
            self.flush()

    def submit_many(self, events: Iterable[Event]) -> None:
        """Queue events, flushing every full batch."""
        buf = self._buf
        n = self.batch_size
        for e in events:
            buf.append(e)
            if len(buf) >= n:
                self.flush()
                buf = self._buf

    def flush(self) -> None:
        """Featurise, score and sink the queued events."""
        batch = self._buf
        if not batch:
            return
        self._buf = []
        x = featurise(batch)
        tags = np.arange(len(batch), dtype=np.int64)
        flagged = None
        if self.routed is not None:
            r, flagged = self.routed(batch, x, tags)
        else:
            r = self.score(x, tags)
        if len(r) != len(batch):
            raise RuntimeError(f"the scorer returned {len(r)} results for {len(batch)} events")
        xs = x.tolist()
        # the vectors' JSON text, one C call for the batch (the payloads' "x"): "[[1,2],[3,4]]" -> "1,2", "3,4"
        xj = json.dumps(xs, separators=(",", ":"))[2:-2].split("],[")
        sc, an, am = r.score.tolist(), r.anomaly.tolist(), r.argmax.tolist()
        for i, e in enumerate(batch):
            e.x = xs[i]
            e.x_json = xj[i]
            e.scored = Scored(sc[i], bool(an[i]), am[i])
        if flagged is not None and r.below is not None and r.above is not None:
            below, above = r.below.tolist(), r.above.tolist()
            for i in np.flatnonzero(flagged).tolist():
                s = batch[i].scored
                assert s is not None
                s.below, s.above = bool(below[i]), bool(above[i])
        st = self.stats
        st.events += len(batch)
        st.batches += 1
        st.anomalies += int(r.anomaly.sum())
        first = batch[0].KIND
        if all(e.KIND is first for e in batch):   # the usual case: one source, one kind
            st.by_kind[first] = st.by_kind.get(first, 0) + len(batch)
        else:
            for e in batch:
                st.by_kind[e.KIND] = st.by_kind.get(e.KIND, 0) + 1
        self.sink.emit_many(batch)

    def close(self) -> None:
        """Flush what is queued and close the sink."""
        self.flush()
        self.sink.close()


def bridge_scorer(scorer: Any, model: ScoringSetup, *, load: bool = True) -> ScoreFn:
    """Score function over a ``host_bridge`` scorer (any backend) with ``model`` loaded into it
    (``load=False``: it already is)."""
    if load:
        scorer.load_model(model.config)
    scale = model.scale

    def fn(x: IntArray, tags: IntArray) -> ScoreResult:
        return scorer.score_batch(scale(x), tags)

    return fn


def score_fns(scorer: Any, model: ScoringSetup, feed: RouteFeed | None = None) -> tuple[ScoreFn, RoutedScoreFn | None]:
    """The :class:`Pipeline`'s score functions (``score``, ``routed``) with ``model`` loaded: into ``scorer``
    (a ``host_bridge`` scorer; None scores with the reference model in process), through ``feed`` when the
    scorer's core has routes (:func:`~.routefeed.route_feed`: the route registers are loaded too, the bounds
    carry on).  ``node run`` and ``node replay`` both score this way."""
    if feed is not None:
        return bridge_scorer(feed.scorer, model, load=False), routed_scorer(feed, model)
    return (bridge_scorer(scorer, model) if scorer is not None else model.scorer()), None


def routed_scorer(feed: RouteFeed, model: ScoringSetup) -> RoutedScoreFn:
    """Routed score function over a route feed's scorer with ``model`` loaded into it (with the
    feed's route registers; the bounds carry on, see :mod:`.routefeed`)."""
    feed.load(model.config)
    scale = model.scale

    def fn(batch: Sequence[Event], x: IntArray, tags: IntArray) -> tuple[ScoreResult, npt.NDArray[np.bool_]]:
        return feed.score(batch, scale(x), tags)

    return fn


__all__ = ["CountingSink", "JsonLinesSink", "ListSink", "Pipeline", "PipelineStats", "RoutedScoreFn", "ScoreFn",
           "ScoringSetup", "Sink", "bridge_scorer", "featurise", "load_scoring_model", "routed_scorer",
           "score_fns", "untrained_model"]
