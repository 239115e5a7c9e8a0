"""Replaying a Postfix log through the node's pipeline (parse, join, featurise, score), as fast as
it goes: what ``mailpulse node replay`` runs, and what the benchmarks time.

:func:`replay` feeds one log into any :class:`~mailpulse.pi_firmware.pipeline.Sink`;
:func:`replay_node` does it with a node's config, publishing through the node's spool and MQTT
sink (or only counting), and waits until the broker has acknowledged every event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpulse.backends import open_scorer
from mailpulse.config.node import NodeConfig
from mailpulse.errors import UserError

from .node import make_sink
from .pipeline import CountingSink, Pipeline, ScoringSetup, Sink, bridge_scorer, load_scoring_model, untrained_model
from .postfix import PostfixParser

__all__ = ["ReplaySummary", "replay", "replay_node"]


@dataclass
class ReplaySummary:
    """What ``node replay`` reports (its last line)."""

    lines: int
    events: int
    sent: int
    deferred: int
    bounced: int
    expired: int
    unparsed: int
    seconds: float
    anomalies: int = 0
    #: Rows left in the spool when the broker did not acknowledge every event within the flush
    #: timeout (``None``: everything acknowledged, or nothing published).
    unflushed: int | None = None

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The stable summary line."""
        return (f"lines {self.lines} events {self.events} sent {self.sent} deferred {self.deferred} "
                f"bounced {self.bounced} expired {self.expired} unparsed {self.unparsed} "
                f"lines_per_s {self.lines_per_s:.0f}")


def replay(log: Path | str, sink: Sink, *, node: str = "replay", params: str = "small", model: str = "",
           batch_size: int = 4096, year: int | None = None, max_queue_ids: int = 100_000,
           backend: str = "model") -> ReplaySummary:
    """Feed a Postfix log through parse + join + featurise + score into ``sink``, as fast as possible.

    ``backend`` ``model`` scores with :func:`mailpulse.hdl.reference.score` in process (vectorised); any other
    name opens that backend (:func:`mailpulse.backends.open_scorer`).  Raises ``UserError`` for an
    unreadable log or model.
    """
    p = Path(log)
    if p.is_dir():
        raise UserError(f"the log {p} is a directory, not a file")
    sm: ScoringSetup = load_scoring_model(model, params) if model else untrained_model(params)
    scorer_obj = None
    if backend == "model":
        score = sm.scorer()
    else:
        scorer_obj = open_scorer(backend, sm.params)
        score = bridge_scorer(scorer_obj, sm)
    parser = PostfixParser(node, year=year, max_queue_ids=max_queue_ids)
    pipe = Pipeline(score, sink, batch_size=batch_size)
    t0 = time.perf_counter()
    try:
        with p.open("r", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            pipe.submit_many(parser.feed(f))
            pipe.flush()
    except FileNotFoundError:
        raise UserError(f"the log {p} does not exist") from None
    except PermissionError:
        raise UserError(f"the log {p} cannot be read (permission denied)") from None
    finally:
        if scorer_obj is not None:
            scorer_obj.close()
    dt = time.perf_counter() - t0
    c = parser.counters
    return ReplaySummary(c.lines, c.events, c.status.get("sent", 0), c.status.get("deferred", 0),
                         c.status.get("bounced", 0), c.status.get("expired", 0), c.unparsed, dt,
                         pipe.stats.anomalies)


def replay_node(cfg: NodeConfig, log: Path | str, *, publish: bool = True,
                flush_timeout: float = 300.0) -> ReplaySummary:
    """Replay ``log`` with the scorer, model and parser settings of a node config.

    With ``publish`` the events go through the node's spool and MQTT sink, and the rate counts until
    the broker has acknowledged every event (at most ``flush_timeout`` seconds; what is left stays in
    the spool, counted in :attr:`ReplaySummary.unflushed`).  Without it they are only counted.
    """
    spool = None
    mq: Any = None
    sink: Sink
    if publish:
        mq, spool = make_sink(cfg)
        mq.start()
        sink = mq
    else:
        sink = CountingSink()
    t0 = time.perf_counter()
    try:
        summary = replay(log, sink, node=cfg.node_id, params=cfg.scorer.params, model=cfg.scorer.model,
                         batch_size=cfg.scorer.batch_size, year=cfg.postfix.year or None,
                         max_queue_ids=cfg.postfix.max_queue_ids,
                         backend="model" if cfg.scorer.backend in ("model", "auto") else cfg.scorer.backend)
        if spool is not None:
            flushed = mq.flush(flush_timeout)
            summary.seconds = time.perf_counter() - t0
            if not flushed:
                summary.unflushed = len(spool)
    finally:
        if spool is not None:
            mq.close(5.0)
            spool.close()
    return summary
