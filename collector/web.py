"""The dashboard: an HTTPS server inside the collector process, pushed by SSE.

Routes:

* ``/`` - ``collector/static/index.html`` with ``/app.js`` and ``/app.css`` (plain JS and CSS, no build
  step; a Content-Security-Policy lets the page run only its own script);
* ``/api/state`` - the current :meth:`DashboardState.snapshot` as JSON;
* ``/events`` - Server-Sent Events: ``state`` once at connect, then ``anomaly``, ``incident``
  (transitions, and open incidents' new evidence every 2 s at most), ``action`` (acknowledged,
  silenced), ``topology``, ``fleet``, ``probe``, ``heatmap``, ``intervals`` (per-route latency
  intervals, every 1 s at most), ``stats`` and ``health`` (broker
  link, quarantine counts) events as they happen (one JSON ``data`` line each);
* ``/metrics`` - Prometheus exposition (:mod:`mailpulse.collector.metrics`);
* ``/api/incidents/<id>`` - one incident (the id an alert names), JSON; 404 when unknown;
* ``/api/events?q=&relay=&node=&route=&domain=&outcome=&limit=`` - the recent anomalous events the
  collector holds for alerts (:meth:`~mailpulse.collector.alertctx.AlertContext.search`), newest
  first, at most ``limit`` (100, at most :data:`MAX_SEARCH`);
* ``POST /api/incidents/<id>/ack``, ``.../silence`` (``{"duration_s": 3600, "note": "..."}``),
  ``.../clear`` - acknowledge, silence or clear an incident (:mod:`mailpulse.collector.actions`),
  pushed to every page as an ``action`` event.  The same credential as the page; the body is
  JSON (``Content-Type: application/json``, which a browser sends cross-site only after a CORS
  preflight this server never answers) of at most :data:`MAX_BODY` bytes; a request with an
  ``Origin`` other than this server is refused, so another site cannot act through a logged-in
  browser.

:class:`Hub` fans messages out to every connected SSE client through a bounded queue per
client; a client that does not keep up loses the oldest messages (counted) instead of slowing the
ingest.  A comment line every 10 s keeps idle connections (and proxies) alive.

Every route needs a credential unless ``[web] auth = false`` (then the page carries a warning);
TLS, the credentials, the caps on connections, SSE streams, request sizes and rates, and the
fixed thread count are in :mod:`mailpulse.collector.webserver`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import math
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from mailpulse.config.collector import WebSettings

from .actions import IncidentActions
from .metrics import Metrics
from .webserver import (
    AUTH_FAILURE_COST,
    BoundedServer,
    Guard,
    LimitedReader,
    RateLimiter,
    RequestTooLarge,
    SsePusher,
    WebMetrics,
    server_context,
)

log = logging.getLogger(__name__)

__all__ = ["RESYNC", "DashboardServer", "DashboardState", "Hub"]

STATIC = Path(__file__).parent / "static"


#: The page's other files (no build step: served as they are in the package) and their types.
STATIC_FILES = {"/app.js": "text/javascript; charset=utf-8", "/app.css": "text/css; charset=utf-8"}
#: The page loads nothing but its own files and talks only to its own server.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

#: Points kept in an incident's ``history`` (opened, severity changes, resolved).
MAX_HISTORY = 50

#: The query fields of ``/api/events`` and the most events it returns.
SEARCH_FIELDS = ("q", "relay", "node", "route", "domain", "outcome", "limit")
MAX_SEARCH = 500

#: The incident actions that can be posted, and the largest body of such a request.
ACTIONS = ("ack", "silence", "clear")
MAX_BODY = 2048

#: The queue entry that tells a client's writer to send a fresh ``state`` snapshot.
RESYNC = ("state", "")


class Hub:
    """Broadcasts ``(event, data)`` pairs to SSE subscribers.

    Each subscriber has a bounded queue (``per_client``).  A subscriber too slow to keep up (a
    busy browser, a slow link) loses no state: when its queue is full, the queue is emptied and
    replaced by one :data:`RESYNC` entry, for which the writer sends a fresh ``state`` snapshot
    (fleet, anomalies, incidents, probes, heatmap, counters) taken when it gets there; the page
    then rebuilds from it.  ``dropped`` counts the messages replaced so (the one that found the
    queue full included), ``resyncs`` the snapshots.
    """

    def __init__(self, per_client: int = 1000) -> None:
        self.per_client = per_client
        self._clients: set[queue.Queue[tuple[str, str]]] = set()
        self._lock = threading.Lock()
        self.dropped = 0
        self.resyncs = 0
        self.sent = 0
        #: called after each publish (the SSE writer's wake-up)
        self.on_publish: Callable[[], None] | None = None

    def subscribe(self) -> queue.Queue[tuple[str, str]]:
        q: queue.Queue[tuple[str, str]] = queue.Queue(self.per_client)
        with self._lock:
            self._clients.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[tuple[str, str]]) -> None:
        with self._lock:
            self._clients.discard(q)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def publish(self, event: str, data: Any) -> None:
        text = json.dumps(data, separators=(",", ":"), default=str)
        with self._lock:
            clients = list(self._clients)
            for q in clients:
                try:
                    q.put_nowait((event, text))
                    self.sent += 1
                except queue.Full:
                    # the snapshot the writer takes for RESYNC includes this message's change
                    self.dropped += 1
                    while True:
                        try:
                            q.get_nowait()
                            self.dropped += 1
                        except queue.Empty:
                            break
                    q.put_nowait(RESYNC)
                    self.resyncs += 1
        if self.on_publish is not None:
            self.on_publish()


def _cell(v: Any, n: int = 200) -> Any:
    """A value the page can show: finite numbers, booleans, None, strings cut to ``n`` characters;
    anything else as its (cut) text."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v if math.isfinite(v) else str(v)
    return (v if isinstance(v, str) else str(v))[:n]


class DashboardState:
    """What the page shows: fleet, recent anomalies, incidents, heatmap, probe fidelity, counters,
    the quarantine and the collector's own link.

    Bounded whatever the nodes send: every row's values are display values (:func:`_cell`), and
    every table has a size limit (``max_*``), so ``/api/state`` stays small.
    """

    def __init__(self, max_anomalies: int = 50, max_nodes: int = 1000, max_probes: int = 200,
                 max_incidents: int = 200, max_quarantine: int = 50) -> None:
        self.lock = threading.Lock()
        self.max_nodes, self.max_probes, self.max_incidents = max_nodes, max_probes, max_incidents
        self.max_quarantine = max_quarantine
        self.fleet: dict[str, dict[str, Any]] = {}
        self.anomalies: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_anomalies)
        self.incidents: dict[str, dict[str, Any]] = {}
        self.heatmap: dict[str, Any] = {"rows": [], "t0": 0, "bucket_s": 10}
        self.probes: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] = {"events": 0, "duplicates": 0, "anomalies": 0, "quarantined": 0}
        self.quarantine: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.quarantine_folded = 0
        self.link: dict[str, Any] = {}
        self.actions: IncidentActions | None = None      # acknowledgements and silences, by incident id
        self.topology: dict[str, Any] = {"children": [], "nodes": 0, "truncated": 0}
        #: per-route latency intervals (:meth:`~.intervals.IntervalBook.view`, bounded there)
        self.intervals: dict[str, Any] = {"level": 0.9, "routes": []}

    @staticmethod
    def _bounded_put(d: dict[str, dict[str, Any]], key: str, row: dict[str, Any], limit: int) -> None:
        d.pop(key, None)
        d[key] = row
        while len(d) > limit:
            d.pop(next(iter(d)))            # the least recently updated

    def set_status(self, site: str, node: str, doc: dict[str, Any] | None,
                   view: dict[str, Any] | None = None) -> dict[str, Any]:
        key = f"{site}/{node}"
        d = doc or {}
        v = view or {}
        spool = d.get("spool")
        row = {"site": _cell(site), "node": _cell(node),
               "state": _cell(d.get("state", "offline" if doc is None else "unknown")),
               "model_version": _cell(d.get("model_version")),
               "spool_depth": _cell(spool.get("depth") if isinstance(spool, dict) else None),
               "ts": _cell(d.get("ts")), "seen": time.time(), "version": _cell(d.get("version"))}
        row.update({k: _cell(x) for k, x in v.items()})
        with self.lock:
            self._bounded_put(self.fleet, key, row, self.max_nodes)
        return row

    def set_online(self, site: str, node: str, online: bool, view: dict[str, Any] | None = None) -> dict[str, Any]:
        """The node went on- or offline by its heartbeats (not by its status)."""
        key = f"{site}/{node}"
        with self.lock:
            row = dict(self.fleet.get(key) or {"site": _cell(site), "node": _cell(node), "state": "unknown"})
            row.update({k: _cell(x) for k, x in (view or {}).items()})
            row["online"] = online
            if not online and row.get("state") == "online":
                row["state"] = "silent"
            elif online and row.get("state") == "silent":
                row["state"] = "online"
            self._bounded_put(self.fleet, key, row, self.max_nodes)
        return row

    def add_anomaly(self, ev: dict[str, Any], named: dict[str, Any] | None = None) -> dict[str, Any]:
        """An anomaly row; ``named`` (the alert context's compact event) adds the relays by name, the
        recipient domain and the outcome the page filters by."""
        f = ev.get("fields")
        f = f if isinstance(f, dict) else {}
        n = named or {}
        row = {"id": _cell(ev.get("id")), "site": _cell(ev.get("site")), "node": _cell(ev.get("node")),
               "kind": _cell(ev.get("kind")), "ts": _cell(ev.get("ts")), "score": _cell(ev.get("score")),
               "feature": _cell(ev.get("argmax_feature")), "route": _cell(f.get("route")),
               "relay": _cell(f.get("relay")), "received": _cell(ev.get("received")), "clock": _cell(ev.get("clock")),
               "relays": [_cell(r) for r in (n.get("relays") or [])[:12]], "domain": _cell(n.get("domain")),
               "outcome": _cell(n.get("outcome"))}
        with self.lock:
            self.anomalies.appendleft(row)
        return row

    def add_probe(self, ev: dict[str, Any]) -> dict[str, Any]:
        f = ev.get("fields")
        f = f if isinstance(f, dict) else {}
        integ = f.get("integrity")
        integ = integ if isinstance(integ, dict) else {}
        key = f"{ev.get('site')}/{ev.get('node')}/{str(f.get('route'))[:64]}"
        row = {"site": _cell(ev.get("site")), "node": _cell(ev.get("node")), "route": _cell(f.get("route")),
               "outcome": _cell(f.get("outcome")), "latency_ms": _cell(f.get("latency_ms")),
               "psnr_db": _cell(integ.get("psnr_db")), "intact": _cell(integ.get("intact")), "ts": _cell(ev.get("ts"))}
        with self.lock:
            self._bounded_put(self.probes, key, row, self.max_probes)
        return row

    def add_quarantine(self, entries: list[tuple[str, str, str]]) -> None:
        """Count quarantine records per (site, node, reason); beyond ``max_quarantine`` keys, as other."""
        with self.lock:
            for key in entries:
                if key in self.quarantine or len(self.quarantine) < self.max_quarantine:
                    self.quarantine[key] += 1
                else:
                    self.quarantine_folded += 1

    def set_incident(self, inc: dict[str, Any], kind: str = "evidence", at: float | None = None) -> dict[str, Any]:
        """Store an incident as the page shows it; ``kind`` is what happened (``opened``, ``severity``,
        ``resolved``: a point of its ``history``, at most :data:`MAX_HISTORY`; ``evidence``: new numbers
        only, stamped ``evidence_at``).  Returns the stored row (what the SSE message carries)."""
        inc = dict(inc)
        for k in ("affected_nodes", "affected_routes"):
            vals = inc.get(k) or []
            inc[k] = [_cell(v) for v in vals[:50]] + ([f"... {len(vals) - 50} more"] if len(vals) > 50 else [])
        now = time.time() if at is None else at
        with self.lock:
            old = self.incidents.get(inc["id"]) or {}
            history = list(old.get("history") or [])
            if kind != "evidence":
                t = {"opened": inc.get("opened"), "resolved": inc.get("resolved")}.get(kind) or inc.get("updated")
                history.append({"t": t, "kind": kind, "severity": inc.get("severity")})
                if len(history) > MAX_HISTORY:
                    history = history[:1] + history[-(MAX_HISTORY - 1):]
            inc["history"] = history
            inc["evidence_at"] = now
            self.incidents[inc["id"]] = inc
            if len(self.incidents) > self.max_incidents:
                order = sorted(self.incidents, key=lambda k: (self.incidents[k]["state"] == "open",
                                                              self.incidents[k]["updated"]))
                for k in order[: len(self.incidents) - self.max_incidents + self.max_incidents // 4]:
                    del self.incidents[k]    # resolved first, oldest first
            return inc

    def health(self) -> dict[str, Any]:
        """The collector's link and the quarantine counts (the page's ``health`` message)."""
        with self.lock:
            return {"link": dict(self.link), "quarantine_folded": self.quarantine_folded,
                    "quarantine": [{"site": s, "node": n, "reason": r, "count": c}
                                   for (s, n, r), c in self.quarantine.most_common()]}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"fleet": sorted(self.fleet.values(), key=lambda r: (str(r["site"]), str(r["node"]))),
                    "anomalies": list(self.anomalies),
                    "incidents": sorted(self.incidents.values(), key=lambda i: (i["state"] != "open", -i["updated"])),
                    "heatmap": self.heatmap, "probes": sorted(self.probes.values(), key=lambda r: str(r["route"])),
                    "stats": dict(self.stats), "server_time": time.time(),
                    "quarantine": [{"site": s, "node": n, "reason": r, "count": c}
                                   for (s, n, r), c in self.quarantine.most_common()],
                    "quarantine_folded": self.quarantine_folded, "link": dict(self.link),
                    "actions": self.actions.view() if self.actions is not None else {},
                    "actions_error": self.actions.load_error if self.actions is not None else None,
                    "topology": self.topology, "intervals": self.intervals}


#: Shown at the top of the page when ``[web] auth = false``.
INSECURE_BANNER = (b'<div id="insecure" style="background:#b00020;color:#fff;padding:6px 12px;font-weight:bold">'
                   b"Authentication is off ([web] auth = false): anyone who can reach this port reads this "
                   b"dashboard, /api/state and /metrics.</div>")


def render_sse(q: queue.Queue[tuple[str, str]], snapshot: Callable[[], str], most: int = 100) -> bytes:
    """What a client's queue holds as SSE text (at most ``most`` events; RESYNC -> a fresh state)."""
    chunks: list[str] = []
    while len(chunks) < most:
        try:
            ev, data = q.get_nowait()
        except queue.Empty:
            break
        if (ev, data) == RESYNC:
            data = snapshot()
        chunks.append(f"event: {ev}\ndata: {data}\n\n")
    return "".join(chunks).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.rfile = LimitedReader(self.rfile, self.server.settings.max_request_bytes)  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True      # one request per connection: a worker is never held by keep-alive
        try:
            self.handle_one_request()
        except RequestTooLarge:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", "GET"
            self._send(431, "text/plain", b"request header fields too large\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.dashboard.web_metrics.requests.labels(str(code)).inc()
        super().send_response(code, message)

    def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _admit(self, path: str, body: bool = False) -> bool:
        """Rate limit, no bodies (``body``: at most :data:`MAX_BODY` bytes), authentication; False when an
        error was sent."""
        dash = self.server.dashboard
        addr = str(self.client_address[0])
        wait = dash.limiter.take(addr)
        if wait:
            dash.web_metrics.rate_limited.inc()
            self._send(429, "text/plain", b"too many requests\n", {"Retry-After": str(max(1, round(wait)))})
            return False
        length = self.headers.get("Content-Length", "0").strip()
        if self.headers.get("Transfer-Encoding") or (length not in ("", "0") and not (
                body and length.isdigit() and int(length) <= MAX_BODY)):
            self._send(413, "text/plain", b"request bodies are not accepted\n" if not body else
                       f"a request body is at most {MAX_BODY} bytes\n".encode())
            return False
        verdict = dash.guard.check(self.headers.get("Authorization"), path)
        if verdict == 401:
            dash.web_metrics.auth_failures.inc()
            dash.limiter.charge(addr, AUTH_FAILURE_COST)
            self._send(401, "text/plain", b"authentication required\n",
                       {"WWW-Authenticate": 'Basic realm="mailpulse", charset="UTF-8"'})
            return False
        if verdict == 403:
            self._send(403, "text/plain", b"this credential may read only /metrics\n")
            return False
        return True

    def do_POST(self) -> None:
        """``POST /api/incidents/<id>/ack|silence|clear`` with a small JSON body (see the module docstring)."""
        path = self.path.split("?", 1)[0]
        dash = self.server.dashboard
        parts = path.split("/")
        if len(parts) != 5 or parts[:3] != ["", "api", "incidents"] or parts[4] not in ACTIONS:
            self._send(405, "text/plain", b"only incident actions are posted\n", {"Allow": "GET"})
            return
        if not self._admit(path, body=True):
            return
        # a browser sends this content type cross-site only after a CORS preflight, which is never
        # answered here; and an Origin, when sent, must be this server
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            self._send(415, "application/json", b'{"error": "send the action as application/json"}\n')
            return
        origin = self.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != self.headers.get("Host", ""):
            self._send(403, "application/json", b'{"error": "actions are taken from the dashboard\'s own page"}\n')
            return
        iid, what = urllib.parse.unquote(parts[3]), parts[4]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except (ValueError, RecursionError) as e:
            self._send(400, "application/json", json.dumps({"error": f"bad request body: {str(e)[:100]}"}).encode())
            return
        with dash.state.lock:
            inc = dash.state.incidents.get(iid)
        if inc is None or dash.actions is None:
            self._send(404, "application/json", b'{"error": "no such incident"}\n')
            return
        by, note, cause = self._user(), body.get("note"), str(inc.get("root_cause", ""))
        note = note if isinstance(note, str) else ""
        try:
            if what == "ack":
                view = dash.actions.acknowledge(iid, cause, by, note)
            elif what == "silence":
                d = body.get("duration_s")
                view = dash.actions.silence(iid, d if isinstance(d, int | float) and not isinstance(d, bool)
                                            else float("nan"), cause, by, note)
            else:
                view = dash.actions.clear(iid)
        except ValueError as e:
            self._send(400, "application/json", json.dumps({"error": str(e)}).encode())
            return
        except OSError as e:
            log.error("incident action not saved: %s", e)
            self._send(500, "application/json", json.dumps({"error": f"not saved: {e.strerror}"}).encode())
            return
        log.info("incident %s: %s by %s", iid, what, by or "(no user)")
        dash.hub.publish("action", view)
        self._send(200, "application/json", json.dumps(view).encode())

    def _user(self) -> str:
        """The user name of the request's basic-auth credential (``token`` for a bearer token)."""
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer":
            return "token"
        try:
            return base64.b64decode(value.strip(), validate=True).partition(b":")[0].decode(errors="replace")[:64]
        except (ValueError, binascii.Error):
            return ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        dash = self.server.dashboard
        if not self._admit(path):
            return
        if path in ("/", "/index.html"):
            page = (STATIC / "index.html").read_bytes()
            if not dash.guard.auth:
                page = page.replace(b"<body>", b"<body>" + INSECURE_BANNER, 1)
            self._send(200, "text/html; charset=utf-8", page, {"Content-Security-Policy": CSP})
        elif path in STATIC_FILES:
            self._send(200, STATIC_FILES[path], (STATIC / path[1:]).read_bytes())
        elif path == "/api/state":
            self._send(200, "application/json", json.dumps(dash.state.snapshot(), default=str).encode())
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, dash.metrics.exposition())
        elif path.startswith("/api/incidents/"):        # an alert's incident id -> the incident
            inc = dash.state.incidents.get(urllib.parse.unquote(path[len("/api/incidents/"):]))
            if inc is None:
                self._send(404, "application/json", b'{"error": "no such incident"}\n')
            else:
                self._send(200, "application/json", json.dumps(inc, default=str).encode())
        elif path == "/api/events":
            self._events_search()
        elif path == "/events":
            self._sse()
        else:
            self._send(404, "text/plain", b"not found\n")

    def _events_search(self) -> None:
        """``/api/events?q=&relay=&node=&route=&domain=&outcome=&limit=``: recent anomalous events."""
        dash = self.server.dashboard
        args = {k: v[-1][:200] for k, v in urllib.parse.parse_qs(self.path.partition("?")[2]).items()
                if k in SEARCH_FIELDS}
        try:
            limit = min(max(int(args.pop("limit", "100")), 1), MAX_SEARCH)
        except ValueError:
            self._send(400, "application/json", b'{"error": "limit is a whole number"}\n')
            return
        found = dash.search(limit=limit, **args) if dash.search is not None else []
        self._send(200, "application/json", json.dumps({"events": found, "limit": limit}, default=str).encode())

    def _sse(self) -> None:
        dash = self.server.dashboard
        if not dash.pusher.reserve(self.server.settings.max_sse_clients):
            self.server.metrics.refused.labels("sse_full").inc()
            self._send(503, "text/plain", b"too many live connections\n", {"Retry-After": "10"})
            return
        q = dash.hub.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
        except OSError:
            dash.hub.unsubscribe(q)
            dash.pusher.release()
            return
        first = json.dumps(dash.state.snapshot(), default=str)
        self.server.detach()
        dash.pusher.add(self.connection, q, f"retry: 1000\nevent: state\ndata: {first}\n\n".encode())


class _Server(BoundedServer):
    dashboard: DashboardServer


class DashboardServer:
    """The HTTP(S) server on its own thread; ``port=0`` picks a free port (see :attr:`url`).

    ``settings`` holds TLS, credentials and caps (a :class:`WebSettings` whose passwords are
    resolved); the server refuses to start with ``auth`` on and no password, or ``tls`` on and no
    certificate.
    """

    def __init__(self, state: DashboardState, hub: Hub, metrics: Metrics, settings: WebSettings,
                 search: Callable[..., list[dict[str, Any]]] | None = None,
                 actions: IncidentActions | None = None) -> None:
        self.state, self.hub, self.metrics, self.settings = state, hub, metrics, settings
        self.search = search
        if actions is not None:
            state.actions = actions
        self.actions = state.actions
        self.stopping = threading.Event()
        self.guard = Guard.from_settings(settings)
        self.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
        self.web_metrics = WebMetrics(metrics.registry)
        self.web_metrics.auth_enabled.set(1 if settings.auth else 0)
        self.web_metrics.tls_enabled.set(1 if settings.tls else 0)
        ctx = None
        if settings.tls:
            if not (settings.cert_file and settings.key_file):
                raise ValueError("[web] tls is on but cert_file/key_file are not set")
            ctx = server_context(settings.cert_file, settings.key_file)
        self.pusher = SsePusher(render_sse, lambda: json.dumps(state.snapshot(), default=str), hub.unsubscribe,
                                self.web_metrics)
        hub.on_publish = self.pusher.wake
        self.httpd = _Server((settings.host, settings.port), _Handler, settings, self.web_metrics, ctx)
        self.httpd.dashboard = self
        addr = self.httpd.server_address
        self.host, self.port = str(addr[0]), int(addr[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="collector-web", daemon=True)
        if not settings.auth:
            log.warning("dashboard authentication is OFF ([web] auth = false): anyone who can reach %s reads the "
                        "dashboard, /api/state and /metrics", self.url)
        if not settings.tls:
            log.warning("dashboard TLS is OFF ([web] tls = false): %s", "credentials cross the network in clear"
                        if settings.auth else "everything crosses the network in clear")

    @property
    def url(self) -> str:
        return f"{'https' if self.settings.tls else 'http'}://{self.host}:{self.port}/"

    def start(self) -> None:
        self.pusher.start()
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.pusher.stop()
