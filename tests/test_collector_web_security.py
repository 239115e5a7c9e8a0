"""The dashboard's security and caps (``mailpulse.collector.webserver``): HTTPS only, a credential
for every route (the metrics credential only for ``/metrics``), no plaintext, caps on request size,
rate, connections and SSE streams, slow clients cut off, and a thread count that does not grow
with the connections (1000 SSE streams)."""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailpulse.collector import webserver
from mailpulse.collector.metrics import Metrics
from mailpulse.collector.web import DashboardServer, DashboardState, Hub
from server_fixtures import secure_web

from mailpulse.config.collector import WebSettings, parse_config
from mailpulse.lab.webclient import WebClient

pytestmark = pytest.mark.xdist_group("web")


@contextlib.contextmanager
def serving(tmp_path: Path, **overrides: object) -> Iterator[tuple[DashboardServer, WebSettings, Path]]:
    web, ca = secure_web(tmp_path, **overrides)
    server = DashboardServer(DashboardState(), Hub(), Metrics(), web)
    server.start()
    try:
        yield server, web, ca
    finally:
        server.stop()


def _metric(server: DashboardServer, name: str, labels: dict[str, str] | None = None) -> float:
    v = server.metrics.registry.get_sample_value(name, labels or {})
    return float(v or 0.0)


def _tls(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _raw(server: DashboardServer, ca: Path, request: bytes) -> bytes:
    """Send raw bytes over TLS, return what comes back until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=10) as raw, \
            _tls(ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(request)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def test_every_route_needs_a_credential(tmp_path: Path) -> None:
    with serving(tmp_path, rate_burst=1000) as (server, web, ca):
        anon = WebClient(server.url, ca)
        for path in ("", "index.html", "app.js", "app.css", "api/state", "api/events?q=x", "api/incidents/x",
                     "metrics", "events"):
            code, _ = anon.request(path)
            assert code == 401, path
        assert anon.post("api/incidents/x/ack", {})[0] == 401
        assert b'WWW-Authenticate: Basic realm="mailpulse"' in _raw(server, ca, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert WebClient(server.url, ca, web.username, "wrong").request("api/state")[0] == 401
        assert WebClient(server.url, ca, "someone", web.password).request("api/state")[0] == 401
        assert WebClient(server.url, ca, bearer="not-it").request("metrics")[0] == 401
        dash = WebClient.dashboard(server.url, web, ca)
        for path in ("", "app.js", "app.css", "api/state", "api/events", "metrics"):
            assert dash.request(path)[0] == 200, path
        # the page runs only its own script
        with dash.open("") as r:
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert WebClient(server.url, ca, bearer=web.password).request("api/state")[0] == 200
        metrics = WebClient.metrics(server.url, web, ca)
        assert metrics.request("metrics")[0] == 200
        basic_metrics = WebClient(server.url, ca, web.metrics_username, web.metrics_password)
        assert basic_metrics.request("metrics")[0] == 200
        for path in ("", "api/state", "events"):                  # read-only means only /metrics
            assert metrics.request(path)[0] == 403, path
        assert b"Authentication is off" not in dash.get("")
        text = metrics.metrics_text()
        assert "mailpulse_web_auth_enabled 1.0" in text and "mailpulse_web_tls_enabled 1.0" in text
        assert _metric(server, "mailpulse_web_auth_failures_total") >= 9


def test_no_plaintext_http_on_the_https_port(tmp_path: Path) -> None:
    with serving(tmp_path) as (server, _web, _ca):
        with socket.create_connection((server.host, server.port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            with contextlib.suppress(OSError):
                assert not s.recv(4096).startswith(b"HTTP/")
        deadline = time.monotonic() + 5
        while _metric(server, "mailpulse_web_refused_connections_total", {"reason": "tls"}) < 1 and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(server, "mailpulse_web_refused_connections_total", {"reason": "tls"}) >= 1


def test_request_size_body_and_method_caps(tmp_path: Path) -> None:
    with serving(tmp_path, max_request_bytes=4096) as (server, web, ca):
        auth = "Basic " + base64.b64encode(f"{web.username}:{web.password}".encode()).decode()
        big = b"GET /api/state HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
        assert _raw(server, ca, big).startswith(b"HTTP/1.1 431")
        body = f"GET /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 5\r\n\r\nhello"
        assert _raw(server, ca, body.encode()).startswith(b"HTTP/1.1 413")
        post = f"POST /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"
        assert _raw(server, ca, post.encode()).startswith(b"HTTP/1.1 405")   # only incident actions are posted
        ok = f"GET /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
        reply = _raw(server, ca, ok.encode())
        assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply


def test_rate_limit_per_address_and_failed_logins_cost_more(tmp_path: Path) -> None:
    with serving(tmp_path, rate_per_s=1.0, rate_burst=10) as (server, web, ca):
        dash = WebClient.dashboard(server.url, web, ca)
        codes = [dash.request("api/state")[0] for _ in range(12)]
        assert codes[:10] == [200] * 10 and codes[10:] == [429, 429]
        assert _metric(server, "mailpulse_web_rate_limited_total") == 2
    (tmp_path / "b").mkdir()
    with serving(tmp_path / "b", rate_per_s=1.0, rate_burst=10) as (server, web, ca):
        wrong = WebClient(server.url, ca, web.username, "guess")
        codes = [wrong.request("api/state")[0] for _ in range(4)]
        assert codes == [401, 401, 429, 429]          # 1 + 5 tokens per failure: guessing slows down 5 times


def test_silent_connections_are_cut_off_and_capped(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections=8, request_timeout_s=1.0, workers=2) as (server, web, ca):
        threads = threading.active_count()
        idle = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(40)]
        try:
            time.sleep(0.3)
            assert threading.active_count() <= threads + 2          # no thread per connection
            assert server.httpd.active <= 8
            assert _metric(server, "mailpulse_web_refused_connections_total", {"reason": "connections"}) >= 30
            time.sleep(2.0)                                         # past request_timeout_s: cut off
            assert server.httpd.active == 0
            assert _metric(server, "mailpulse_web_refused_connections_total", {"reason": "timeout"}) >= 1
            assert WebClient.dashboard(server.url, web, ca).request("api/state")[0] == 200
        finally:
            for s in idle:
                s.close()


def _sse_open(server: DashboardServer, ctx: ssl.SSLContext, auth: str, rcvbuf: int = 0) -> ssl.SSLSocket:
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(30)
    raw.connect((server.host, server.port))
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    s.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
    return s


def test_a_thousand_sse_streams_take_no_thread_each(tmp_path: Path) -> None:
    """Before: ~600 open SSE connections gave the collector 609 threads."""
    with serving(tmp_path, max_sse_clients=1000, rate_per_s=1000.0, rate_burst=5000) as (server, web, ca):
        before = threading.active_count()
        ctx = _tls(ca)
        auth = "Basic " + base64.b64encode(f"{web.username}:{web.password}".encode()).decode()
        socks = []
        try:
            for _ in range(1000):
                socks.append(_sse_open(server, ctx, auth))
            deadline = time.monotonic() + 60
            while server.pusher.count < 1000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.pusher.count == 1000 and server.hub.clients == 1000
            assert threading.active_count() <= before + web.workers + 2, threading.active_count()
            # one more is refused, not queued
            extra = _sse_open(server, ctx, auth)
            assert extra.recv(100).startswith(b"HTTP/1.1 503")
            extra.close()
            server.hub.publish("anomaly", {"id": "to-all"})
            for s in socks:
                buf = b""
                while b'"id":"to-all"' not in buf:
                    chunk = s.recv(65536)
                    assert chunk, "stream closed"
                    buf += chunk
            assert _metric(server, "mailpulse_web_sse_clients") == 1000
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 10
        while server.pusher.count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.pusher.count == 0 and server.hub.clients == 0


def test_an_sse_client_that_stops_reading_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webserver, "SSE_STALL_S", 1.0)
    monkeypatch.setattr(webserver, "SSE_HIGH_WATER", 64 * 1024)
    with serving(tmp_path) as (server, web, ca):
        auth = "Basic " + base64.b64encode(f"{web.username}:{web.password}".encode()).decode()
        stuck = _sse_open(server, _tls(ca), auth, rcvbuf=4096)
        deadline = time.monotonic() + 10
        while server.pusher.count < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        blob = "x" * 8192
        deadline = time.monotonic() + 30
        while _metric(server, "mailpulse_web_sse_dropped_total") < 1 and time.monotonic() < deadline:
            for _ in range(50):
                server.hub.publish("anomaly", {"pad": blob})
            time.sleep(0.05)
        assert _metric(server, "mailpulse_web_sse_dropped_total") == 1
        deadline = time.monotonic() + 5
        while server.pusher.count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.pusher.count == 0 and server.hub.clients == 0
        stuck.close()


def test_auth_and_tls_off_only_when_said_and_then_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a config without certificate or password is refused, with the way out in the sentence
    cfg, errors = parse_config({"archive": {"dir": str(tmp_path / "a")}}, "c.toml")
    assert cfg is None and any("[web] tls is on (the default)" in e for e in errors) and \
        any("[web] auth is on (the default)" in e for e in errors)
    cfg, errors = parse_config({"archive": {"dir": str(tmp_path / "a")}, "web": {"tls": False, "auth": False}}, "c")
    assert cfg is not None, errors
    with caplog.at_level(logging.WARNING, logger="mailpulse.collector.web"):
        server = DashboardServer(DashboardState(), Hub(), Metrics(), cfg.web.model_copy(update={"port": 0}))
    server.start()
    try:
        anyone = WebClient(server.url, None)
        assert server.url.startswith("http://")
        page = anyone.get("")
        assert b"Authentication is off" in page
        assert "mailpulse_web_auth_enabled 0.0" in anyone.metrics_text()
        assert any("authentication is OFF" in r.message for r in caplog.records)
        assert any("TLS is OFF" in r.message for r in caplog.records)
    finally:
        server.stop()
