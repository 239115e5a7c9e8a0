"""Prometheus metrics of the collector (served at ``/metrics`` by :mod:`mailpulse.collector.web`).

Names follow postfix_exporter where they overlap, with ``site``/``node`` labels added because
one collector sees a whole fleet:

* ``postfix_smtp_delivery_delay_seconds{stage}`` histogram, stages ``before_queue_manager``,
  ``queue_manager``, ``connection_setup``, ``transmission`` (Postfix's ``delays=a/b/c/d``);
* ``postfix_smtp_messages_processed_total{status}`` (``sent``, ``deferred``, ``bounced``, ...).

mailpulse's own: ``mailpulse_events_total{site,node,kind}``,
``mailpulse_anomalies_total{site,node,kind,route}``, ``mailpulse_probe_latency_seconds{site,node,route}``,
``mailpulse_probe_outcomes_total{site,node,route,outcome}``, ``mailpulse_probe_psnr_db{site,node,route}``,
``mailpulse_node_online{site,node}``, ``mailpulse_node_spool_depth{site,node}``,
``mailpulse_node_quarantined{site,node,source}`` (inputs a node's source skipped, with the reason in
the node's quarantine file), ``mailpulse_node_source_restarts{site,node,source}``,
``mailpulse_incidents_open``, ``mailpulse_ingest_duplicates_total``, ``mailpulse_ingest_lag_seconds``,
``mailpulse_alerts_sent_total{kind}``, ``mailpulse_alerts_suppressed_total``.

Each :class:`Metrics` owns its registry (so several collectors in one test process do not clash).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["STAGES", "Metrics"]

STAGES = ("before_queue_manager", "queue_manager", "connection_setup", "transmission")
_DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class Metrics:
    """The collector's metric families and how events update them."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
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
        self.online = Gauge("mailpulse_node_online", "1 while the node's retained status says online.",
                            ["site", "node"], registry=r)
        self.spool = Gauge("mailpulse_node_spool_depth", "Events waiting in the node's spool.", ["site", "node"],
                           registry=r)
        self.quarantined = Gauge("mailpulse_node_quarantined", "Inputs a node's source skipped since the node started "
                                 "(recorded with the reason in its quarantine).", ["site", "node", "source"],
                                 registry=r)
        self.restarts = Gauge("mailpulse_node_source_restarts", "Restarts of a node's source (or prober) thread after "
                              "it failed, since the node started.", ["site", "node", "source"], registry=r)
        self.incidents = Gauge("mailpulse_incidents_open", "Open incidents.", registry=r)
        self.duplicates = Counter("mailpulse_ingest_duplicates_total", "Events dropped as duplicates (replays).",
                                  registry=r)
        self.lag = Histogram("mailpulse_ingest_lag_seconds", "Event time to archived-and-correlated.",
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60), registry=r)
        self.alerts = Counter("mailpulse_alerts_sent_total", "Alert e-mails sent.", ["kind"], registry=r)
        self.alerts_suppressed = Counter("mailpulse_alerts_suppressed_total",
                                         "Alert e-mails held back by de-duplication or rate limits.", registry=r)

    def observe_event(self, ev: dict[str, Any]) -> None:
        site, node, kind = str(ev.get("site", "")), str(ev.get("node", "")), str(ev.get("kind", ""))
        f = ev.get("fields") or {}
        self.events.labels(site, node, kind).inc()
        route = str(f.get("route") or "") if kind == "probe" else ""
        if ev.get("anomaly"):
            self.anomalies.labels(site, node, kind, route).inc()
        if kind == "delivery":
            d = f.get("delays")
            if isinstance(d, list) and len(d) == 4:
                for stage, v in zip(STAGES, d, strict=True):
                    if isinstance(v, int | float):
                        self.delay.labels(site, node, stage).observe(float(v))
            if f.get("status"):
                self.processed.labels(site, node, str(f["status"])).inc()
        elif kind == "probe":
            if isinstance(f.get("latency_ms"), int | float):
                self.probe_latency.labels(site, node, route).observe(f["latency_ms"] / 1000.0)
            self.probe_outcomes.labels(site, node, route, str(f.get("outcome") or "")).inc()
            integ = f.get("integrity") or {}
            if isinstance(integ.get("psnr_db"), int | float):
                self.probe_psnr.labels(site, node, route).set(float(integ["psnr_db"]))

    def observe_status(self, site: str, node: str, doc: dict[str, Any] | None) -> None:
        online = bool(doc and doc.get("state") == "online")
        self.online.labels(site, node).set(1 if online else 0)
        spool = (doc or {}).get("spool") or {}
        if isinstance(spool.get("depth"), int | float):
            self.spool.labels(site, node).set(spool["depth"])
        quarantine = (doc or {}).get("quarantine") or {}
        by_source = quarantine.get("by_source") if isinstance(quarantine, dict) else None
        for source, n in (by_source or {}).items() if isinstance(by_source, dict) else ():
            if isinstance(n, int | float):
                self.quarantined.labels(site, node, str(source)).set(n)
        restarts = (doc or {}).get("restarts")
        for source, n in restarts.items() if isinstance(restarts, dict) else ():
            if isinstance(n, int | float):
                self.restarts.labels(site, node, str(source)).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
