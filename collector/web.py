"""The dashboard: a threaded stdlib HTTP server inside the collector process, pushed by SSE.

Routes:

* ``/`` - ``collector/static/index.html`` (one file, plain JS, no build step);
* ``/api/state`` - the current :meth:`DashboardState.snapshot` as JSON;
* ``/events`` - Server-Sent Events: ``state`` once at connect, then ``anomaly``, ``incident``,
  ``fleet``, ``heatmap`` and ``stats`` events as they happen (one JSON ``data`` line each);
* ``/metrics`` - Prometheus exposition (:mod:`mailpulse.collector.metrics`).

:class:`Hub` fans messages out to every connected SSE client through a bounded queue per
client; a client that does not keep up loses the oldest messages (counted) instead of slowing the
ingest.  A comment line every 10 s keeps idle connections (and proxies) alive.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
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


class DashboardState:
    """What the page shows: fleet, recent anomalies, incidents, heatmap, probe fidelity, counters."""

    def __init__(self, max_anomalies: int = 50) -> None:
        self.lock = threading.Lock()
        self.fleet: dict[str, dict[str, Any]] = {}
        self.anomalies: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_anomalies)
        self.incidents: dict[str, dict[str, Any]] = {}
        self.heatmap: dict[str, Any] = {"rows": [], "t0": 0, "bucket_s": 10}
        self.probes: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] = {"events": 0, "duplicates": 0, "anomalies": 0}

    def set_status(self, site: str, node: str, doc: dict[str, Any] | None) -> dict[str, Any]:
        key = f"{site}/{node}"
        d = doc or {}
        row = {"site": site, "node": node, "state": d.get("state", "offline" if doc is None else "unknown"),
               "model_version": d.get("model_version"), "spool_depth": (d.get("spool") or {}).get("depth"),
               "ts": d.get("ts"), "seen": time.time(), "version": d.get("version")}
        with self.lock:
            self.fleet[key] = row
        return row

    def add_anomaly(self, ev: dict[str, Any]) -> dict[str, Any]:
        f = ev.get("fields") or {}
        row = {"id": ev.get("id"), "site": ev.get("site"), "node": ev.get("node"), "kind": ev.get("kind"),
               "ts": ev.get("ts"), "score": ev.get("score"), "feature": ev.get("argmax_feature"),
               "route": f.get("route"), "relay": f.get("relay"), "received": ev.get("received")}
        with self.lock:
            self.anomalies.appendleft(row)
        return row

    def add_probe(self, ev: dict[str, Any]) -> dict[str, Any]:
        f = ev.get("fields") or {}
        integ = f.get("integrity") or {}
        key = f"{ev.get('site')}/{ev.get('node')}/{f.get('route')}"
        row = {"site": ev.get("site"), "node": ev.get("node"), "route": f.get("route"), "outcome": f.get("outcome"),
               "latency_ms": f.get("latency_ms"), "psnr_db": integ.get("psnr_db"), "intact": integ.get("intact"),
               "ts": ev.get("ts")}
        with self.lock:
            self.probes[key] = row
        return row

    def set_incident(self, inc: dict[str, Any]) -> None:
        with self.lock:
            self.incidents[inc["id"]] = inc
            if len(self.incidents) > 200:
                for k in sorted(self.incidents, key=lambda k: self.incidents[k]["updated"])[:50]:
                    if self.incidents[k]["state"] != "open":
                        del self.incidents[k]

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"fleet": sorted(self.fleet.values(), key=lambda r: (r["site"], r["node"])),
                    "anomalies": list(self.anomalies),
                    "incidents": sorted(self.incidents.values(), key=lambda i: (i["state"] != "open", -i["updated"])),
                    "heatmap": self.heatmap, "probes": sorted(self.probes.values(), key=lambda r: str(r["route"])),
                    "stats": dict(self.stats), "server_time": time.time()}


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
