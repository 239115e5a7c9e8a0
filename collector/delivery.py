"""Alert delivery you can count on: a persistent outbox with retries, e-mail and webhook channels.

**Outbox** (:class:`Outbox`).  An alert is first written to the outbox folder - one JSON file per
delivery (channel, target, body, attempts, next attempt), written to a temporary name, fsynced
and renamed - and only then sent, from a background thread.  A delivery that fails is retried
after ``retry_min_s``, doubling up to ``retry_max_s``; one still failing ``give_up_after_s`` after it
was queued is moved to ``failed/`` (kept for the operator) and counted as failed.  Deliveries
left in the folder when the collector stops or dies are sent after the next start.  A file that
cannot be read is moved to ``failed/`` too (never a crash).

**Channels.**  ``email``: the composed alert (:mod:`mailpulse.collector.alerts`) over SMTP - the
very mail path being monitored, so it is not the only one.  ``webhook``: an HTTP POST of the
incident in the Prometheus Alertmanager webhook format (version ``"4"``:
``status``, ``alerts[]`` with ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``fingerprint``, and ``groupKey``, ``groupLabels``, ``commonLabels``, ...), so any receiver of
Alertmanager's webhooks (chat bridges, paging services, a script) takes it; a 2xx answer is
delivered, anything else a failed attempt.  Labels are ``alertname="MailpulseIncident"``,
``incident``, ``root_cause``, ``severity``, ``service="mailpulse"``; a severity change resolves
the alert of the old severity and fires the new one, so a receiver never holds a stale one.

Counters (``on_event``): ``delivered``, ``retried`` (a failed attempt that will be retried),
``failed`` (given up), per channel.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Delivery", "Outbox", "alertmanager_payload", "post_webhook"]

#: Sends a body to a target; raises ``OSError`` (or any exception) when it was not delivered.
Sender = Callable[[bytes, str], None]


@dataclass
class Delivery:
    """One queued delivery (the content of one outbox file)."""

    id: str
    channel: str
    target: str
    kind: str
    created: float
    next_at: float
    attempts: int = 0
    last_error: str | None = None
    body: str = ""          # base64 of the bytes to send

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.body)


class Outbox:
    """See the module docstring.

    Parameters
    ----------
    folder : path or None
        The outbox folder (created); None keeps deliveries in memory only (tests).
    senders : dict
        Channel name -> :data:`Sender`.
    on_event : callable, optional
        ``on_event(what, channel)`` with ``what`` in ``delivered``, ``retried``, ``failed``.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, senders: dict[str, Sender], *,
                 retry_min_s: float = 5.0, retry_max_s: float = 300.0, give_up_after_s: float = 86400.0,
                 on_event: Callable[[str, str], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.senders = senders
        self.retry_min_s, self.retry_max_s, self.give_up_after_s = retry_min_s, retry_max_s, give_up_after_s
        self.on_event = on_event
        self.clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, Delivery] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        if self.folder is not None:
            (self.folder / "failed").mkdir(parents=True, exist_ok=True)
            self._load()

    # -- files ----------------------------------------------------------------------------------

    def _path(self, d: Delivery) -> Path:
        assert self.folder is not None
        return self.folder / f"{d.id}.json"

    def _write(self, d: Delivery) -> None:
        if self.folder is None:
            return
        p = self._path(d)
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(d), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)

    def _retire(self, d: Delivery) -> None:
        if self.folder is None:
            return
        p = self._path(d)
        with contextlib.suppress(FileNotFoundError):
            os.replace(p, self.folder / "failed" / p.name)

    def _load(self) -> None:
        assert self.folder is not None
        for p in sorted(self.folder.glob("*.json.tmp")):
            p.unlink(missing_ok=True)          # never renamed: the alert was not queued
        for p in sorted(self.folder.glob("*.json")):
            try:
                d = Delivery(**json.loads(p.read_text()))
                d.data  # noqa: B018 - the body must decode
            except (OSError, ValueError, TypeError) as e:
                log.error("alert outbox file %s is not readable (%s); moved to failed/", p.name, e)
                with contextlib.suppress(OSError):
                    os.replace(p, self.folder / "failed" / p.name)
                continue
            self._items[d.id] = d

    # -- queueing and sending ---------------------------------------------------------------------

    def put(self, channel: str, kind: str, data: bytes, target: str = "") -> Delivery:
        """Queue one delivery (durable when this returns)."""
        now = self.clock()
        d = Delivery(f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", channel, target, kind, now, now,
                     body=base64.b64encode(data).decode())
        self._write(d)
        with self._lock:
            self._items[d.id] = d
        self._wake.set()
        return d

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def pending(self) -> list[Delivery]:
        with self._lock:
            return sorted(self._items.values(), key=lambda d: d.id)

    def _emit(self, what: str, channel: str) -> None:
        if self.on_event is not None:
            self.on_event(what, channel)

    def run_due(self) -> int:
        """Attempt every delivery that is due now; returns how many were delivered."""
        now = self.clock()
        due = [d for d in self.pending() if d.next_at <= now]
        done = 0
        for d in due:
            sender = self.senders.get(d.channel)
            try:
                if sender is None:
                    raise LookupError(f"no sender for channel {d.channel!r}")
                sender(d.data, d.target)
            except Exception as e:   # any failure of a channel is a failed attempt, never a crash
                self._failed_attempt(d, f"{type(e).__name__}: {e}"[:300])
                continue
            with self._lock:
                self._items.pop(d.id, None)
            if self.folder is not None:
                self._path(d).unlink(missing_ok=True)
            self.delivered += 1
            done += 1
            self._emit("delivered", d.channel)
        return done

    def _failed_attempt(self, d: Delivery, error: str) -> None:
        now = self.clock()
        d.attempts += 1
        d.last_error = error
        if now - d.created >= self.give_up_after_s:
            log.error("alert %s (%s to %s) given up after %d attempts: %s", d.id, d.channel, d.target or "-",
                      d.attempts, error)
            with self._lock:
                self._items.pop(d.id, None)
            self._write(d)
            self._retire(d)
            self.failed += 1
            self._emit("failed", d.channel)
            return
        d.next_at = now + min(self.retry_max_s, self.retry_min_s * 2 ** (d.attempts - 1))
        log.warning("alert %s (%s) not delivered (attempt %d, next in %.0f s): %s", d.id, d.channel, d.attempts,
                    d.next_at - now, error)
        self._write(d)
        self.retried += 1
        self._emit("retried", d.channel)

    def next_due(self) -> float | None:
        with self._lock:
            return min((d.next_at for d in self._items.values()), default=None)

    # -- the thread -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="collector-outbox", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            nxt = self.next_due()
            wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - self.clock()))
            self._wake.wait(wait)
            self._wake.clear()


# --------------------------------------------------------------------------------------------
# the webhook channel
# --------------------------------------------------------------------------------------------


def _rfc3339(t: float | None) -> str:
    if t is None:
        return "0001-01-01T00:00:00Z"      # Alertmanager's "zero time": not ended
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alert(inc: dict[str, Any], severity: str, status: str, ends: float | None, url: str) -> dict[str, Any]:
    e = inc.get("evidence") or {}
    ctx = inc.get("context") or {}
    labels = {"alertname": "MailpulseIncident", "incident": str(inc["id"]), "root_cause": str(inc["root_cause"]),
              "severity": severity, "service": "mailpulse", **({"relay": str(ctx["relay"])} if ctx else {})}
    annotations = {
        "summary": f"{severity} incident at {ctx.get('relay') or inc['root_cause']}",
        "description": ctx.get("evidence") or (
            f"{e.get('anomalies')}/{e.get('events')} anomalous in {e.get('window_s')} s (rate "
            f"{e.get('anomaly_rate')}, history {e.get('history_rate')})" + (f"; {e['reason']}" if e.get("reason") else "")),
        "affected_nodes": ", ".join(inc.get("affected_nodes") or []),
        "affected_routes": ", ".join(inc.get("affected_routes") or []),
        **({"examples": "\n".join(ctx.get("example_lines") or []), "dashboard": ctx.get("link") or url} if ctx else {}),
    }
    url = ctx.get("link") or url
    fp = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {"status": status, "labels": labels, "annotations": annotations, "startsAt": _rfc3339(inc.get("opened")),
            "endsAt": _rfc3339(ends), "generatorURL": url, "fingerprint": fp}


def alertmanager_payload(kind: str, inc: dict[str, Any], previous: str | None = None, external_url: str = "",
                         receiver: str = "mailpulse") -> dict[str, Any]:
    """The Alertmanager webhook document (version 4) of one incident transition."""
    status = "resolved" if kind == "resolved" else "firing"
    alerts = []
    if kind == "severity" and previous and previous != inc["severity"]:
        alerts.append(_alert(inc, previous, "resolved", inc.get("updated"), external_url))
    alerts.append(_alert(inc, inc["severity"], status, inc.get("resolved") if status == "resolved" else None,
                         external_url))
    group = {"incident": str(inc["id"])}
    common = {k: v for k, v in alerts[-1]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    key = "{}:{incident=" + json.dumps(str(inc["id"])) + "}"
    return {"version": "4", "groupKey": key, "truncatedAlerts": 0, "status": status,
            "receiver": receiver, "groupLabels": group, "commonLabels": common,
            "commonAnnotations": alerts[-1]["annotations"] if len(alerts) == 1 else {}, "externalURL": external_url,
            "alerts": alerts}


def post_webhook(data: bytes, url: str, token: str | None = None, timeout: float = 10.0) -> None:
    """POST ``data`` (JSON) to ``url``; raises ``OSError`` unless the answer is 2xx."""
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "mailpulse-collector"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if not 200 <= r.status < 300:
                raise OSError(f"webhook {url} answered {r.status}")
    except urllib.error.HTTPError as e:
        raise OSError(f"webhook {url} answered {e.code}") from None
