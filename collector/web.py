"""The dashboard: a threaded stdlib HTTP server inside the collector process, pushed by SSE.

Routes:

* ``/`` - ``collector/static/index.html`` (one file, plain JS, no build step);
* ``/api/state`` - the current :meth:`DashboardState.snapshot` as JSON;
* ``/events`` - Server-Sent Events: ``state`` once at connect, then ``anomaly``, ``incident``,
  ``fleet``, ``probe``, ``heatmap``, ``stats`` and ``health`` (broker link, quarantine counts) events
  as they happen (one JSON ``data`` line each);
* ``/metrics`` - Prometheus exposition (:mod:`mailpulse.collector.metrics`);
* ``/api/incidents/<id>`` - one incident (the id an alert names), JSON; 404 when unknown.

:class:`Hub` fans messages out to every connected SSE client through a bounded queue per
client; a client that does not keep up loses the oldest messages (counted) instead of slowing the
ingest.  A comment line every 10 s keeps idle connections (and proxies) alive.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["RESYNC", "DashboardServer", "DashboardState", "Hub"]

STATIC = Path(__file__).parent / "static"


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

    def add_anomaly(self, ev: dict[str, Any]) -> dict[str, Any]:
        f = ev.get("fields")
        f = f if isinstance(f, dict) else {}
        row = {"id": _cell(ev.get("id")), "site": _cell(ev.get("site")), "node": _cell(ev.get("node")),
               "kind": _cell(ev.get("kind")), "ts": _cell(ev.get("ts")), "score": _cell(ev.get("score")),
               "feature": _cell(ev.get("argmax_feature")), "route": _cell(f.get("route")),
               "relay": _cell(f.get("relay")), "received": _cell(ev.get("received")), "clock": _cell(ev.get("clock"))}
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

    def set_incident(self, inc: dict[str, Any]) -> None:
        inc = dict(inc)
        for k in ("affected_nodes", "affected_routes"):
            vals = inc.get(k) or []
            inc[k] = [_cell(v) for v in vals[:50]] + ([f"... {len(vals) - 50} more"] if len(vals) > 50 else [])
        with self.lock:
            self.incidents[inc["id"]] = inc
            if len(self.incidents) > self.max_incidents:
                order = sorted(self.incidents, key=lambda k: (self.incidents[k]["state"] == "open",
                                                              self.incidents[k]["updated"]))
                for k in order[: len(self.incidents) - self.max_incidents + self.max_incidents // 4]:
                    del self.incidents[k]    # resolved first, oldest first

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
                    "quarantine_folded": self.quarantine_folded, "link": dict(self.link)}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: " + format, *args)

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        dash = self.server.dashboard
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", (STATIC / "index.html").read_bytes())
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
        elif path == "/events":
            self._sse()
        else:
            self._send(404, "text/plain", b"not found\n")

    def _sse(self) -> None:
        dash = self.server.dashboard
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        q = dash.hub.subscribe()
        try:
            first = json.dumps(dash.state.snapshot(), default=str)
            self.wfile.write(f"retry: 1000\nevent: state\ndata: {first}\n\n".encode())
            self.wfile.flush()
            while not dash.stopping.is_set():
                try:
                    ev, data = q.get(timeout=10.0)
                except queue.Empty:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    continue
                chunks: list[str] = []
                while True:
                    if (ev, data) == RESYNC:
                        data = json.dumps(dash.state.snapshot(), default=str)
                    chunks.append(f"event: {ev}\ndata: {data}\n\n")
                    if len(chunks) >= 100:
                        break
                    try:
                        ev, data = q.get_nowait()
                    except queue.Empty:
                        break
                self.wfile.write("".join(chunks).encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            dash.hub.unsubscribe(q)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    dashboard: DashboardServer


class DashboardServer:
    """The HTTP server on its own thread; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(self, state: DashboardState, hub: Hub, metrics: Metrics, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.state, self.hub, self.metrics = state, hub, metrics
        self.stopping = threading.Event()
        self.httpd = _Server((host, port), _Handler)
        self.httpd.dashboard = self
        addr = self.httpd.server_address
        self.host, self.port = str(addr[0]), int(addr[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="collector-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
