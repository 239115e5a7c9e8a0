"""The operator's metrics of the collector: relays, recipient domains, DSN classes, probe freshness
and the nodes' Postfix queues (part of :class:`mailpulse.collector.metrics.Metrics`).

* ``mailpulse_relay_deliveries_total{site, relay, domain, dsn_class}``: delivery attempts by next
  hop (named by ``[relays] names``), recipient domain and DSN class (``2.x.x`` success, ``4.x.x``
  transient, ``5.x.x`` permanent, ``none`` without a ``dsn=``, ``other`` for anything else);
* ``mailpulse_relay_delivery_delay_seconds{site, relay}``: Postfix ``delay=`` of deliveries
  that went out (``status=sent``), the input of the relay p90 recording rule;
* ``mailpulse_probe_last_success_timestamp_seconds{site, node, route}``: event time of the newest
  ``ok`` probe (never moves back when events arrive out of order);
* ``mailpulse_postfix_queue_messages`` / ``_bytes`` / ``_oldest_age_seconds{site, node, queue}`` from
  the node's ``postqueue -j`` summary in its status, and ``mailpulse_postfix_queue_up{site, node}``
  (0 while the node cannot read its queue: the gauges then keep their last value).

The relay and domain labels have no ``node`` label (a relay is shared by the nodes that send through
it; with ``node`` the series would multiply by the fleet) and pass their own :class:`LabelCap`
(``[metrics] label_values``): the first values are kept, later ones count as ``other`` in
``mailpulse_metrics_labels_folded_total{label="relay"|"domain"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mailpulse.payload import QUEUE_NAMES

from .relays import RelayNames, domain_of

__all__ = ["DSN_CLASSES", "OpsMetrics", "dsn_class"]

DSN_CLASSES = ("2.x.x", "4.x.x", "5.x.x", "none", "other")
_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 14400)


def dsn_class(dsn: Any) -> str:
    """``2.x.x``/``4.x.x``/``5.x.x`` of an RFC 3463 status code; ``none`` or ``other``."""
    if not dsn:
        return "none"
    d = str(dsn)
    parts = d.split(".")
    if len(parts) == 3 and parts[0] in ("2", "4", "5") and all(p.isdigit() and len(p) <= 3 for p in parts[1:]):
        return f"{parts[0]}.x.x"
    return "other"


class OpsMetrics:
    """Families and updates; ``cap(name, limit)`` makes a :class:`LabelCap` counted in the shared
    folded counter."""

    def __init__(self, r: CollectorRegistry, cap: Callable[[str], Callable[[Any], str]],
                 relays: RelayNames) -> None:
        self.relays = relays
        self._relay = cap("relay")
        self._domain = cap("domain")
        self.deliveries = Counter("mailpulse_relay_deliveries_total",
                                  "Delivery attempts by next-hop relay, recipient domain and DSN class.",
                                  ["site", "relay", "domain", "dsn_class"], registry=r)
        self.relay_delay = Histogram("mailpulse_relay_delivery_delay_seconds",
                                     "Postfix delay= of deliveries sent through a relay (seconds).",
                                     ["site", "relay"], buckets=_DELAY_BUCKETS, registry=r)
        self.last_success = Gauge("mailpulse_probe_last_success_timestamp_seconds",
                                  "Event time (Unix seconds) of the newest probe with outcome ok.",
                                  ["site", "node", "route"], registry=r)
        self.queue_messages = Gauge("mailpulse_postfix_queue_messages", "Messages in the node's Postfix queue.",
                                    ["site", "node", "queue"], registry=r)
        self.queue_bytes = Gauge("mailpulse_postfix_queue_bytes", "Bytes in the node's Postfix queue.",
                                 ["site", "node", "queue"], registry=r)
        self.queue_age = Gauge("mailpulse_postfix_queue_oldest_age_seconds",
                               "Age of the oldest message in the node's Postfix queue (0 when empty), when read.",
                               ["site", "node", "queue"], registry=r)
        self.queue_up = Gauge("mailpulse_postfix_queue_up", "1 when the node's last postqueue -j reading worked.",
                              ["site", "node"], registry=r)
        self._last_ok: dict[tuple[str, str, str], float] = {}

    def relay_label(self, raw: Any) -> str:
        return self._relay(self.relays.name(raw if isinstance(raw, str) else None))

    def delivery(self, site: str, f: dict[str, Any]) -> None:
        relay = self.relay_label(f.get("relay"))
        to = f.get("to")
        domain = self._domain(domain_of(to) if isinstance(to, str) else "")
        self.deliveries.labels(site, relay, domain, dsn_class(f.get("dsn"))).inc()
        delay = f.get("delay")
        if f.get("status") == "sent" and isinstance(delay, int | float) and not isinstance(delay, bool):
            self.relay_delay.labels(site, relay).observe(max(0.0, float(delay)))

    def probe(self, site: str, node: str, route: str, ev: dict[str, Any]) -> None:
        f = ev.get("fields") or {}
        if f.get("outcome") != "ok":
            return
        t = ev.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool):
            t = ev.get("received")
        if not isinstance(t, int | float) or isinstance(t, bool):
            return
        key = (site, node, route)
        if float(t) > self._last_ok.get(key, float("-inf")):
            self._last_ok[key] = float(t)
            self.last_success.labels(site, node, route).set(float(t))

    def queue(self, site: str, node: str, doc: dict[str, Any] | None) -> None:
        pq = (doc or {}).get("postfix_queue")
        if not isinstance(pq, dict):
            return
        self.queue_up.labels(site, node).set(0 if pq.get("error") else 1)
        queues = pq.get("queues") or {}
        for name in QUEUE_NAMES:
            q = queues.get(name)
            if not isinstance(q, dict):
                continue
            self.queue_messages.labels(site, node, name).set(q.get("messages") or 0)
            self.queue_bytes.labels(site, node, name).set(q.get("bytes") or 0)
            self.queue_age.labels(site, node, name).set(q.get("oldest_age_s") or 0.0)
