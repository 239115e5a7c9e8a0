"""The collector process: ingest -> archive -> correlate -> dashboard, metrics and alerts.

:class:`Collector` wires the parts together; :func:`run_collector` runs one until ``stop`` is set.

Threads: paho's network thread queues messages; the ingest worker validates them, archives them
(fsync), quarantines what fails, acks them and calls :meth:`Collector.on_batch`, which feeds the
correlator, the metrics and the dashboard (an anomaly reaches the SSE clients right there);
:meth:`Collector.tick` (the main loop, every 0.1 s) rotates the archive by age, evaluates the
correlation (every ``eval_interval_s``, and within 0.25 s after new anomalies), checks the
collector's own health (nodes' liveness, the ingest-stall incident, :mod:`mailpulse.collector.health`),
pushes incident changes to the dashboard and the alert outbox, sends the periodic summary and runs
the scheduled retraining.
"""

from __future__ import annotations

import collections
import logging
import math
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from mailpulse.config.collector import CollectorConfig

from . import metrics as M
from .actions import IncidentActions
from .alertctx import AlertContext
from .alerts import AlertManager, RateSeries
from .archive import ArchiveWriter, skipped_summary
from .clock import ClockBook
from .correlate import ROOT, Change, Correlator, event_time
from .flink.feed import IncidentFeed, as_change
from .health import Health
from .ingest import Batch, Dedup, IngestProcessor, MqttIngest, load_index
from .intervals import IntervalBook
from .metrics import Metrics
from .relays import RelayNames
from .retrain import publish_model, retrain_from_archive
from .web import DashboardServer, DashboardState, Hub

log = logging.getLogger(__name__)

__all__ = ["EVIDENCE_PUSH_MOST", "EVIDENCE_PUSH_S", "INTERVALS_PUSH_S", "MAX_TOPOLOGY", "TOPOLOGY_PUSH_S", "Collector",
           "run_collector"]

#: An open incident's evidence goes to the dashboard at most this often (seconds) ...
EVIDENCE_PUSH_S = 2.0
#: ... and at most this many incidents' per evaluation (the least recently pushed first).
EVIDENCE_PUSH_MOST = 20
#: The topology goes to the dashboard at most this often (seconds), and on every incident change.
TOPOLOGY_PUSH_S = 1.0
#: The routes' latency intervals go to the dashboard at most this often (seconds).
INTERVALS_PUSH_S = 1.0
#: Most tree nodes in the dashboard's topology.
MAX_TOPOLOGY = 300


#: Most nodes whose model version the collector follows (a status from another node is not followed).
MODELS_KNOWN_MAX = 4096


class Collector:
    """One collector (see the module docstring).

    Parameters
    ----------
    cfg : CollectorConfig
        The validated configuration.
    send : callable, optional
        Alert mail sender override (tests); default SMTP per ``cfg.alerts``.
    """

    def __init__(self, cfg: CollectorConfig, send: Any = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics(cfg.metrics.label_values, cfg.metrics.nodes, cfg.relays.names)
        self.hub = Hub()
        self.state = DashboardState()
        a = cfg.archive
        self.archive = ArchiveWriter(a.dir, max_bytes=a.max_bytes, max_age_s=a.max_age_s, fsync=a.fsync)
        self.dedup = Dedup(a.dedup_capacity)
        self.indexed = load_index(a.dir, self.dedup, a.index_segments)
        self.clocks = ClockBook(cfg.clock.max_offset_s, cfg.clock.max_future_s)
        self.processor = IngestProcessor(self.archive, self.dedup, clocks=self.clocks,
                                         max_message_bytes=cfg.mqtt.max_message_bytes)
        self.archive_lock = self.processor.lock
        # per-route latency prediction intervals of every delivery (dashboard, /metrics, evidence)
        self.intervals = IntervalBook(RelayNames(cfg.relays.names), max_routes=cfg.metrics.label_values)
        self.correlator = Correlator(cfg.correlate, RelayNames(cfg.relays.names), self.intervals.level)
        self._intervals_at = -math.inf
        self.corr_lock = threading.Lock()
        #: (site, node) -> the model version its last status named (None: the untrained bring-up model)
        self.models: dict[tuple[str, str], str | None] = {}
        #: when the last restart of the correlation's score baselines began, and the model changes since
        #: that did not restart them again (:meth:`_model_of`)
        self._baselines_restarted: float | None = None
        self.model_restarts_refused = 0
        self._refusal_said: dict[tuple[str, str], float] = {}
        self.health = Health(cfg.health)
        # acknowledgements and silences from the dashboard, kept in the collector's state folder
        self.actions = IncidentActions(Path(a.dir) / "state" / "incident-actions.json")
        self.state.actions = self.actions
        self.alerts: AlertManager | None = None
        if cfg.alerts.enabled:
            outbox = cfg.alerts.outbox_dir or str(Path(a.dir) / "outbox")
            self.alerts = AlertManager(cfg.alerts, send, outbox_dir=outbox, on_event=self._alert_event,
                                       actions=self.actions)
        self.web: DashboardServer | None = None
        if cfg.web.enabled:
            self.web = DashboardServer(self.state, self.hub, self.metrics, cfg.web, search=self._search,
                                       actions=self.actions)
            if self.alerts is not None and not cfg.alerts.dashboard_url:
                cfg.alerts.dashboard_url = self.web.url
        self.context = AlertContext(RelayNames(cfg.relays.names), cfg.alerts.dashboard_url, cfg.correlate.history_s,
                                    cfg.correlate.examples)
        self.ingest = MqttIngest(cfg.mqtt, self.processor, self.on_batch)
        self.metrics.add_live(self._live_metrics)
        self.lags: collections.deque[float] = collections.deque(maxlen=200_000)
        self.anomaly_seen: dict[str, float] = {}
        self._new_anomalies = 0
        self._last_eval = 0.0
        self._last_stats = 0.0
        self._next_retrain = time.time() + cfg.retrain.interval_s
        self.retrain_log: list[dict[str, Any]] = []
        self.changes: list[Change] = []
        self.first_batch_at: float | None = None
        self.current_model: Any = None   # the last model this collector published (the guard's reference)
        self.last_batch_at: float | None = None
        self._last_health = 0.0
        self._last_health_view: dict[str, Any] = {}
        # [flink] incidents_dir: the incidents of the Flink job (all shards) replace this collector's own
        self.flink_feed = IncidentFeed(cfg.flink.incidents_dir) if cfg.flink.incidents_dir else None
        self._flink_open: set[str] = set()
        self._evidence_sent: dict[str, float] = {}     # incident id -> when its evidence was last pushed
        self._topology_at = -math.inf

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.web is not None:
            self.web.start()
        if self.alerts is not None:
            self.alerts.start()
        self.ingest.start()

    def stop(self) -> None:
        self.ingest.stop()
        self.processor.close()
        if self.alerts is not None:
            self.alerts.stop()
        if self.web is not None:
            self.web.stop()

    # -- data path ----------------------------------------------------------------------------

    def on_batch(self, batch: Batch) -> None:
        """A durable, validated, de-duplicated batch: correlate, count, push to the dashboard."""
        with self.corr_lock:
            for ev in batch.events:
                try:
                    self.correlator.observe(ev, self._interval(ev))
                except Exception:   # validated events should never get here; one must not stop the rest
                    self.metrics.handler_errors.inc()
                    log.exception("correlation failed on event %s", str(ev.get("id"))[:64])
        st = self.state.stats
        now = time.time()
        if batch.events:
            if self.first_batch_at is None:
                self.first_batch_at = now
            self.last_batch_at = now
        for ev in batch.events:
            try:
                self._event(ev, st, now)
            except Exception:   # validated events should never get here; one must not stop the rest
                self.metrics.handler_errors.inc()
                log.exception("collector failed on event %s", str(ev.get("id"))[:64])
        for (site, node), t in batch.seen.items():
            self.health.seen(site, node, t)
        for site, node, doc, retained, received in batch.statuses:
            self._model_of(site, node, doc, received)
            online = self.health.status(site, node, doc, retained, received, now)
            self.metrics.observe_status(site, node, doc)
            self.metrics.set_online(site, node, online)
            row = self.state.set_status(site, node, doc, self._node_view(site, node))
            if not online and row.get("state") == "online":
                row = self.state.set_online(site, node, False, self._node_view(site, node))
            self.hub.publish("fleet", row)
        for site, node, reason in batch.quarantined:
            self.metrics.observe_quarantine(site, node, reason)
        if batch.quarantined:
            self.state.add_quarantine(batch.quarantined)
        st["events"] += len(batch.events)
        st["duplicates"] += batch.duplicates
        st["quarantined"] = st.get("quarantined", 0) + len(batch.quarantined)
        if batch.duplicates:
            self.metrics.duplicates.inc(batch.duplicates)
        for lag in batch.lags:
            self.metrics.lag.observe(lag)
        self.lags.extend(batch.lags)
        if self.alerts is not None:
            self.alerts.count("events", len(batch.events))
            self.alerts.count("duplicates", batch.duplicates)
            self.alerts.count("anomalies", sum(1 for e in batch.events if e.get("anomaly")))
            self.alerts.count("quarantined", len(batch.quarantined))
        if now - self._last_stats >= 0.5:
            self._last_stats = now
            self.hub.publish("stats", dict(st))

    def _model_of(self, site: str, node: str, doc: dict[str, Any] | None, received: float) -> None:
        """A node's status names the model it scores with: when it names another one than the node's
        last status did (not on the first status heard), the correlation's score baselines restart
        (:meth:`Correlator.model_changed`): the previous model's verdicts are no baseline for the new one's."""
        if doc is None or "model_version" not in doc:
            return
        version = doc.get("model_version")
        key = (site, node)
        if key not in self.models and len(self.models) >= MODELS_KNOWN_MAX:
            return
        changed = key in self.models and self.models[key] != version
        self.models[key] = None if version is None else str(version)
        if not changed:
            return
        # A restart blinds the anomaly walk for a window, so it is rationed: one per history (at least
        # one window), extended by the changes within a window of its start (a fleet's roll-out).  A
        # node that keeps changing models cannot keep the correlation blind: its changes are counted.
        s = self.cfg.correlate
        with self.corr_lock:
            t = max(received, self.correlator.now)
            began = self._baselines_restarted
            if began is None or t - began >= max(s.history_s, s.window_s):
                self._baselines_restarted = t
            elif t - began > s.window_s:
                self.model_restarts_refused += 1
                if t - self._refusal_said.get(key, -math.inf) >= max(s.history_s, s.window_s):
                    if len(self._refusal_said) >= MODELS_KNOWN_MAX:
                        self._refusal_said.clear()
                    self._refusal_said[key] = t
                    log.warning("node %s/%s changed its model again (%s) %.0f s after the correlation's score "
                                "baselines restarted: they are not restarted again before %.0f s have passed",
                                site, node, version, t - began, max(s.history_s, s.window_s))
                return
            self.correlator.model_changed(t)
        log.info("node %s/%s scores with model %s: the correlation's score baselines restart", site, node, version)

    def _interval(self, ev: dict[str, Any]) -> tuple[str, str | None] | None:
        """Run a delivery through its route's interval (counted in /metrics); its ``(route, side)`` (the side
        by its node's core flags when it carries them, see :class:`~.intervals.IntervalBook`)."""
        if ev.get("kind") != "delivery":
            return None
        got = self.intervals.observe(ev, event_time(ev))
        if got is None:
            return None
        lo, hi = self.intervals.bounds(got.route) or (None, None)
        self.metrics.observe_interval(got.route, got.side, lo, hi, node=got.node, disagrees=got.disagrees)
        return got.route, got.side

    def push_intervals(self, force: bool = False) -> dict[str, Any] | None:
        """The routes' intervals to the dashboard (at most every :data:`INTERVALS_PUSH_S`)."""
        now = time.monotonic()
        if not force and now - self._intervals_at < INTERVALS_PUSH_S:
            return None
        self._intervals_at = now
        with self.corr_lock:
            view = self.intervals.view()
        if view == self.state.intervals and not force:
            return None
        self.state.intervals = view
        self.hub.publish("intervals", view)
        return view

    def _event(self, ev: dict[str, Any], st: dict[str, Any], now: float) -> None:
        self.metrics.observe_event(ev)
        if ev.get("anomaly"):
            compact = self.context.remember(ev)
            self._new_anomalies += 1
            st["anomalies"] += 1
            self.hub.publish("anomaly", self.state.add_anomaly(ev, compact))
            self.anomaly_seen[str(ev.get("id"))] = now
            if len(self.anomaly_seen) > 10000:
                self.anomaly_seen.pop(next(iter(self.anomaly_seen)))
        if ev.get("kind") == "probe":
            self.hub.publish("probe", self.state.add_probe(ev))

    def _search(self, **query: Any) -> list[dict[str, Any]]:
        return self.context.search(**query)

    def _node_view(self, site: str, node: str) -> dict[str, Any]:
        return {**self.clocks.view(site, node), **self.health.view(site, node)}

    def _alert_event(self, what: str, label: str) -> None:
        m = self.metrics
        counter = {"queued": m.alerts_queued, "suppressed": m.alerts_suppressed, "delivered": m.alerts_delivered,
                   "retried": m.alerts_retried, "failed": m.alerts_failed}.get(what)
        if counter is not None:
            counter.labels(label).inc()

    def link(self) -> dict[str, Any]:
        """The broker link and ingest state (dashboard and metrics)."""
        return self.ingest.link.as_dict()

    def _live_metrics(self) -> Iterator[Metric]:
        ln = self.ingest.link
        yield from M.gauge("mailpulse_broker_connected", "1 while the collector is connected to the broker.",
                           1 if ln.connected else 0)
        yield from M.counter("mailpulse_broker_reconnect_attempts", "Connection attempts after the first.",
                             ln.attempts)
        yield from M.counter("mailpulse_broker_connect_failures", "Connection attempts that failed.", ln.failures)
        yield from M.counter("mailpulse_broker_connection_losses", "Connections to the broker lost.", ln.losses)
        yield from M.gauge("mailpulse_ingest_last_message_timestamp_seconds", "When the newest message arrived.",
                           ln.last_message)
        yield from M.gauge("mailpulse_ingest_last_timestamp_seconds", "When the newest accepted event was archived.",
                           ln.last_ingest)
        yield from M.gauge("mailpulse_alerts_outbox_depth", "Alert deliveries waiting in the outbox.",
                           len(self.alerts.outbox) if self.alerts is not None else 0)
        yield from M.gauge("mailpulse_incident_ingest_open", "1 while the collector's own ingest-stall incident is "
                                                             "open.", 1 if self.health.incident else 0)
        seen, offset, skewed = [], [], []
        for (site, node), nh in list(self.health.nodes.items()):
            s, n = self.metrics.node(site, node)
            if nh.last_seen:
                seen.append((s, n, nh.last_seen))
            v = self.clocks.view(site, node)
            if v["clock_offset_s"] is not None:
                offset.append((s, n, v["clock_offset_s"]))
            skewed.append((s, n, 1.0 if v["clock_skewed"] else 0.0))
        yield from M.per_node("mailpulse_node_last_seen_timestamp_seconds", "When a valid message of the node last "
                                                                            "arrived.", seen)
        yield from M.per_node("mailpulse_node_clock_offset_seconds", "Estimated node clock minus collector clock.",
                              offset)
        yield from M.per_node("mailpulse_node_clock_skewed", "1 while the node's clock is beyond [clock] "
                                                             "max_offset_s (its events are not correlated).", skewed)

    def evaluate(self) -> list[Change]:
        """Run the correlation now (or take the Flink job's new incident changes) and publish them."""
        if self.flink_feed is not None:
            return self._publish([as_change(r) for r in self.flink_feed.poll() if r["type"] == "change"], {})
        with self.corr_lock:
            changes = self.correlator.evaluate()
            heat = self._named_heatmap(self.correlator.heatmap())
            n_open = len(self.correlator.open_by_path)
            changed = {c.incident["id"] for c in changes}
            still = [self.correlator.incidents[i].to_json() for i in self.correlator.open_by_path.values()
                     if i not in changed]
            charts = {i["id"]: self._incident_series(tuple(i["path"]))
                      for i in [*(c.incident for c in changes), *still]}
        # the alert mail's chart is the incident page's anomaly rate (one walk of the buckets)
        series = {i: RateSeries(ch["t0"], ch["bucket_s"], ch["anomaly_rate"]) for i, ch in charts.items()
                  if i in changed}
        self.metrics.incidents.set(n_open)
        self.state.heatmap = heat
        self.hub.publish("heatmap", heat)
        if changes or time.monotonic() - self._topology_at >= TOPOLOGY_PUSH_S:
            self._topology_at = time.monotonic()
            with self.corr_lock:
                topo = self.topology()
            self.state.topology = topo
            self.hub.publish("topology", topo)
        out = self._publish(changes, series, charts)
        self._push_evidence(still, charts)
        return out

    def _push_evidence(self, incidents: list[dict[str, Any]], charts: dict[str, Any]) -> None:
        """The open incidents' new evidence to the dashboard (no alert): each at most every
        :data:`EVIDENCE_PUSH_S`, at most :data:`EVIDENCE_PUSH_MOST` per evaluation."""
        now = time.monotonic()
        due = [i for i in incidents if now - self._evidence_sent.get(i["id"], -math.inf) >= EVIDENCE_PUSH_S]
        for inc in sorted(due, key=lambda i: self._evidence_sent.get(i["id"], -math.inf))[:EVIDENCE_PUSH_MOST]:
            self._evidence_sent[inc["id"]] = now
            row = self.state.set_incident({**inc, "context": self.context.describe(inc),
                                           "series": charts.get(inc["id"])}, "evidence")
            self.hub.publish("incident", row)
        for iid in [i for i in self._evidence_sent if now - self._evidence_sent[i] > 3600]:
            del self._evidence_sent[iid]

    def topology(self, most: int = MAX_TOPOLOGY) -> dict[str, Any]:
        """The transmission-path tree as the deliveries' hops drew it (receiving relays first, towards
        the senders), each tree node with its relay's name, window counts and state: ``incident``
        (the root cause of an open incident, whose id it carries), ``degraded`` (its anomaly rate in
        the window at least ``min_ratio`` times its own history's, or the floor rate's) or ``ok``.
        At most ``most`` tree nodes, breadth first (``truncated`` counts the rest).  Call with
        ``corr_lock`` held."""
        c, s = self.correlator, self.cfg.correlate
        causes = {key: iid for key, iid in c.open_by_path.items()}
        count = 0
        truncated = 0

        def node(key: tuple[str, ...]) -> dict[str, Any]:
            w, hist = c.window(key), c.history(key)
            base = max(c.frozen.get(key, hist.rate), s.floor_rate)
            state = "incident" if key in causes else (
                "degraded" if w.anomalies >= max(1, s.min_anomalies // 2) and w.rate >= s.min_ratio * base else "ok")
            return {"key": " > ".join(key[1:]), "host": key[-1], "name": self.context.name(key[-1]),
                    "depth": len(key) - 1, "events": w.events, "anomalies": w.anomalies, "rate": round(w.rate, 4),
                    "history_rate": round(hist.rate, 4), "state": state, "incident": causes.get(key), "children": []}

        root: dict[str, Any] = {"key": "", "name": "*", "children": []}
        queue: collections.deque[tuple[tuple[str, ...], dict[str, Any]]] = collections.deque([((ROOT,), root)])
        while queue:
            key, parent = queue.popleft()
            for child in sorted(c.children.get(key, ())):
                if count >= most:
                    truncated += 1
                    continue
                count += 1
                n = node(child)
                parent["children"].append(n)
                queue.append((child, n))
        return {"children": root["children"], "nodes": count, "truncated": truncated, "window_s": s.window_s,
                "t": c.now}

    def _named_heatmap(self, heat: dict[str, Any]) -> dict[str, Any]:
        """The heatmap's rows with the relay's configured name (``name``) and the path in names."""
        for row in heat["rows"]:
            names = [self.context.name(p) for p in str(row["hop"]).split(" > ")]
            row["name"], row["path_names"] = names[-1], " > ".join(names)
        return heat

    def _publish(self, changes: list[Change], series: dict[str, Any],
                 charts: dict[str, Any] | None = None) -> list[Change]:
        """Incident changes to the dashboard, its live clients and the alerts."""
        if self.flink_feed is not None:
            self._flink_open.update({c.incident["id"] for c in changes if c.kind == "opened"})
            self._flink_open.difference_update({c.incident["id"] for c in changes if c.kind == "resolved"})
            self.metrics.incidents.set(len(self._flink_open))
        for ch in changes:
            self._announce(ch, series.get(ch.incident["id"], ()), (charts or {}).get(ch.incident["id"]))
        return changes

    def _announce(self, ch: Change, series: Any = (), chart: dict[str, Any] | None = None) -> None:
        self.changes.append(ch)
        ctx = self.context.describe(ch.incident)      # relay name, evidence in words, examples, link
        row = self.state.set_incident({**ch.incident, "context": ctx, "series": chart}, ch.kind)
        self._evidence_sent[ch.incident["id"]] = time.monotonic()
        self.hub.publish("incident", row)
        if self.alerts is not None:
            self.alerts.handle(ch.kind, ch.incident, ch.previous_severity, series, ctx)

    def check_health(self, now: float | None = None) -> None:
        """Nodes' liveness and the ingest-stall incident (part of :meth:`tick`)."""
        now = time.time() if now is None else now
        ln = self.ingest.link
        flips, changes = self.health.tick(now, ln.connected, ln.last_message, ln.disconnected_since)
        for site, node, online in flips:
            self.metrics.set_online(site, node, online)
            self.hub.publish("fleet", self.state.set_online(site, node, online, self._node_view(site, node)))
        for ch in changes:
            self._announce(ch)
        self.state.link = self.link()
        view = self.state.health()
        if view != self._last_health_view:
            self._last_health_view = view
            self.hub.publish("health", view)

    def _incident_series(self, key: tuple[str, ...], n: int = 30) -> dict[str, Any]:
        """The incident page's chart: per bucket of the last ``n``, the anomaly rate, the events and the
        p90 latency at the incident's tree node."""
        c = self.correlator
        hi = int(c.now // c.s.bucket_s) + 1
        d = c.buckets.get(key, {})
        rate: list[float | None] = []
        events: list[int] = []
        p90: list[float | None] = []
        for b in range(hi - n, hi):
            bk = d.get(b)
            events.append(bk.events if bk is not None else 0)
            rate.append(round(bk.anomalies / bk.events, 4) if bk is not None and bk.events else None)
            lat = sorted(bk.lat) if bk is not None else []
            p90.append(round(lat[min(len(lat) - 1, max(0, math.ceil(0.9 * len(lat)) - 1))], 4) if lat else None)
        return {"t0": (hi - n) * c.s.bucket_s, "bucket_s": c.s.bucket_s, "anomaly_rate": rate, "events": events,
                "latency_p90_s": p90}

    def tick(self) -> None:
        """Housekeeping (call about every 0.1 s)."""
        now = time.time()
        self.processor.tick()
        due = self.flink_feed is not None or now - self._last_eval >= self.cfg.correlate.eval_interval_s
        quick = self._new_anomalies and now - self._last_eval >= 0.25
        if due or quick:
            self._last_eval = now
            self._new_anomalies = 0
            self.evaluate()
        self.push_intervals()
        if now - self._last_health >= 0.5:
            self._last_health = now
            self.check_health(now)
        if self.alerts is not None:
            self.alerts.maybe_summary()
        if self.cfg.retrain.enabled and now >= self._next_retrain:
            self._next_retrain = now + self.cfg.retrain.interval_s
            self.retrain_once()

    def retrain_once(self) -> list[dict[str, Any]]:
        """Train on the archive, guard, publish to each configured site if accepted."""
        r = self.cfg.retrain
        skipped: collections.Counter[str] = collections.Counter()
        try:
            model, guard = retrain_from_archive(self.cfg.archive.dir, self.current_model, params=r.params,
                                                recent_fraction=r.recent_fraction,
                                                false_alarm_rate_target=r.false_alarm_rate,
                                                max_increase=r.max_far_increase, skipped=skipped)
        except Exception as e:
            log.error("retraining failed: %s", e)
            failed: dict[str, Any] = {"ts": time.time(), "error": str(e), "skipped": dict(skipped)}
            self.retrain_log.append(failed)
            return [failed]
        if skipped:
            log.warning("retraining: %s", skipped_summary(skipped))
        entry: dict[str, Any] = {"ts": time.time(), "accept": guard.accept, "reason": guard.reason,
                                 "published_to": list(r.sites) if guard.accept else [], "skipped": dict(skipped)}
        if guard.accept:
            self.current_model = model
            with tempfile.TemporaryDirectory() as d:
                path = model.save(Path(d) / "model.json")
                m = self.cfg.mqtt
                for site in r.sites:
                    publish_model(path, site, m.host, m.port, username=m.username, password=m.password, tls=m.tls,
                                  ca_file=m.ca_file, cert_file=m.cert_file, key_file=m.key_file)
        self.retrain_log.append(entry)
        return [entry]


def run_collector(cfg: CollectorConfig, stop: threading.Event, send: Any = None,
                  ready: Any = None) -> int:
    """Run a collector until ``stop`` is set; ``ready(collector)`` is called once it is started."""
    c = Collector(cfg, send)
    c.start()
    if c.web is not None:
        log.info("dashboard at %s", c.web.url)
    if ready is not None:
        ready(c)
    try:
        while not stop.wait(0.1):
            c.tick()
    finally:
        c.stop()
    return 0
