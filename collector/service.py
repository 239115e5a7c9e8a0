"""The collector process: ingest -> archive -> correlate -> dashboard, metrics and alerts.

:class:`Collector` wires the parts together; :func:`run_collector` runs one until ``stop`` is set.

Threads: paho's network thread queues messages; the ingest worker archives them (fsync), acks
them and calls :meth:`Collector.on_batch`, which feeds the correlator, the metrics and the
dashboard (an anomaly reaches the SSE clients right there); :meth:`Collector.tick` (the main
loop, every 0.1 s) rotates the archive by age, evaluates the correlation (every
``eval_interval_s``, and within 0.25 s after new anomalies), pushes incident changes to the
dashboard and the alert mailer, sends the periodic summary and runs the scheduled retraining.
"""

from __future__ import annotations

import collections
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mailpulse.config.collector import CollectorConfig

from .alerts import AlertManager
from .archive import ArchiveWriter
from .correlate import Change, Correlator
from .flink.feed import IncidentFeed, as_change
from .ingest import Batch, Dedup, IngestProcessor, MqttIngest, load_index
from .metrics import Metrics
from .retrain import publish_model, retrain_from_archive
from .web import DashboardServer, DashboardState, Hub

log = logging.getLogger(__name__)

__all__ = ["Collector", "run_collector"]


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
        self.metrics = Metrics()
        self.hub = Hub()
        self.state = DashboardState()
        a = cfg.archive
        self.archive = ArchiveWriter(a.dir, max_bytes=a.max_bytes, max_age_s=a.max_age_s, fsync=a.fsync)
        self.dedup = Dedup(a.dedup_capacity)
        self.indexed = load_index(a.dir, self.dedup, a.index_segments)
        self.processor = IngestProcessor(self.archive, self.dedup)
        self.archive_lock = self.processor.lock
        self.correlator = Correlator(cfg.correlate)
        self.corr_lock = threading.Lock()
        self.alerts: AlertManager | None = None
        if cfg.alerts.enabled:
            self.alerts = AlertManager(cfg.alerts, send)
            self.alerts.on_sent = lambda kind: self.metrics.alerts.labels(kind).inc()
        self.web: DashboardServer | None = None
        if cfg.web.enabled:
            self.web = DashboardServer(self.state, self.hub, self.metrics, cfg.web)
            if self.alerts is not None and not cfg.alerts.dashboard_url:
                cfg.alerts.dashboard_url = self.web.url
        self.ingest = MqttIngest(cfg.mqtt, self.processor, self.on_batch)
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
        # [flink] incidents_dir: the incidents of the Flink job (all shards) replace this collector's own
        self.flink_feed = IncidentFeed(cfg.flink.incidents_dir) if cfg.flink.incidents_dir else None
        self._flink_open: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.web is not None:
            self.web.start()
        if self.alerts is not None:
            self.alerts.start()
        self.ingest.start()

    def stop(self) -> None:
        self.ingest.stop()
        with self.archive_lock:
            self.archive.close()
        if self.alerts is not None:
            self.alerts.stop()
        if self.web is not None:
            self.web.stop()

    # -- data path ----------------------------------------------------------------------------

    def on_batch(self, batch: Batch) -> None:
        """A durable, de-duplicated batch: correlate, count, push anomalies to the dashboard."""
        with self.corr_lock:
            for ev in batch.events:
                self.correlator.observe(ev)
        st = self.state.stats
        now = time.time()
        if batch.events:
            if self.first_batch_at is None:
                self.first_batch_at = now
            self.last_batch_at = now
        for ev in batch.events:
            self.metrics.observe_event(ev)
            if ev.get("anomaly"):
                self._new_anomalies += 1
                st["anomalies"] += 1
                self.hub.publish("anomaly", self.state.add_anomaly(ev))
                self.anomaly_seen[str(ev.get("id"))] = now
                if len(self.anomaly_seen) > 10000:
                    self.anomaly_seen.pop(next(iter(self.anomaly_seen)))
            if ev.get("kind") == "probe":
                self.hub.publish("probe", self.state.add_probe(ev))
        for site, node, doc, _retained in batch.statuses:
            self.metrics.observe_status(site, node, doc)
            self.hub.publish("fleet", self.state.set_status(site, node, doc))
        st["events"] += len(batch.events)
        st["duplicates"] += batch.duplicates
        if batch.duplicates:
            self.metrics.duplicates.inc(batch.duplicates)
        for lag in batch.lags:
            self.metrics.lag.observe(lag)
        self.lags.extend(batch.lags)
        if self.alerts is not None:
            self.alerts.count("events", len(batch.events))
            self.alerts.count("duplicates", batch.duplicates)
            self.alerts.count("anomalies", sum(1 for e in batch.events if e.get("anomaly")))
        if now - self._last_stats >= 0.5:
            self._last_stats = now
            self.hub.publish("stats", dict(st))

    def evaluate(self) -> list[Change]:
        """Run the correlation now (or take the Flink job's new incident changes) and publish them."""
        if self.flink_feed is not None:
            return self._publish([as_change(r) for r in self.flink_feed.poll() if r["type"] == "change"], {})
        with self.corr_lock:
            changes = self.correlator.evaluate()
            heat = self.correlator.heatmap()
            series = {c.incident["id"]: self._rate_series(tuple(c.incident["path"])) for c in changes}
            n_open = len(self.correlator.open_by_path)
        self.metrics.incidents.set(n_open)
        self.state.heatmap = heat
        self.hub.publish("heatmap", heat)
        return self._publish(changes, series)

    def _publish(self, changes: list[Change], series: dict[str, Any]) -> list[Change]:
        """Incident changes to the dashboard, its live clients and the alerts."""
        if self.flink_feed is not None:
            self._flink_open.update({c.incident["id"] for c in changes if c.kind == "opened"})
            self._flink_open.difference_update({c.incident["id"] for c in changes if c.kind == "resolved"})
            self.metrics.incidents.set(len(self._flink_open))
        for ch in changes:
            self.changes.append(ch)
            self.state.set_incident(ch.incident)
            self.hub.publish("incident", ch.incident)
            if self.alerts is not None:
                self.alerts.handle(ch.kind, ch.incident, ch.previous_severity, series.get(ch.incident["id"], ()))
        return changes

    def _rate_series(self, key: tuple[str, ...], n: int = 30) -> list[float | None]:
        c = self.correlator
        hi = int(c.now // c.s.bucket_s) + 1
        d = c.buckets.get(key, {})
        out: list[float | None] = []
        for b in range(hi - n, hi):
            bk = d.get(b)
            out.append(None if bk is None or not bk.events else bk.anomalies / bk.events)
        return out

    def tick(self) -> None:
        """Housekeeping (call about every 0.1 s)."""
        now = time.time()
        with self.archive_lock:
            self.archive.tick()
        due = self.flink_feed is not None or now - self._last_eval >= self.cfg.correlate.eval_interval_s
        quick = self._new_anomalies and now - self._last_eval >= 0.25
        if due or quick:
            self._last_eval = now
            self._new_anomalies = 0
            self.evaluate()
        if self.alerts is not None:
            self.alerts.maybe_summary()
        if self.cfg.retrain.enabled and now >= self._next_retrain:
            self._next_retrain = now + self.cfg.retrain.interval_s
            self.retrain_once()

    def retrain_once(self) -> list[dict[str, Any]]:
        """Train on the archive, guard, publish to each configured site if accepted."""
        r = self.cfg.retrain
        try:
            model, guard = retrain_from_archive(self.cfg.archive.dir, self.current_model, params=r.params,
                                                recent_fraction=r.recent_fraction,
                                                false_alarm_rate_target=r.false_alarm_rate,
                                                max_increase=r.max_far_increase)
        except Exception as e:
            log.error("retraining failed: %s", e)
            failed: dict[str, Any] = {"ts": time.time(), "error": str(e)}
            self.retrain_log.append(failed)
            return [failed]
        entry: dict[str, Any] = {"ts": time.time(), "accept": guard.accept, "reason": guard.reason,
                                 "published_to": list(r.sites) if guard.accept else []}
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
