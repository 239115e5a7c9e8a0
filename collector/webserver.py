"""The dashboard's HTTP(S) server machinery: TLS, authentication, caps and a bounded thread count.

What :mod:`mailpulse.collector.web` serves runs on :class:`BoundedServer`:

* **Threads do not grow with connections.**  One thread accepts; a fixed pool of ``workers``
  threads does the TLS handshake, reads the request and answers it; one :class:`SsePusher` thread
  writes every live-update (SSE) stream, whatever their number, through non-blocking sockets and
  a selector.  An SSE request is answered by a worker (authentication, headers) and then handed
  over to the pusher, and the worker is free again.
* **Connections are capped**: at most ``max_connections`` connections are being served or wait for
  a worker (a new one beyond that is closed at once), at most ``max_sse_clients`` SSE streams (one
  more gets 503).  A connection that has not finished its request (handshake, request line,
  headers, and the answer) within ``request_timeout_s`` is cut off by the accept thread, so slow
  or silent clients cannot hold the workers.
* **Requests are capped**: request line plus headers at most ``max_request_bytes`` (431), no request
  bodies (413) but a JSON body of at most 2 KiB on the incident actions (POST), one request per
  connection (``Connection: close``), GET otherwise.
* **Rates are capped** per client address by a token bucket (``rate_per_s``, ``rate_burst``; 429
  with ``Retry-After``); a failed authentication costs :data:`AUTH_FAILURE_COST` tokens.
* **Authentication** (:class:`Guard`): HTTP basic auth or the password alone as a bearer token;
  the dashboard credential reads everything, the metrics credential only ``/metrics`` (403 for the
  rest).  Secrets are compared in constant time.

An SSE client that stops reading keeps at most :data:`SSE_HIGH_WATER` bytes here (then its queue in
the :class:`~mailpulse.collector.web.Hub` fills and collapses into one resync), and is cut off
after :data:`SSE_STALL_S` seconds without progress.

Metrics (on the collector's registry): ``mailpulse_web_requests_total{code}``,
``mailpulse_web_auth_failures_total``, ``mailpulse_web_rate_limited_total``,
``mailpulse_web_refused_connections_total{reason}``, ``mailpulse_web_sse_clients``,
``mailpulse_web_sse_dropped_total``, ``mailpulse_web_auth_enabled``, ``mailpulse_web_tls_enabled``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hmac
import itertools
import logging
import queue
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from mailpulse.config.collector import WebSettings

log = logging.getLogger(__name__)

__all__ = [
    "AUTH_FAILURE_COST",
    "SSE_HIGH_WATER",
    "SSE_STALL_S",
    "BoundedServer",
    "Guard",
    "LimitedReader",
    "RateLimiter",
    "RequestTooLarge",
    "SsePusher",
    "WebMetrics",
    "server_context",
]

#: Tokens a failed authentication costs its address (slows password guessing down this many times).
AUTH_FAILURE_COST = 5
#: Bytes of SSE output held for one client before its messages are left in its Hub queue.
SSE_HIGH_WATER = 256 * 1024
#: An SSE client with output pending and no progress for this long is cut off.
SSE_STALL_S = 30.0
#: Period of the SSE keep-alive comment.
SSE_KEEPALIVE_S = 10.0
_CHUNK = 16384


class WebMetrics:
    """The web server's own metric families (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter("mailpulse_web_requests_total", "HTTP requests answered, by status code.", ["code"],
                                registry=r)
        self.auth_failures = Counter("mailpulse_web_auth_failures_total",
                                     "Requests refused for a missing or wrong credential (401).", registry=r)
        self.rate_limited = Counter("mailpulse_web_rate_limited_total",
                                    "Requests refused by the per-address rate limit (429).", registry=r)
        self.refused = Counter("mailpulse_web_refused_connections_total",
                               "Connections closed before a request: too many connections, TLS handshake failed, "
                               "request timed out.", ["reason"], registry=r)
        self.sse_clients = Gauge("mailpulse_web_sse_clients", "Open live-update (SSE) connections.", registry=r)
        self.sse_dropped = Counter("mailpulse_web_sse_dropped_total",
                                   "SSE connections cut off because the client stopped reading.", registry=r)
        self.auth_enabled = Gauge("mailpulse_web_auth_enabled",
                                  "1 when the dashboard, /api/state and /metrics require a credential.", registry=r)
        self.tls_enabled = Gauge("mailpulse_web_tls_enabled", "1 when the dashboard is served over TLS.", registry=r)


# --------------------------------------------------------------------------------------------
# authentication and rate limits
# --------------------------------------------------------------------------------------------


class RateLimiter:
    """Token buckets per client address, at most ``max_clients`` remembered (least recent forgotten)."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 4096) -> None:
        self.rate, self.burst, self.max_clients = rate_per_s, float(burst), max_clients
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def take(self, addr: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take ``cost`` tokens; 0 when allowed, else the seconds until it would be."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(addr, (self.burst, t))
            tokens = min(self.burst, tokens + (t - last) * self.rate)
            wait = 0.0
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / self.rate
            self._buckets[addr] = (tokens, t)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    def charge(self, addr: str, cost: float) -> None:
        """Take ``cost`` tokens even into debt (a failed authentication)."""
        t = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(addr, (self.burst, t))
            tokens = min(self.burst, tokens + (t - last) * self.rate) - cost
            self._buckets[addr] = (max(tokens, -self.burst), t)


@dataclass(frozen=True)
class _Credential:
    user: bytes
    secret: bytes
    metrics_only: bool


@dataclass
class Guard:
    """Who may read what (see the module docstring); ``auth=False`` lets everyone read everything."""

    auth: bool
    credentials: list[_Credential] = field(default_factory=list)

    @classmethod
    def from_settings(cls, w: WebSettings) -> Guard:
        creds = []
        if w.password is not None:
            creds.append(_Credential(w.username.encode(), w.password.encode(), False))
        if w.metrics_password is not None:
            creds.append(_Credential(w.metrics_username.encode(), w.metrics_password.encode(), True))
        if w.auth and not creds:
            raise ValueError("[web] auth is on but no password is set")
        return cls(w.auth, creds)

    def _match(self, user: bytes | None, secret: bytes) -> _Credential | None:
        found = None
        for c in self.credentials:   # compare with every credential: the time does not tell which matched
            ok = hmac.compare_digest(c.secret, secret) & (user is None or hmac.compare_digest(c.user, user))
            if ok:
                found = c
        return found

    def check(self, authorization: str | None, path: str) -> int:
        """200 when the request may go on, 401 (no or a wrong credential) or 403 (the metrics
        credential asking for more than ``/metrics``)."""
        if not self.auth:
            return 200
        if not authorization:
            return 401
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        cred = None
        if scheme.lower() == "basic":
            try:
                user, sep, secret = base64.b64decode(value, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return 401
            cred = self._match(user, secret) if sep else None
        elif scheme.lower() == "bearer":
            cred = self._match(None, value.encode())
        if cred is None:
            return 401
        if cred.metrics_only and path != "/metrics":
            return 403
        return 200


# --------------------------------------------------------------------------------------------
# request size
# --------------------------------------------------------------------------------------------


class RequestTooLarge(Exception):
    """The request line and headers exceed the cap."""


class LimitedReader:
    """A file wrapper that raises :class:`RequestTooLarge` once more than ``limit`` bytes were read."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.left = raw, limit

    def _count(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise RequestTooLarge
        return data

    def readline(self, size: int = -1) -> bytes:
        cap = self.left + 1 if size < 0 else min(size, self.left + 1)
        return self._count(self.raw.readline(cap))

    def read(self, size: int = -1) -> bytes:
        cap = self.left + 1 if size < 0 else min(size, self.left + 1)
        return self._count(self.raw.read(cap))

    def close(self) -> None:
        self.raw.close()


# --------------------------------------------------------------------------------------------
# SSE: one thread for every stream
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _SseClient:
    sock: socket.socket
    queue: queue.Queue[tuple[str, str]]
    out: bytearray
    last_send: float
    last_progress: float
    want_write: bool = False


class SsePusher:
    """Writes every SSE stream from one thread (see the module docstring).

    ``next_messages(q, snapshot)`` turns what a client's queue holds into bytes (at most a batch);
    ``snapshot()`` gives the text of a fresh ``state`` event (computed at most once per round);
    ``on_close(q)`` is called when a client goes.
    """

    def __init__(self, render: Callable[[queue.Queue[tuple[str, str]], Callable[[], str]], bytes],
                 snapshot: Callable[[], str], on_close: Callable[[queue.Queue[tuple[str, str]]], None],
                 metrics: WebMetrics) -> None:
        self.render, self.snapshot, self.on_close, self.metrics = render, snapshot, on_close, metrics
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._woken = False
        self._new: queue.SimpleQueue[_SseClient] = queue.SimpleQueue()
        self.clients: set[_SseClient] = set()
        self._count = 0
        self._count_lock = threading.Lock()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-sse", daemon=True)

    @property
    def count(self) -> int:
        with self._count_lock:
            return self._count

    def reserve(self, cap: int) -> bool:
        """Count one more stream if fewer than ``cap`` are open (a worker calls this first)."""
        with self._count_lock:
            if self._count >= cap:
                return False
            self._count += 1
            self.metrics.sse_clients.set(self._count)
            return True

    def release(self) -> None:
        with self._count_lock:
            self._count -= 1
            self.metrics.sse_clients.set(self._count)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake()
        self._thread.join(5)

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"\0")

    def add(self, sock: socket.socket, q: queue.Queue[tuple[str, str]], first: bytes) -> None:
        """Take over ``sock`` (headers already sent); ``first`` is written before anything else."""
        sock.setblocking(False)
        now = time.monotonic()
        self._new.put(_SseClient(sock, q, bytearray(first), now, now))
        self.wake()

    def _drop(self, c: _SseClient) -> None:
        self.clients.discard(c)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.sel.unregister(c.sock)
        with contextlib.suppress(OSError):
            c.sock.close()
        self.on_close(c.queue)
        self.release()

    def _send(self, c: _SseClient, now: float) -> bool:
        """Write what the socket takes; False when the client is gone."""
        while c.out:
            try:
                n = c.sock.send(c.out[:_CHUNK])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except (OSError, ValueError):
                return False
            if n <= 0:
                break
            del c.out[:n]
            c.last_progress = now
        want = bool(c.out)
        if want != c.want_write:
            c.want_write = want
            self.sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), c)
        return True

    def _readable(self, c: _SseClient) -> bool:
        """The client sent something or hung up; False when it is gone (it has nothing to say)."""
        try:
            data = c.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return True
        except (OSError, ValueError):
            return False
        return bool(data)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._round()
        finally:
            for c in list(self.clients):
                self._drop(c)
            self.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _round(self) -> None:
        events = self.sel.select(1.0)
        now = time.monotonic()
        gone: set[_SseClient] = set()
        for key, mask in events:
            c = key.data
            if c is None:
                self._woken = False     # first: a wake-up after this point sends a byte again
                with contextlib.suppress(BlockingIOError, OSError):
                    self._wake_r.recv(4096)
                continue
            if mask & selectors.EVENT_READ and not self._readable(c):
                gone.add(c)
        while True:
            try:
                c = self._new.get_nowait()
            except queue.Empty:
                break
            self.clients.add(c)
            self.sel.register(c.sock, selectors.EVENT_READ, c)
        snap: list[str] = []

        def snapshot() -> str:
            if not snap:
                snap.append(self.snapshot())
            return snap[0]

        for c in list(self.clients):
            if c in gone:
                continue
            if len(c.out) < SSE_HIGH_WATER:
                c.out += self.render(c.queue, snapshot)
            if not c.out and now - c.last_send >= SSE_KEEPALIVE_S:
                c.out += b": keep-alive\n\n"
            if c.out:
                c.last_send = now
                if not self._send(c, now):
                    gone.add(c)
                elif c.out and now - c.last_progress > SSE_STALL_S:
                    self.metrics.sse_dropped.inc()
                    gone.add(c)
            else:
                c.last_progress = now
        for c in gone:
            self._drop(c)


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The TLS context of the dashboard (TLS 1.2 or newer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class BoundedServer(socketserver.TCPServer):
    """A TCP server with a fixed worker pool, optional TLS, a connection cap and a deadline per
    connection (see the module docstring).  A handler hands a socket over with :meth:`detach`."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any, settings: WebSettings, metrics: WebMetrics,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.settings, self.metrics, self.ssl_context = settings, metrics, ssl_context
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="collector-web")
        self._lock = threading.Lock()
        self._active: dict[int, tuple[socket.socket, float]] = {}
        self._ids = itertools.count()
        self._local = threading.local()
        super().__init__(address, handler)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._active) >= self.settings.max_connections
            if not full:
                key = next(self._ids)
                self._active[key] = (request, time.monotonic())
        if full:
            self.metrics.refused.labels("connections").inc()
            self.shutdown_request(request)
            return
        self.pool.submit(self._work, key, request, client_address)

    def _work(self, key: int, request: socket.socket, client_address: Any) -> None:
        conn: socket.socket = request
        self._local.key, self._local.detached = key, False
        try:
            request.settimeout(self.settings.request_timeout_s)
            if self.ssl_context is not None:
                try:
                    conn = self.ssl_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.metrics.refused.labels("tls").inc()
                    log.debug("web: TLS handshake with %s failed: %s", client_address[0], e)
                    conn = request
                    return
                with self._lock:
                    if key in self._active:
                        self._active[key] = (conn, self._active[key][1])
            self.finish_request(conn, client_address)
        except TimeoutError:
            log.debug("web: request from %s timed out", client_address[0])
        except Exception:
            log.exception("web: request from %s failed", client_address[0])
        finally:
            with self._lock:
                self._active.pop(key, None)
            if not self._local.detached:
                self.shutdown_request(conn)

    def detach(self) -> None:
        """Called by a handler (on its worker thread) that hands its socket over: the worker
        will not close it, and the deadline no longer applies."""
        self._local.detached = True
        with self._lock:
            self._active.pop(self._local.key, None)

    def service_actions(self) -> None:
        """Cut off connections past their deadline (runs on the accept thread every poll)."""
        limit = time.monotonic() - self.settings.request_timeout_s
        with self._lock:
            late = [s for s, t0 in self._active.values() if t0 < limit]
        for s in late:
            self.metrics.refused.labels("timeout").inc()
            with contextlib.suppress(OSError):
                socket.socket.shutdown(s, socket.SHUT_RDWR)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)
