"""A small HTTPS client for the collector's dashboard, ``/api/state`` and ``/metrics`` (tests, demo,
soak): verifies the server with the deployment's CA and authenticates with basic auth or a bearer
token, as a browser or Prometheus would."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpulse.config.collector import WebSettings

__all__ = ["WebClient"]


@dataclass(frozen=True)
class WebClient:
    """GETs from the collector's web server (``base`` is its URL, ending in ``/``), and POSTs its incident
    actions."""

    base: str
    ca_file: Path | None = None
    user: str | None = None
    password: str | None = None
    bearer: str | None = None

    @classmethod
    def dashboard(cls, base: str, web: WebSettings, ca_file: Path | None) -> WebClient:
        """With the dashboard credential of ``web`` (resolved passwords)."""
        return cls(base, ca_file, web.username, web.password)

    @classmethod
    def metrics(cls, base: str, web: WebSettings, ca_file: Path | None) -> WebClient:
        """With the read-only metrics credential of ``web``, as a bearer token (Prometheus' way)."""
        return cls(base, ca_file, bearer=web.metrics_password)

    def _context(self) -> ssl.SSLContext | None:
        if not self.base.startswith("https:"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _request(self, path: str, headers: dict[str, str] | None) -> urllib.request.Request:
        req = urllib.request.Request(self.base + path.lstrip("/"), headers=headers or {})
        if self.bearer is not None:
            req.add_header("Authorization", f"Bearer {self.bearer}")
        elif self.user is not None and self.password is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        return req

    def request(self, path: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of ``GET base + path``; an HTTP error status is returned, not raised."""
        try:
            with urllib.request.urlopen(self._request(path, headers), timeout=timeout, context=self._context()) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def post(self, path: str, body: Any, timeout: float = 10.0,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON answer) of ``POST base + path`` with ``body`` as JSON (an incident action)."""
        req = self._request(path, {"Content-Type": "application/json", **(headers or {})})
        req.data, req.method = json.dumps(body).encode(), "POST"
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._context()) as r:
                return int(r.status), json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return int(e.code), json.loads(raw)
            except ValueError:
                return int(e.code), raw.decode(errors="replace")

    def open(self, path: str, timeout: float = 10.0) -> Any:
        """The open response of ``GET base + path`` (a stream such as ``/events``); raises on an error status."""
        return urllib.request.urlopen(self._request(path, None), timeout=timeout, context=self._context())

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        """The body of a 200 answer; ``RuntimeError`` naming the status otherwise."""
        code, body = self.request(path, timeout)
        if code != 200:
            raise RuntimeError(f"GET {self.base}{path.lstrip('/')}: HTTP {code}: {body[:200]!r}")
        return body

    def state(self, timeout: float = 10.0) -> Any:
        return json.loads(self.get("api/state", timeout))

    def metrics_text(self, timeout: float = 10.0) -> str:
        return self.get("metrics", timeout).decode()
