"""The collector's own health: nodes' last-seen and liveness, and an incident when ingest stops.

**Nodes.**  Every valid message of a node (events or a live status) sets its *last seen*
(receive time).  A retained status delivered when the collector subscribes tells only when the
node last spoke: its ``ts``, never later than the receive time.  A node is *online* while its
last status says ``online`` and it was seen within ``missed_heartbeats`` heartbeat periods (the
period its status announces, ``heartbeat_s``, else ``[health] heartbeat_s``) - so a node that
vanished without its last will reaching the broker still goes offline, three heartbeats later by
default.

**Ingest.**  ``ingest_stall_s`` without the broker (also from the start), or without a message once
the collector has received anything, opens an incident of its own, root cause ``collector ingest``, critical, in the
same shape as the correlator's incidents (so the dashboard and the alert channels treat it alike);
it resolves when messages flow again.  The alert for it goes out through the outbox like any
other, and the webhook channel does not depend on the broker.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from mailpulse.config.collector import HealthSettings

from .correlate import Change

__all__ = ["INGEST_CAUSE", "Health", "NodeHealth"]

#: Root cause named by the ingest-stall incident.
INGEST_CAUSE = "collector ingest"


@dataclass
class NodeHealth:
    last_seen: float = 0.0
    state: str = "unknown"          # the last status: online, offline, unknown (none seen yet)
    heartbeat_s: float | None = None
    online: bool = False


class Health:
    """See the module docstring; :meth:`tick` returns the liveness changes and incident changes."""

    def __init__(self, settings: HealthSettings | None = None) -> None:
        self.s = settings or HealthSettings()
        self.nodes: dict[tuple[str, str], NodeHealth] = {}
        self.started = time.time()
        self.last_message: float | None = None
        self.incident: dict[str, Any] | None = None

    def _node(self, site: str, node: str) -> NodeHealth:
        nh = self.nodes.get((site, node))
        if nh is None:
            nh = self.nodes[(site, node)] = NodeHealth()
        return nh

    def seen(self, site: str, node: str, t: float) -> None:
        nh = self._node(site, node)
        nh.last_seen = max(nh.last_seen, t)

    def status(self, site: str, node: str, doc: dict[str, Any] | None, retained: bool, received: float,
               now: float | None = None) -> bool:
        """A validated status (None: cleared); returns whether the node is online now."""
        nh = self._node(site, node)
        if doc is None:
            nh.state = "offline"
        else:
            nh.state = str(doc.get("state"))
            hb = doc.get("heartbeat_s")
            nh.heartbeat_s = float(hb) if isinstance(hb, int | float) else None
            sent = min(float(doc.get("ts") or 0.0), received) if retained else received
            nh.last_seen = max(nh.last_seen, sent)
        now = time.time() if now is None else now
        nh.online = nh.state == "online" and now - nh.last_seen <= self.limit_s(nh)
        return nh.online

    def limit_s(self, nh: NodeHealth) -> float:
        """Silence after which the node counts as offline."""
        return self.s.missed_heartbeats * (nh.heartbeat_s or self.s.heartbeat_s)

    def tick(self, now: float, link_connected: bool, last_message: float | None,
             disconnected_since: float | None) -> tuple[list[tuple[str, str, bool]], list[Change]]:
        """Liveness changes ``(site, node, online)`` and ingest-incident changes at ``now``."""
        flips: list[tuple[str, str, bool]] = []
        for (site, node), nh in self.nodes.items():
            online = nh.state == "online" and now - nh.last_seen <= self.limit_s(nh)
            if online != nh.online:
                nh.online = online
                flips.append((site, node, online))
        return flips, self._ingest(now, link_connected, last_message, disconnected_since)

    def _ingest(self, now: float, connected: bool, last: float | None, down_since: float | None) -> list[Change]:
        stall = self.s.ingest_stall_s
        silent = last is not None and now - last > stall
        down = not connected and down_since is not None and now - down_since > stall
        inc = self.incident
        if (silent or down) and inc is None:
            why = (f"broker unreachable since {time.strftime('%H:%M:%S', time.gmtime(down_since))}Z" if down
                   else f"no message for {now - (last or now):.0f} s")
            iid = hashlib.blake2b(f"{INGEST_CAUSE}|{now:.3f}".encode(), digest_size=6).hexdigest()
            self.incident = {
                "id": iid, "root_cause": INGEST_CAUSE, "path": ["collector", "ingest"], "severity": "critical",
                "state": "open", "opened": now, "updated": now, "resolved": None,
                "affected_nodes": sorted(f"{s}/{n}" for (s, n), nh in self.nodes.items() if nh.online),
                "affected_routes": [],
                "evidence": {"window_s": stall, "events": 0, "anomalies": 0, "anomaly_rate": 0.0, "history_rate": 0.0,
                             "sibling_rate": None, "latency_p50_s": None, "latency_p90_s": None,
                             "latency_p99_s": None, "history_latency_p90_s": None, "hop_delay_p50_s": None,
                             "history_hop_delay_p90_s": None, "example_event_ids": [], "reason": why,
                             "last_message": last},
            }
            return [Change("opened", dict(self.incident))]
        if inc is not None and not silent and not down:
            inc = dict(inc, state="resolved", resolved=now, updated=now)
            self.incident = None
            return [Change("resolved", inc)]
        return []

    def view(self, site: str, node: str) -> dict[str, Any]:
        nh = self.nodes.get((site, node))
        if nh is None:
            return {}
        return {"last_seen": nh.last_seen or None, "online": nh.online, "silent_limit_s": self.limit_s(nh)}
