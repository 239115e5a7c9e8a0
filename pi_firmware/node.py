"""The node daemon: observe (log follower, Maildir watcher, probes) -> score -> spool -> MQTT.

:class:`Node` wires the parts together and runs them in threads:

* **sources** - objects with ``run(emit, stop)`` that call ``emit(events)`` with lists of events
  until ``stop`` is set (the Postfix log follower and the Maildir watcher of the pipeline);
* **prober** - every ``[probe] interval_s``, one probe on each route this node owns, each route
  scheduled by its own thread (``prober.<route>``) and each probe waiting in its own, so a lost
  probe delays neither its route's next probes nor another route's (the fleet's
  rendezvous assignment is recomputed every second, so routes of a dead node are picked up within
  one heartbeat timeout);
* **heartbeat** - the retained status every ``[fleet] heartbeat_s`` (spool depth and bound, model
  version, fleet view, last probe per route);
* **MQTT subscriptions** - the site's nodes' status (:class:`~mailpulse.pi_firmware.fleet.Fleet`) and the
  site's model (:class:`~mailpulse.pi_firmware.fleet.ModelUpdater`).

Every batch of events is scored (when a scorer is configured) and written to the spool in one
transaction before ``emit`` returns, so a source may save its position right after.

No single input stops observing: each source isolates each message or line (one that fails is
recorded in the quarantine, :mod:`mailpulse.pi_firmware.quarantine`, and skipped), and every thread
runs under a supervisor: a source (or the prober, or the heartbeat) that raises is restarted after
a back-off (1 s doubling to :data:`RESTART_MAX_S`), its restarts and last error reported in the
status (``sources``, ``errors``) next to the quarantine counts (``quarantine``).  SIGTERM (and
SIGINT) stop the sources, flush the spool to the broker for up to ``flush_timeout_s``, publish the
``offline`` status and exit 0; whatever the broker did not acknowledge stays in the spool for the
next start.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import RouteConfig
from mailpulse.host_bridge.scorer import Scorer

from mailpulse import __version__
from mailpulse import topics as T
from mailpulse.backends import open_scorer
from mailpulse.config.node import NodeConfig
from mailpulse.errors import UserError
from mailpulse.routes import RelayNames

from .events import Event
from .fleet import Fleet, ModelUpdater
from .follow import Follower, Position
from .journal import JournalSource
from .maildir import MaildirWatcher
from .mqtt import MqttSink
from .pipeline import (
    Pipeline,
    RoutedScoreFn,
    ScoreFn,
    ScoringSetup,
    load_scoring_model,
    score_fns,
    untrained_model,
)
from .postfix import PostfixParser
from .postqueue import queue_command, read_queue
from .probe import ProbeError, ProbeEvent, Prober
from .quarantine import Quarantine, describe
from .routefeed import RouteFeed, route_feed
from .spool import Spool

__all__ = ["RESTART_MAX_S", "Node", "PostfixLogSource", "Source", "build_node", "make_sink", "run_node"]

log = logging.getLogger(__name__)

Emit = Callable[[Sequence[Event]], None]

#: Longest wait before a failed thread is restarted (seconds).
RESTART_MAX_S = 60.0
#: Most probes one route may have waiting at once (see :meth:`Node.probes_in_flight`).
PROBES_IN_FLIGHT_MAX = 8


class Source(Protocol):
    """Something that observes mail and emits events until ``stop`` is set.

    A source has a ``name`` (its key in the status and the quarantine), a ``quarantine`` the
    node replaces with its own, and ``counters()`` for the status.
    """

    name: str
    quarantine: Quarantine

    def run(self, emit: Emit, stop: threading.Event) -> None: ...

    def counters(self) -> dict[str, int]: ...


def _limit_arenas(n: int = 2) -> None:
    """Cap glibc's malloc arenas (one per thread by default: fragmentation multiplies RSS on a
    small board).  No-op where ``mallopt`` is absent."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, n)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _trim_heap() -> None:
    """Give freed heap pages back to the OS after a probe (its 4K message and image buffers are
    large and short-lived; glibc keeps them otherwise).  No-op where ``malloc_trim`` is absent."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PostfixLogSource:
    """Follows a Postfix log (rotation, truncation, restarts) and emits delivery events.

    The follower's position is saved only after the events of the lines read so far are in the
    spool, so a crash re-reads at most the lines whose events were not yet durable (and their
    deterministic ids make the repeats harmless).  The parser's event-id occurrence counters are
    saved with the position (one atomic write), so re-read lines get the ids they had.  The
    queue-id join (qmgr ``from=``/``size=``, cleanup ``message-id=`` of messages still in the
    queue) is saved next to it (``<state_file>.join``) at most every ``join_save_s`` seconds and
    when the source stops, so delivery lines read after a restart are still joined.  A line whose
    handling raises is recorded in the quarantine and skipped (the parser isolates it).
    """

    name = "postfix"

    def __init__(self, path: Path | str, node: str, state_file: Path | str | None = None, from_start: bool = False,
                 poll_s: float = 0.2, max_lines: int = 5000, join_save_s: float = 5.0, year: int | None = None,
                 max_queue_ids: int = 100_000, quarantine: Quarantine | None = None) -> None:
        self.path, self.node, self.state_file = Path(path), node, state_file
        self.from_start, self.poll_s, self.max_lines = from_start, poll_s, max_lines
        self.join_save_s, self.year, self.max_queue_ids = join_save_s, year, max_queue_ids
        self.quarantine = quarantine or Quarantine()
        self.lines = 0
        self.parser: PostfixParser | None = None

    @property
    def join_file(self) -> Path | None:
        return None if self.state_file is None else Path(str(self.state_file) + ".join")

    def counters(self) -> dict[str, int]:
        c = self.parser.counters if self.parser is not None else None
        return {"lines": self.lines, "events": c.events if c else 0, "unparsed": c.unparsed if c else 0,
                "errors": c.errors if c else 0}

    def _on_error(self, line: str, reason: str) -> None:
        self.quarantine.record(self.name, str(self.path), reason, line)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        follower = Follower(self.path, self.state_file, from_start=self.from_start)
        parser = PostfixParser(self.node, year=self.year, max_queue_ids=self.max_queue_ids, on_error=self._on_error)
        if self.parser is not None:   # a restart: keep counting where the last run stopped
            parser.counters = self.parser.counters
        self.parser = parser
        join = self.join_file
        if join is not None:
            parser.load_state(join)
            pos = Position.load(Path(str(self.state_file)))
            if pos is not None and "occurrences" in pos.extra:   # newer than the join file's copy
                parser.restore_occurrences(pos.extra["occurrences"])
        saved = time.monotonic()
        try:
            while not stop.is_set():
                batch: list[str] = []
                for line in follower.read_lines():
                    batch.append(line)
                    if len(batch) >= self.max_lines:
                        break
                if not batch:
                    stop.wait(self.poll_s)
                    continue
                self.lines += len(batch)
                emit(list(parser.feed(batch)))
                follower.commit({"occurrences": parser.occurrence_state()})
                if join is not None and time.monotonic() - saved >= self.join_save_s:
                    parser.save_state(join)
                    saved = time.monotonic()
        finally:
            if join is not None:
                parser.save_state(join)
            follower.close()


def make_sink(cfg: NodeConfig, status: Callable[[], dict[str, Any]] | None = None) -> tuple[MqttSink, Spool]:
    """Spool and MQTT sink of a node config (not started)."""
    sp = cfg.spool
    spool = Spool(sp.path, max_rows=sp.max_rows, synchronous=sp.synchronous)
    sink = MqttSink(cfg.node.site, cfg.node.id, cfg.mqtt, spool, status=status,
                    sw_version=__version__)
    return sink, spool


class Node:
    """One node daemon (see the module docstring).

    Parameters
    ----------
    cfg : NodeConfig
        The node's config.
    model : ScoringSetup, optional
        The model to start with (default: the last model received, kept in ``state_dir``, else
        the untrained bring-up model that flags nothing).
    scorer : Scorer, optional
        A ``host_bridge`` scorer (any backend) the model is loaded into; None scores with the
        bit-exact reference model in-process.
    sources : sequence of Source
        Passive observers (log follower, Maildir watcher).
    batch_size : int
        Events per scoring call.
    routes : RouteConfig, optional
        The route interval registers committed with each model when the scorer's core has route
        intervals (R > 0, read from the core): then every delivery is fed to the core with its route
        and latency and carries the core's flags (:mod:`.routefeed`).  The command line passes the
        ``mailpulse.routes.ROUTE_CONFIG``.  Ignored for a core without routes.
    """

    def __init__(self, cfg: NodeConfig, model: ScoringSetup | None = None, scorer: Scorer | None = None,
                 sources: Sequence[Source] = (), flush_timeout_s: float = 10.0, batch_size: int = 4096,
                 routes: RouteConfig | None = None) -> None:
        self.cfg = cfg
        self.site, self.node_id = cfg.node.site, cfg.node.id
        self.scorer = scorer
        self.sources = list(sources)
        self.flush_timeout_s = flush_timeout_s
        self.stop_event = threading.Event()
        self.score_lock = threading.Lock()
        self.fleet = Fleet(self.site, self.node_id, cfg.fleet.heartbeat_s, cfg.fleet.timeout_s)
        self.errors: dict[str, str] = {}
        state = cfg.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.state_dir = state
        self.quarantine = Quarantine(state / "quarantine.jsonl")
        for src in self.sources:
            src.quarantine = self.quarantine
        self.restarts: dict[str, int] = {}
        #: the route table and bounds a clean stop leaves for the next start (:mod:`.routefeed`)
        self.routes_file = state / "route-intervals.json"
        self.model = ModelUpdater(self._install_model)
        saved = state / "model.json"
        if model is None and saved.exists():
            try:
                model = load_scoring_model(saved)
                self.model.version = self._version_of(model, saved.read_bytes())
            except Exception as e:
                self.errors["model.saved"] = f"the saved model {saved} is not usable: {describe(e)}"
                log.error("%s", self.errors["model.saved"])
                model = None
        # the bring-up model fits the core it is loaded into (a scorer's set, e.g. full-r16)
        self.scoring = model or untrained_model(scorer.params if scorer is not None else cfg.scorer.params)
        if self.model.version is None:
            self.model.version = self.scoring.version
        self.prober = Prober(self.node_id, cfg.probe, state_file=state / "probe-state.json", cache_dir=state,
                             quarantine=self.quarantine)
        self.last_probe: dict[str, dict[str, Any]] = {}
        self.postfix_queue: dict[str, Any] | None = None    # the last `postqueue -j` summary
        self.routes: RouteFeed | None
        self.routes, problem = route_feed(scorer, self.site, self.node_id, routes, RelayNames(cfg.relays.names))
        if problem is not None:
            self.errors["routes"] = problem
            log.error("%s", problem)
        if self.routes is not None:
            self.routes.restore(self.routes_file)
        self.sink, self.spool = make_sink(cfg, status=self._status)
        score, routed = self._score_fns(self.scoring)
        self.pipeline = Pipeline(score, self.sink, batch_size=batch_size, routed=routed)
        self.sink.subscribe(self.fleet.topic, self.fleet.on_message)
        self.sink.subscribe(T.model_topic(self.site), self.model.on_message)
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- data path ----------------------------------------------------------------------------

    def emit(self, events: Sequence[Event]) -> None:
        """Featurise, score and spool a batch (durable when this returns)."""
        if not events:
            return
        with self.score_lock:
            if self._closed:
                log.warning("%d events after the node stopped were not spooled", len(events))
                return
            self.pipeline.submit_many(events)
            self.pipeline.flush()

    def _score_fns(self, model: ScoringSetup) -> tuple[ScoreFn, RoutedScoreFn | None]:
        """The pipeline's score functions with ``model`` loaded (shadow bank + commit; with routes the
        route registers too, the bounds carry on)."""
        return score_fns(self.scorer, model, self.routes)

    @staticmethod
    def _version_of(model: ScoringSetup, data: bytes) -> str:
        if model.version and not model.version.startswith("model.json"):
            return model.version
        return "sha256:" + hashlib.sha256(data).hexdigest()[:12]

    def _install_model(self, data: bytes) -> str:
        """Validate a model file from the model topic, load it, swap it in, keep it for restarts."""
        tmp = self.state_dir / "model.json.new"
        tmp.write_bytes(data)
        try:
            model = load_scoring_model(tmp)
            with self.score_lock:
                # loads the scorer's shadow bank + commit (a core's route bounds carry on: .routefeed)
                self.pipeline.score, self.pipeline.routed = self._score_fns(model)
                self.scoring = model
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.state_dir / "model.json")
        return self._version_of(model, data)

    # -- status ---------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        routes = [r.name for r in self.cfg.probe.routes]
        last = max(self.last_probe.values(), key=lambda p: p.get("ts") or 0.0, default=None)
        return {
            "heartbeat_s": self.cfg.fleet.heartbeat_s,
            **self.model.status(),
            "fleet": self.fleet.view(),
            "routes": self.fleet.my_routes(routes) if self.cfg.probe.enabled else [],
            "probe": last,
            "probes": dict(self.last_probe),
            "probe_counts": dict(self.prober.counts),
            "errors": dict(self.errors),
            **({"postfix_queue": self.postfix_queue} if self.postfix_queue is not None else {}),
            "quarantine": self.quarantine.status(),
            "sources": {src.name: {**src.counters(), "restarts": self.restarts.get(src.name, 0)}
                        for src in self.sources},
            "restarts": dict(self.restarts),
            **({"route_intervals": self.routes.status()} if self.routes is not None else {}),
        }

    # -- threads ------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.wait(self.cfg.fleet.heartbeat_s):
            if self.sink.stats.connected:
                self.sink.publish_status()

    def read_postfix_queue(self) -> dict[str, Any]:
        """Read the Postfix queue now (``postqueue -j``); the next status carries it."""
        pf = self.cfg.postfix
        before = (self.postfix_queue or {}).get("error")
        self.postfix_queue = read_queue(queue_command(pf.config_dir), pf.queue_timeout_s)
        err = self.postfix_queue["error"]
        if err and err != before:                  # logged when it starts or changes, not every reading
            log.warning("%s", err)
        elif before and not err:
            log.info("the Postfix queue is readable again")
        return self.postfix_queue

    def _queue_loop(self) -> None:
        while not self.stop_event.is_set():
            self.read_postfix_queue()
            self.stop_event.wait(self.cfg.postfix.queue_poll_s)

    def probes_in_flight(self, name: str) -> int:
        """How many probes route ``name`` may have waiting at once: enough that a probe starts every
        ``interval_s`` even while earlier ones wait out ``timeout_s`` (at most :data:`PROBES_IN_FLIGHT_MAX`)."""
        r = self.prober.route(name)
        return min(PROBES_IN_FLIGHT_MAX, math.ceil(r.timeout_s / self.cfg.probe.interval_s) + 1)

    def _probe_loop(self, name: str) -> None:
        """Start a probe on route ``name`` every ``interval_s`` while this node owns it, each in its
        own thread: a lost probe's wait (``timeout_s``) delays neither this route's next probes nor
        another route's (at most :meth:`probes_in_flight` at once)."""
        routes = [r.name for r in self.cfg.probe.routes]
        limit = self.probes_in_flight(name)
        due = 0.0
        running: list[threading.Thread] = []
        try:
            while not self.stop_event.is_set():
                running = [t for t in running if t.is_alive()]
                now = time.monotonic()
                ready = len(running) < limit and name in self.fleet.my_routes(routes)
                if ready and now >= due:
                    due = now + self.cfg.probe.interval_s
                    t = threading.Thread(target=self.probe_once, args=(name,), name=f"probe.{name}", daemon=True)
                    t.start()
                    running.append(t)
                pause = min(1.0, self.cfg.fleet.heartbeat_s / 2)
                self.stop_event.wait(min(pause, due - time.monotonic()) if ready else pause)
        finally:
            for t in running:
                t.join(timeout=5)   # a probe in flight gives up at once when the node stops

    def probe_once(self, route: str) -> list[ProbeEvent]:
        """Run one probe on ``route`` and emit its events (a failure is reported, never raised)."""
        try:
            evs = self.prober.run(route, stop=self.stop_event)
        except ProbeError as err:
            self.errors[f"probe.{route}"] = str(err)
            log.warning("%s", err)
            return []
        except Exception as err:  # a bug or a hostile reply: this probe fails, the next one runs
            self.errors[f"probe.{route}"] = f"the probe failed: {describe(err)}"
            log.exception("probe on %s failed", route)
            return []
        self.errors.pop(f"probe.{route}", None)
        for e in evs:
            if e.route == route and e.outcome != "late":
                self.last_probe[route] = e.summary()
        self.emit(list(evs))
        if self.sink.stats.connected:
            self.sink.publish_status()
        _trim_heap()
        return evs

    def _supervise(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` until the node stops; restart it after a back-off whenever it raises (or
        returns early), counting the restarts and keeping the last error in the status."""
        delay = 1.0
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                fn()
                if self.stop_event.is_set():
                    return
                self.errors[name] = "it stopped by itself"
            except Exception as e:
                self.errors[name] = describe(e)
                log.exception("%s failed; restarting it", name)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if time.monotonic() - started > 10 * RESTART_MAX_S:
                delay = 1.0        # it ran for a good while: a fresh failure, not a crash loop
            if self.stop_event.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_S)

    def start(self) -> None:
        self.sink.start()
        targets: list[tuple[str, Callable[[], None]]] = [("heartbeat", self._heartbeat_loop)]
        if self.cfg.probe.enabled and self.cfg.probe.routes:
            targets += [(f"prober.{r.name}", functools.partial(self._probe_loop, r.name))
                        for r in self.cfg.probe.routes]
        pf = self.cfg.postfix
        if pf.queue_poll_s > 0 and (pf.log or pf.config_dir):
            targets.append(("postqueue", self._queue_loop))
        for src in self.sources:
            targets.append((src.name, functools.partial(src.run, self.emit, self.stop_event)))
        for name, fn in targets:
            t = threading.Thread(target=self._supervise, args=(name, fn), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> bool:
        """Stop observing, flush, say ``offline``, close; True when the spool was fully flushed."""
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=5)   # a probe in flight gives up at once and reports itself lost
        flushed = self.sink.close(self.flush_timeout_s)
        with self.score_lock:
            if self.routes is not None and not self._closed:
                try:
                    self.routes.save(self.routes_file)
                except Exception as e:   # the next start reseeds instead
                    log.error("the route intervals were not saved (%s): the next start seeds them afresh",
                              describe(e))
            self._closed = True
            self.spool.close()
        return flushed

    def run(self) -> int:
        """Start, run until :attr:`stop_event` is set (SIGTERM/SIGINT in the main thread), stop."""
        _limit_arenas()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        self.stop_event.wait()
        flushed = self.stop()
        log.info("node %s/%s stopped (%s)", self.site, self.node_id,
                 "spool flushed" if flushed else f"{len(self.spool)} rows left in the spool")
        return 0


def run_node(cfg: NodeConfig, model: ScoringSetup | None = None, scorer: Scorer | None = None,
             sources: Sequence[Source] = (), routes: RouteConfig | None = None) -> int:
    """Run the daemon until SIGTERM; returns the exit status (0 on a clean stop)."""
    return Node(cfg, model=model, scorer=scorer, sources=sources, routes=routes).run()


def build_node(cfg: NodeConfig, model_path: str | None = None, routes: RouteConfig | None = None) -> Node:
    """The :class:`Node` of a loaded config (:func:`mailpulse.config.node.load_config`):
    its sources, scorer backend and model (``model_path``, else the config's, else untrained).

    ``routes``: the route interval registers for a core with routes (``<set>-r<R>``; ``mailpulse.routes``
    ``ROUTE_CONFIG``).  The ``model`` backend of such a set scores through the register-level model
    (:class:`~mailpulse.host_bridge.backends.model.ModelScorer`), which keeps the route bounds."""
    sources: list[Source] = []
    if cfg.postfix.log:
        sources.append(PostfixLogSource(cfg.postfix.log, cfg.node_id, state_file=cfg.postfix.state_file,
                                        from_start=cfg.postfix.from_start, poll_s=cfg.postfix.poll_s,
                                        year=cfg.postfix.year or None, max_queue_ids=cfg.postfix.max_queue_ids))
    if cfg.maildir.path:
        sources.append(MaildirWatcher(cfg.maildir.path, cfg.node_id, cfg.maildir.state_file, limits=cfg.mime,
                                      max_seen=cfg.maildir.max_seen, poll_s=cfg.maildir.poll_s))
    if cfg.journal.enabled:
        sources.append(JournalSource(cfg.journal, cfg.node_id, year=cfg.postfix.year or None,
                                     max_queue_ids=cfg.postfix.max_queue_ids))
    model_file = model_path or cfg.scorer.model
    model = load_scoring_model(model_file, cfg.scorer.params) if model_file else None
    scorer = None
    if cfg.scorer.backend != "model" or get_params(cfg.scorer.params).r:
        scorer = open_scorer(cfg.scorer.backend, cfg.scorer.params)
    try:
        return Node(cfg, model=model, scorer=scorer, sources=sources, batch_size=cfg.scorer.batch_size,
                    routes=routes)
    except OSError as e:
        raise UserError(f"the node cannot start: {e}") from None
