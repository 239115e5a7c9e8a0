"""What an alert says besides the numbers: the relay by name, the evidence in words, example
deliveries with their hops, and a link to the incident on the dashboard.

:class:`AlertContext` remembers the newest anomalous events (a bounded LRU by event id: the
correlator's incidents carry only example *ids*) and turns an incident into its ``context``:

* ``relay``: the root cause's tree node by its configured name (``[relays] names``: the tree node
  ``127.0.0.1:47627`` becomes ``relay2``), ``path`` the whole tree path in names;
* ``evidence``: one sentence, e.g. "deliveries through relay2 took p90 41 s in the last 1 min against
  0.4 s in the previous 30 min; 23 of 29 anomalous (79%, against 2% before)" - end-to-end latency
  when the events have one (probes, deliveries' ``delay=``), else the time mail waited at that relay
  (its hop delay), else only the anomaly counts;
* ``examples``: up to ``[correlate] examples`` of the incident's example events that are still
  remembered, each with time, node, kind, outcome, recipient domain, delay and its hops in names
  (``a.example.org -> relay2 (7.2 s) -> mx``);
* ``link``: ``<[alerts] dashboard_url>#incident=<id>`` (the dashboard's incident rows carry the id;
  ``/api/incidents/<id>`` serves the incident as JSON);
* ``incident``: the id itself, which the dashboard and the webhook's ``incident`` label share.

The context is bounded (examples, hops per example, string lengths), so a hostile event cannot make
an alert large.
"""

from __future__ import annotations

import collections
import math
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from .relays import RelayNames, domain_of

__all__ = ["AlertContext", "duration", "seconds"]

_MAX_HOPS = 12
_MAX_TEXT = 200
_NOUN = {"delivery": "deliveries", "probe": "probes", "message": "messages"}


def seconds(v: float) -> str:
    """A delay in words: ``0.35 s``, ``4.2 s``, ``41 s``."""
    if v < 1:
        return f"{v:.2g} s"
    if v < 10:
        return f"{v:.1f} s"
    return f"{v:.0f} s"


def duration(s: float) -> str:
    """A window length in words: ``45 s``, ``1 min``, ``5 min``, ``hour``, ``2 h``."""
    if s == 3600:
        return "hour"
    if s < 60 or s % 60:
        return f"{s:.0f} s"
    if s < 3600 or s % 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h"


def _pct(r: Any) -> str:
    return f"{float(r) * 100:.0f}%" if isinstance(r, int | float) else "?"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _cut(v: Any) -> str:
    return str(v)[:_MAX_TEXT]


class AlertContext:
    """See the module docstring.

    Parameters
    ----------
    relays : RelayNames
        The configured relay names.
    dashboard_url : str
        Public URL of the dashboard (empty: no link).
    history_s : float
        The correlator's history length (the "previous ..." of the sentence).
    examples : int
        Most examples per alert.
    capacity : int
        Anomalous events remembered for the examples.
    """

    def __init__(self, relays: RelayNames, dashboard_url: str = "", history_s: float = 1800.0, examples: int = 5,
                 capacity: int = 5000) -> None:
        self.relays = relays
        self.dashboard_url = dashboard_url
        self.history_s = history_s
        self.n_examples = examples
        self.capacity = capacity
        self._events: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()     # the ingest remembers, the web server searches

    def remember(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        """Keep a compact copy of an (anomalous) event for the examples of later alerts; returns it."""
        eid = str(ev.get("id", ""))
        if not eid:
            return None
        compact = self._compact(ev)
        with self._lock:
            self._events[eid] = compact
            self._events.move_to_end(eid)
            while len(self._events) > self.capacity:
                self._events.popitem(last=False)
        return compact

    def name(self, host: str) -> str:
        return self.relays.name(host)

    def link(self, incident_id: str) -> str:
        if not self.dashboard_url:
            return ""
        base = self.dashboard_url if self.dashboard_url.endswith("/") else self.dashboard_url + "/"
        return f"{base}#incident={quote(str(incident_id), safe='')}"

    # -- the parts ------------------------------------------------------------------------------

    def _compact(self, ev: dict[str, Any]) -> dict[str, Any]:
        f = ev.get("fields") if isinstance(ev.get("fields"), dict) else {}
        assert isinstance(f, dict)
        kind = _cut(ev.get("kind", ""))
        out: dict[str, Any] = {"id": _cut(ev.get("id", "")), "kind": kind, "site": _cut(ev.get("site", "")),
                               "node": _cut(ev.get("node", "")), "t": _num(ev.get("t")), "ts": _cut(ev.get("ts", ""))}
        hops: list[str] = []
        if kind == "delivery":
            out["outcome"] = _cut(f.get("status") or "")
            out["dsn"] = _cut(f.get("dsn") or "")
            out["domain"] = _cut(domain_of(f["to"])) if isinstance(f.get("to"), str) else ""
            out["delay_s"] = _num(f.get("delay"))
            relay = self.name(_cut(f.get("relay") or "none"))
            hops = [_cut(f.get("host") or ev.get("node") or "?"), relay]
            relays = [relay]
        else:
            out["outcome"] = _cut(f.get("outcome") or "")
            lat = _num(f.get("latency_ms"))
            out["delay_s"] = None if lat is None else lat / 1000.0
            out["route"] = _cut(f.get("route") or "")
            raw = f.get("hops") if isinstance(f.get("hops"), list) else []
            assert isinstance(raw, list)
            good = [h for h in raw[-_MAX_HOPS:] if isinstance(h, dict)]
            relays = []
            if good and isinstance(good[0].get("from"), str) and good[0]["from"].split():
                hops.append(self.name(_cut(good[0]["from"]).split()[0]))
                relays.append(hops[-1])
            waited: list[float] = []
            for h in good:
                by = self.name(_cut(h["by"]).split()[0]) if isinstance(h.get("by"), str) and h["by"].split() else "?"
                d = _num(h.get("delay_s"))
                hops.append(f"{by} ({seconds(d)})" if d is not None else by)
                relays.append(by)
                if d is not None and math.isfinite(d):
                    waited.append(d)
            out["waited_s"] = round(sum(waited), 6) if waited else None    # the time spent at its hops
        out["hops"] = hops
        out["relays"] = relays
        return out

    def search(self, q: str = "", relay: str = "", node: str = "", route: str = "", domain: str = "",
               outcome: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """The remembered (anomalous) events that match, newest first, at most ``limit`` (the dashboard's
        ``/api/events``).  ``q`` is a case-insensitive part of the id, node, relay names, route, domain
        or outcome; the others must equal the field (``relay``: one of the relays by name, ``node``:
        ``site/node`` or the node)."""
        ql = q.strip().lower()
        out: list[dict[str, Any]] = []
        with self._lock:
            events = list(self._events.values())
        for ev in reversed(events):
            if relay and relay not in ev.get("relays", ()):
                continue
            if node and node not in (ev["node"], f"{ev['site']}/{ev['node']}"):
                continue
            if (route and ev.get("route") != route) or (domain and ev.get("domain") != domain) \
                    or (outcome and ev.get("outcome") != outcome):
                continue
            if ql and not any(ql in str(v).lower() for v in (ev["id"], ev["node"], ev["site"], ev.get("route"),
                                                               ev.get("domain"), ev.get("outcome"), ev["kind"],
                                                               *ev.get("relays", ()))):
                continue
            out.append(ev)
            if len(out) >= limit:
                break
        return out

    def example_line(self, ex: dict[str, Any]) -> str:
        """One example in words (the mail's list)."""
        when = (datetime.fromtimestamp(ex["t"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ex.get("t") is not None
                else ex.get("ts") or "?")
        parts = [when, f"{ex.get('site')}/{ex.get('node')}", ex.get("kind") or "event"]
        if ex.get("domain"):
            parts.append(f"to {ex['domain']}")
        if ex.get("route"):
            parts.append(f"route {ex['route']}")
        if ex.get("outcome"):
            parts.append(str(ex["outcome"]) + (f" ({ex['dsn']})" if ex.get("dsn") else ""))
        if ex.get("delay_s") is not None:
            parts.append(f"took {seconds(ex['delay_s'])}")
        line = " ".join(parts)
        if ex.get("hops"):
            line += ": " + " -> ".join(ex["hops"])
        return f"{line} [{ex.get('id')}]"

    def sentence(self, inc: dict[str, Any], noun: str) -> str:
        """The evidence in words (and the route most above its latency interval, when one is)."""
        misses = (inc.get("evidence") or {}).get("interval_misses")
        first = misses[0] if isinstance(misses, list) and misses and isinstance(misses[0], dict) else {}
        extra = f"; {_cut(first['text'])}" if first.get("above") and first.get("text") else ""
        return self._sentence(inc, noun) + extra

    def _sentence(self, inc: dict[str, Any], noun: str) -> str:
        e = inc.get("evidence") or {}
        path = [p for p in inc.get("path") or [] if p != "*"]
        where = f"through {self.name(path[-1])}" if path else "at the whole site"
        now = f"in the last {duration(float(e.get('window_s') or 0))}"
        before = f"in the previous {duration(self.history_s)}"
        a, n = e.get("anomalies"), e.get("events")
        counts = (f"{a} of {n} anomalous ({_pct(e.get('anomaly_rate'))}, against {_pct(e.get('history_rate'))} "
                  "before)")
        p90, h90 = _num(e.get("latency_p90_s")), _num(e.get("history_latency_p90_s"))
        if p90 is not None:
            against = f" against {seconds(h90)} {before}" if h90 is not None else ""
            return f"{noun} {where} took p90 {seconds(p90)} {now}{against}; {counts}"
        hop, h_hop = _num(e.get("hop_delay_p50_s")), _num(e.get("history_hop_delay_p90_s"))
        if hop is not None and path:
            against = f" (p90 {seconds(h_hop)} {before})" if h_hop is not None else ""
            return (f"{noun} {where} waited a median {seconds(hop)} at {self.name(path[-1])} {now}{against}; "
                    f"{counts}")
        return f"{a} of {n} {noun} {where} {now} were anomalous ({_pct(e.get('anomaly_rate'))}, against " \
               f"{_pct(e.get('history_rate'))} {before})"

    def describe(self, inc: dict[str, Any]) -> dict[str, Any]:
        """The ``context`` of an incident (see the module docstring)."""
        e = inc.get("evidence") or {}
        ids = [str(i) for i in (e.get("example_event_ids") or [])][: self.n_examples]
        with self._lock:
            examples = [self._events[i] for i in ids if i in self._events]
        kinds = {x["kind"] for x in examples}
        noun = _NOUN.get(next(iter(kinds)), "mails") if len(kinds) == 1 else "mails"
        path = [p for p in inc.get("path") or [] if p != "*"]
        return {
            "incident": str(inc.get("id", "")),
            "relay": self.name(path[-1]) if path else "whole site",
            "path": " > ".join(self.name(p) for p in path) or "whole site",
            "evidence": self.sentence(inc, noun),
            "examples": examples,
            "example_lines": [self.example_line(x) for x in examples],
            "link": self.link(str(inc.get("id", ""))),
        }
