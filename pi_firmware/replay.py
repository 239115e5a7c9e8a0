"""``node replay``: feed a whole Postfix log through parse, join, featurise, score and a sink.

:func:`replay` reads the log as bytes in chunks (:func:`read_lines`: a line longer than
``max_line`` bytes is cut, so ``/dev/zero`` or a log without newlines cannot exhaust memory; any
byte sequence decodes, as UTF-8 with ``surrogateescape``), detects each line's format
(:mod:`mailpulse.pi_firmware.logformats`) and returns a :class:`ReplaySummary`, whose
:meth:`~ReplaySummary.line` is the stable summary the command prints::

    lines N events E sent S deferred D bounced B expired X unparsed U lines_per_s R deliverable V undeliverable W

and whose :meth:`~ReplaySummary.example_lines` show the first unparsed lines with the reason.  A
non-empty log of which no line is a log line the parser can read is a ``UserError`` (exit 2).

A core with route intervals (``<set>-r<R>``) is fed each delivery's route and latency exactly as the
live node feeds it (:func:`~.routefeed.route_feed` and :func:`~.pipeline.score_fns`, the node's own
code), so the replayed deliveries carry the core's ``below``/``above`` flags, and the summary line ends
with ``route_fed F route_tracked T route_untracked U``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailpulse.hdl.params import params_or_error
from mailpulse.hdl.reference import RouteConfig

from mailpulse.backends import open_scorer
from mailpulse.config.node import NodeConfig
from mailpulse.errors import UserError
from mailpulse.routes import RelayNames

from .pipeline import CountingSink, Pipeline, ScoringSetup, Sink, load_scoring_model, score_fns, untrained_model
from .postfix import PostfixParser
from .pubproc import InProcessPublisher, PublisherProcess, publisher
from .routefeed import route_feed

#: Longest line read, in bytes (a longer one is cut, the cut counted).
MAX_LINE = 64 * 1024
_CHUNK = 1 << 20


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
    deliverable: int = 0
    undeliverable: int = 0
    long_lines: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)
    #: rows left in the spool when publishing and the broker did not acknowledge them in time
    unflushed: int | None = None
    #: the route feed's counts (:meth:`~.routefeed.RouteFeed.status`) when the core has route intervals
    route_intervals: dict[str, int] | None = None

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The stable summary line (the outcome counts added after ``lines_per_s``; the route feed's counts
        at the end when the core has route intervals)."""
        ri = self.route_intervals
        routes = "" if ri is None else \
            f" route_fed {ri['fed']} route_tracked {ri['tracked']} route_untracked {ri['untracked']}"
        return (f"lines {self.lines} events {self.events} sent {self.sent} deferred {self.deferred} "
                f"bounced {self.bounced} expired {self.expired} unparsed {self.unparsed} "
                f"lines_per_s {self.lines_per_s:.0f} deliverable {self.deliverable} undeliverable {self.undeliverable}"
                f"{routes}")

    def example_lines(self) -> list[str]:
        """One line per unparsed example: ``unparsed: <reason>: <line>``."""
        return [f"unparsed: {reason}: {text}" for reason, text in self.examples]


def read_lines(f: BinaryIO, max_line: int = MAX_LINE, counts: list[int] | None = None) -> Iterator[list[str]]:
    """The lines of a binary stream, a chunk's worth at a time, without their newlines.

    A line longer than ``max_line`` bytes is cut there (``counts[0]`` counts the cuts); the rest
    of it up to its newline is dropped.
    """
    carry = b""
    skipping = False
    while True:
        data = f.read(_CHUNK)
        if not data:
            break
        data = carry + data
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > max_line:
                if not skipping and counts is not None:
                    counts[0] += 1
                if not skipping:
                    yield [carry[:max_line].decode("utf-8", "surrogateescape")]
                carry, skipping = b"", True
            continue
        carry = data[cut + 1:]
        lines = data[:cut].decode("utf-8", "surrogateescape").split("\n")
        if skipping:   # the first piece is the tail of a cut line
            lines, skipping = lines[1:], False
        if max(map(len, lines), default=0) > max_line:
            if counts is not None:
                counts[0] += sum(1 for x in lines if len(x) > max_line)
            lines = [x[:max_line] for x in lines]
        yield lines
    if carry and not skipping:
        if len(carry) > max_line and counts is not None:
            counts[0] += 1
        yield [carry[:max_line].decode("utf-8", "surrogateescape")]


def _open_log(p: Path) -> BinaryIO:
    if p.is_dir():
        raise UserError(f"the log {p} is a directory, not a file")
    try:
        return p.open("rb")
    except FileNotFoundError:
        raise UserError(f"the log {p} does not exist") from None
    except PermissionError:
        raise UserError(f"the log {p} cannot be read (permission denied)") from None
    except OSError as e:
        raise UserError(f"the log {p} cannot be read: {e.strerror or e}") from None


def replay(log: Path | str, sink: Sink, *, node: str = "replay", params: str = "small", model: str = "",
           batch_size: int = 4096, year: int | None = None, max_queue_ids: int = 100_000,
           backend: str = "model", max_line: int = MAX_LINE, site: str = "replay", routes: RouteConfig | None = None,
           relay_names: Mapping[str, str] | None = None) -> ReplaySummary:
    """Feed a Postfix log (any supported format, per line) through parse + join + featurise + score
    into ``sink``, as fast as possible.

    ``backend`` ``model`` scores with :func:`mailpulse.hdl.reference.score` in process (vectorised),
    or for a set with route intervals (``params`` ``<set>-r<R>``) with the register-level model that
    keeps the route bounds, as ``node run`` does; any other name opens that ``host_bridge`` backend.
    A core with route intervals is fed the deliveries' routes (``site/node|relay`` by ``relay_names``)
    with the route registers ``routes`` (``node replay`` passes ``mailpulse.routes.ROUTE_CONFIG``).
    Raises ``UserError`` for an unreadable log or model, a core with routes but no ``routes``, and for a
    non-empty log of which no line could be read.
    """
    p = Path(log)
    core = params_or_error(params)
    sm: ScoringSetup = load_scoring_model(model, core) if model else untrained_model(core)
    # the model backend of an -r set scores through the register-level model, which keeps the bounds
    scorer_obj = open_scorer(backend, core) if backend != "model" or core.r else None
    long_lines = [0]
    try:
        feed, problem = route_feed(scorer_obj, site, node, routes, RelayNames(relay_names))
        if problem is not None:
            raise UserError(f"node replay: {problem}")
        score, routed = score_fns(scorer_obj, sm, feed)
        parser = PostfixParser(node, year=year, max_queue_ids=max_queue_ids)
        pipe = Pipeline(score, sink, batch_size=batch_size, routed=routed)
        t0 = time.perf_counter()
        with _open_log(p) as f:
            for lines in read_lines(f, max_line, long_lines):
                pipe.submit_many(parser.feed(lines))
            pipe.flush()
    finally:
        if scorer_obj is not None:
            scorer_obj.close()
    dt = time.perf_counter() - t0
    c = parser.counters
    if c.lines and not (c.used or c.ignored):
        why = f" (the first: {c.examples[0][0]}: {c.examples[0][1][:120]!r})" if c.examples else ""
        raise UserError(f"no line of the log {p} could be read as a log line ({c.lines} lines: RFC 3164, RFC 5424, "
                        f"RFC 3339 or a journald export were expected){why}")
    st = c.status
    return ReplaySummary(c.lines, c.events, st.get("sent", 0), st.get("deferred", 0), st.get("bounced", 0),
                         st.get("expired", 0), c.unparsed, dt, pipe.stats.anomalies, st.get("deliverable", 0),
                         st.get("undeliverable", 0), long_lines[0], list(c.examples),
                         route_intervals=feed.status() if feed is not None else None)


def replay_node(cfg: NodeConfig | None, log: Path | str, *, publish: bool = True,
                flush_timeout: float = 300.0, routes: RouteConfig | None = None) -> ReplaySummary:
    """Replay ``log`` with the scorer, model, parser and relay-name settings of a node config (``None``:
    the defaults, only with ``publish=False``); ``routes``: the route registers of a core with route
    intervals (:func:`replay`).

    With ``publish`` the events go through the node's spool and MQTT sink (in a second process when
    a core is free, :func:`mailpulse.pi_firmware.pubproc.publisher`), and the rate counts until the
    broker has acknowledged every event (at most ``flush_timeout`` seconds; what is left stays in the
    spool, counted in :attr:`ReplaySummary.unflushed`).  Without it they are only counted.
    """
    if cfg is None:
        if publish:
            raise UserError("node replay needs --config (the broker to publish to), or --no-publish to count only")
        return replay(log, CountingSink())
    pub: InProcessPublisher | PublisherProcess | None = None
    sink: Sink = CountingSink()
    if publish:
        sink = pub = publisher(cfg)
    t0 = time.perf_counter()
    try:
        summary = replay(log, sink, node=cfg.node_id, params=cfg.scorer.params, model=cfg.scorer.model,
                         batch_size=cfg.scorer.batch_size, year=cfg.postfix.year or None,
                         max_queue_ids=cfg.postfix.max_queue_ids,
                         backend="model" if cfg.scorer.backend in ("model", "auto") else cfg.scorer.backend,
                         site=cfg.node.site, routes=routes, relay_names=cfg.relays.names)
        if pub is not None:
            flushed = pub.flush(flush_timeout)
            summary.seconds = time.perf_counter() - t0
            if not flushed:
                summary.unflushed = pub.left
    finally:
        if pub is not None:
            pub.close(5.0)
    return summary


__all__ = ["MAX_LINE", "ReplaySummary", "read_lines", "replay", "replay_node"]
