"""Prometheus metrics of the collector (served at ``/metrics`` by :mod:`mailpulse.collector.web`).

Names follow postfix_exporter where they overlap, with ``site``/``node`` labels added because
one collector sees a whole fleet:

* ``postfix_smtp_delivery_delay_seconds{stage}`` histogram, stages ``before_queue_manager``,
  ``queue_manager``, ``connection_setup``, ``transmission`` (Postfix's ``delays=a/b/c/d``);
* ``postfix_smtp_messages_processed_total{status}`` (``sent``, ``deferred``, ``bounced``, ...).

mailpulse's own are listed, with their meaning, in ``docs/operations.md``; the relay, domain, DSN,
probe-freshness and Postfix queue families are in :mod:`.opsmetrics`.

**Bounded.**  Label values that come from what nodes send (site/node pairs, delivery status, probe
route and outcome, a node's source names) pass a :class:`LabelCap`: the first ``limit`` distinct
values of a label (well-known values first) are kept, every further one is counted as ``other``,
and ``mailpulse_metrics_labels_folded_total{label}`` counts what was folded - so one message with
3,000 invented statuses adds one series, not 3,000.  Values are cut to 64 characters and made
encodable.  Everything else is a closed set (event kinds, quarantine reasons, clock judgements).

Each :class:`Metrics` owns its registry (so several collectors in one test process do not clash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailpulse import features as F

from .opsmetrics import OpsMetrics
from .relays import RelayNames

__all__ = ["STAGES", "LabelCap", "Metrics"]

STAGES = ("before_queue_manager", "queue_manager", "connection_setup", "transmission")
_DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
OTHER = "other"
_PROBE_OUTCOMES = ("ok", "late", "damaged", "lost")


def _clean(value: Any) -> str:
    v = value if isinstance(value, str) else str(value)
    return v[:64].encode("utf-8", "replace").decode("utf-8")


class LabelCap:
    """Keeps the first ``limit`` distinct values of one label; the rest become ``other`` (counted)."""

    def __init__(self, name: str, limit: int, folded: Counter, preset: tuple[str, ...] = ()) -> None:
        self.name = name
        self.limit = limit
        self.folded = folded
        self.kept: set[str] = set(preset[:limit])

    def __call__(self, value: Any) -> str:
        v = _clean(value)
        if v in self.kept:
            return v
        if len(self.kept) < self.limit:
            self.kept.add(v)
            return v
        self.folded.labels(self.name).inc()
        return OTHER


class _Live(Collector):
    """Families read at scrape time from a callable (link state, clocks, outbox: values that
    already live in the collector and would otherwise be copied on every change)."""

    def __init__(self, source: Callable[[], Iterator[Metric]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source()


class Metrics:
    """The collector's metric families and how events update them."""

    def __init__(self, label_values: int = 50, nodes: int = 1000, relays: Mapping[str, str] | None = None) -> None:
        r = self.registry = CollectorRegistry()
        self.folded = Counter("mailpulse_metrics_labels_folded_total",
                              "Label values counted as `other` because the label holds its limit of distinct values.",
                              ["label"], registry=r)
        self._node = LabelCap("site/node", nodes, self.folded)
        self._status = LabelCap("status", label_values, self.folded, tuple(F.OUTCOMES))
        self._route = LabelCap("route", label_values, self.folded, ("",))
        self._source = LabelCap("source", label_values, self.folded)
        self._outcome = LabelCap("outcome", label_values, self.folded, ("", *_PROBE_OUTCOMES))
        self.delay = Histogram("postfix_smtp_delivery_delay_seconds", "SMTP message processing time in seconds.",
                               ["site", "node", "stage"], buckets=_DELAY_BUCKETS, registry=r)
        self.processed = Counter("postfix_smtp_messages_processed_total", "Number of messages processed by smtp.",
                                 ["site", "node", "status"], registry=r)
        self.events = Counter("mailpulse_events_total", "Events ingested (after de-duplication).",
                              ["site", "node", "kind"], registry=r)
        self.anomalies = Counter("mailpulse_anomalies_total", "Events the node's scorer flagged anomalous.",
                                 ["site", "node", "kind", "route"], registry=r)
        self.probe_latency = Histogram("mailpulse_probe_latency_seconds", "End-to-end latency of probe mails.",
                                       ["site", "node", "route"], buckets=_DELAY_BUCKETS, registry=r)
        self.probe_outcomes = Counter("mailpulse_probe_outcomes_total", "Probe outcomes (ok, late, damaged, lost).",
                                      ["site", "node", "route", "outcome"], registry=r)
        self.probe_psnr = Gauge("mailpulse_probe_psnr_db", "PSNR of the last probe's image after the route.",
                                ["site", "node", "route"], registry=r)
        self.online = Gauge("mailpulse_node_online", "1 while the node is online: its status says so and it was "
                                                     "heard from within its missed-heartbeat limit.",
                            ["site", "node"], registry=r)
        self.spool = Gauge("mailpulse_node_spool_depth", "Events waiting in the node's spool.", ["site", "node"],
                           registry=r)
        self.node_quarantined = Gauge("mailpulse_node_quarantined",
                                      "Inputs a node's source skipped since the node started "
                                      "(recorded with the reason in its quarantine).", ["site", "node", "source"],
                                      registry=r)
        self.restarts = Gauge("mailpulse_node_source_restarts", "Restarts of a node's source (or prober) thread after "
                              "it failed, since the node started.", ["site", "node", "source"], registry=r)
        self.incidents = Gauge("mailpulse_incidents_open", "Open incidents.", registry=r)
        self.duplicates = Counter("mailpulse_ingest_duplicates_total", "Events dropped as duplicates (replays).",
                                  registry=r)
        self.quarantined = Counter("mailpulse_ingest_quarantined_total",
                                   "Events and messages refused by validation and written to the quarantine.",
                                   ["site", "node", "reason"], registry=r)
        self.judged = Counter("mailpulse_event_time_total", "Events by how the collector judged their time "
                                                            "(ok, corrected, future, skewed, missing).",
                              ["site", "node", "clock"], registry=r)
        self.lag = Histogram("mailpulse_ingest_lag_seconds", "Event time to archived-and-correlated.",
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60), registry=r)
        self.handler_errors = Counter("mailpulse_ingest_handler_errors_total",
                                      "Accepted events the collector failed to count or correlate (a bug; logged).",
                                      registry=r)
        self.alerts_queued = Counter("mailpulse_alerts_queued_total", "Alerts put in the outbox, by transition.",
                                     ["kind"], registry=r)
        self.alerts_delivered = Counter("mailpulse_alerts_delivered_total", "Alerts delivered, by channel.",
                                        ["channel"], registry=r)
        self.alerts_retried = Counter("mailpulse_alerts_retried_total",
                                      "Failed delivery attempts that will be retried, by channel.", ["channel"],
                                      registry=r)
        self.alerts_failed = Counter("mailpulse_alerts_failed_total",
                                     "Alerts given up after retrying for `give_up_after_s`, by channel.", ["channel"],
                                     registry=r)
        self.alerts_suppressed = Counter("mailpulse_alerts_suppressed_total",
                                         "Alerts held back by de-duplication, flapping, hysteresis or the rate limit.",
                                         ["reason"], registry=r)
        self._iv_route = LabelCap("interval_route", label_values, self.folded)
        self.interval_deliveries = Counter(
            "mailpulse_route_interval_deliveries_total",
            "Deliveries by route and how their latency fell against the route's prediction interval "
            "(inside, above, below).", ["route", "side"], registry=r)
        self.interval_node_flags = Counter(
            "mailpulse_route_interval_node_flags_total",
            "Deliveries whose side (inside, above, below) came from the observing node's core flags, by route "
            "(also counted in mailpulse_route_interval_deliveries_total).", ["route", "side"], registry=r)
        self.interval_disagreements = Counter(
            "mailpulse_route_interval_disagreements_total",
            "Deliveries whose node's core flags differ from the collector's own tracker (0 while both see every "
            "delivery of the route since they started), by route.", ["route"], registry=r)
        self.interval_lower = Gauge("mailpulse_route_interval_lower_seconds",
                                    "Lower bound of the route's latency prediction interval (seconds).", ["route"],
                                    registry=r)
        self.interval_upper = Gauge("mailpulse_route_interval_upper_seconds",
                                    "Upper bound of the route's latency prediction interval (seconds).", ["route"],
                                    registry=r)
        self.ops = OpsMetrics(r, lambda name: LabelCap(name, label_values, self.folded), RelayNames(relays))
        self._live: list[Callable[[], Iterator[Metric]]] = []
        r.register(_Live(self._collect_live))

    def node(self, site: Any, node: Any) -> tuple[str, str]:
        """The (site, node) labels of a node (``other``/``other`` beyond the node limit)."""
        s, n = _clean(site), _clean(node)
        if self._node(f"{s}/{n}") == OTHER:
            return OTHER, OTHER
        return s, n

    def add_live(self, source: Callable[[], Iterator[Metric]]) -> None:
        """Add families computed at scrape time."""
        self._live.append(source)

    def _collect_live(self) -> Iterator[Metric]:
        for src in self._live:
            yield from src()

    def observe_event(self, ev: dict[str, Any]) -> None:
        """Count one accepted (validated) event."""
        site, node = self.node(ev.get("site", ""), ev.get("node", ""))
        kind = str(ev.get("kind", ""))
        f = ev.get("fields") or {}
        self.events.labels(site, node, kind).inc()
        self.judged.labels(site, node, str(ev.get("clock") or "ok")).inc()
        route = self._route(f.get("route") or "") if kind == "probe" else ""
        if ev.get("anomaly"):
            self.anomalies.labels(site, node, kind, route).inc()
        if kind == "delivery":
            d = f.get("delays")
            if isinstance(d, list) and len(d) == 4:
                for stage, v in zip(STAGES, d, strict=True):
                    if isinstance(v, int | float):
                        self.delay.labels(site, node, stage).observe(float(v))
            if f.get("status"):
                self.processed.labels(site, node, self._status(f["status"])).inc()
            self.ops.delivery(site, f)
        elif kind == "probe":
            if isinstance(f.get("latency_ms"), int | float):
                self.probe_latency.labels(site, node, route).observe(f["latency_ms"] / 1000.0)
            self.probe_outcomes.labels(site, node, route, self._outcome(f.get("outcome") or "")).inc()
            self.ops.probe(site, node, route, ev)
            integ = f.get("integrity")
            psnr = integ.get("psnr_db") if isinstance(integ, dict) else None
            if isinstance(psnr, int | float) and not isinstance(psnr, bool):
                self.probe_psnr.labels(site, node, route).set(float(psnr))

    def observe_interval(self, route: str, side: str | None, lower_s: float | None, upper_s: float | None,
                         node: str | None = None, disagrees: bool = False) -> None:
        """One delivery's outcome against its route's interval (:class:`~.intervals.IntervalBook`): the
        count by side (``node``: the side by the node's core flags, also counted on its own, and
        ``disagrees``: they differ from the collector's tracker), and the route's current bounds (not for
        the folded ``other`` route)."""
        if side is None:
            return
        label = self._iv_route(route)
        self.interval_deliveries.labels(label, side).inc()
        if node is not None:
            self.interval_node_flags.labels(label, node).inc()
        if disagrees:
            self.interval_disagreements.labels(label).inc()
        if label != OTHER and lower_s is not None and upper_s is not None:
            self.interval_lower.labels(label).set(lower_s)
            self.interval_upper.labels(label).set(upper_s)

    def observe_status(self, site: str, node: str, doc: dict[str, Any] | None) -> None:
        """A (validated) status document, or None for a cleared one (liveness: :meth:`set_online`)."""
        s, n = self.node(site, node)
        spool = (doc or {}).get("spool") or {}
        if isinstance(spool.get("depth"), int | float):
            self.spool.labels(s, n).set(spool["depth"])
        self.ops.queue(s, n, doc)
        quarantine = (doc or {}).get("quarantine") or {}
        by_source = quarantine.get("by_source") if isinstance(quarantine, dict) else None
        for source, v in (by_source or {}).items() if isinstance(by_source, dict) else ():
            if isinstance(v, int | float) and not isinstance(v, bool):
                self.node_quarantined.labels(s, n, self._source(source)).set(v)
        restarts = (doc or {}).get("restarts")
        for source, v in restarts.items() if isinstance(restarts, dict) else ():
            if isinstance(v, int | float) and not isinstance(v, bool):
                self.restarts.labels(s, n, self._source(source)).set(v)

    def set_online(self, site: str, node: str, online: bool) -> None:
        s, n = self.node(site, node)
        self.online.labels(s, n).set(1 if online else 0)

    def observe_quarantine(self, site: str, node: str, reason: str) -> None:
        s, n = self.node(site, node)
        self.quarantined.labels(s, n, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    """A one-sample gauge family (nothing when ``value`` is None)."""
    if value is not None:
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], float(value))
        yield g


def counter(name: str, doc: str, value: float) -> Iterator[Metric]:
    """A one-sample counter family (``name`` without ``_total``)."""
    c = CounterMetricFamily(name, doc)
    c.add_metric([], float(value))
    yield c


def per_node(name: str, doc: str, rows: list[tuple[str, str, float]]) -> Iterator[Metric]:
    """A gauge family with one sample per (site, node)."""
    g = GaugeMetricFamily(name, doc, labels=["site", "node"])
    for site, node, v in rows:
        g.add_metric([site, node], float(v))
    yield g
