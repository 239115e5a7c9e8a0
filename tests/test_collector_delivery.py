"""Alert delivery you can count on: retries with back-off, a persistent outbox
that survives a restart, a webhook channel in the Alertmanager webhook format (against a real HTTP
server on loopback) that does not depend on the mail path, and counters of queued, delivered,
retried, failed and suppressed alerts."""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mailpulse.collector.alerts import AlertManager
from mailpulse.collector.correlate import Change
from test_collector_alerts import _incident
from test_collector_hostile import collector, samples

from mailpulse.config.collector import AlertSettings


class Receiver:
    """An HTTP server on loopback that records Alertmanager webhook POSTs; fails the first ``fail`` ones."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.posts: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append((json.loads(body), dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def wait(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def settings(**kw: Any) -> AlertSettings:
    base: dict[str, Any] = {"to": [], "retry_min_s": 0.1, "retry_max_s": 0.4}
    base.update(kw)
    return AlertSettings(**base)


def test_webhook_in_alertmanager_format_with_retries(receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail = 2
    events: Counter[tuple[str, str]] = Counter()
    am = AlertManager(settings(webhook_urls=[receiver.url], webhook_token="s3cret",
                               dashboard_url="http://collector.example:8080/"),
                      outbox_dir=tmp_path / "outbox", on_event=lambda w, label: events.update([(w, label)]))
    am.start()
    try:
        inc = dict(_incident(), severity="major")
        assert am.handle("opened", inc)
        assert wait(lambda: len(receiver.posts) == 1)
        assert am.handle("severity", dict(inc, severity="critical"), previous="major")
        assert am.handle("resolved", dict(inc, severity="critical", state="resolved", resolved=inc["opened"] + 300))
        assert wait(lambda: len(receiver.posts) == 3)
    finally:
        am.stop()
    assert receiver.attempts == 5 and events[("retried", "webhook")] == 2 and events[("delivered", "webhook")] == 3
    doc, headers = receiver.posts[0]
    assert headers["Authorization"] == "Bearer s3cret" and headers["Content-Type"] == "application/json"
    assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "mailpulse"
    assert doc["groupKey"] == f'{{}}:{{incident="{inc["id"]}"}}' and doc["truncatedAlerts"] == 0
    assert doc["externalURL"] == "http://collector.example:8080/" and doc["groupLabels"] == {"incident": inc["id"]}
    (a,) = doc["alerts"]
    assert a["status"] == "firing" and a["endsAt"] == "0001-01-01T00:00:00Z" and a["startsAt"].endswith("Z")
    assert a["labels"] == {"alertname": "MailpulseIncident", "incident": inc["id"], "root_cause": inc["root_cause"],
                           "severity": "major", "service": "mailpulse"}
    assert inc["root_cause"] in a["annotations"]["summary"] and len(a["fingerprint"]) == 16
    assert doc["commonLabels"] == a["labels"]
    # a severity change resolves the old severity's alert and fires the new one
    sev = receiver.posts[1][0]
    assert [(x["status"], x["labels"]["severity"]) for x in sev["alerts"]] == [("resolved", "major"),
                                                                               ("firing", "critical")]
    res = receiver.posts[2][0]
    assert res["status"] == "resolved" and res["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert not list((tmp_path / "outbox").glob("*.json")), "delivered alerts left in the outbox"


def test_outbox_survives_a_restart_and_gives_up_after_its_limit(receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail = 10**6                     # the receiver is down
    s = settings(webhook_urls=[receiver.url])
    am = AlertManager(s, outbox_dir=tmp_path / "outbox")
    am.start()
    am.handle("opened", _incident())
    assert wait(lambda: receiver.attempts >= 2)
    am.stop()                                  # the collector stops with the alert undelivered
    assert len(list((tmp_path / "outbox").glob("*.json"))) == 1
    receiver.fail = 0                          # the receiver is back; a new collector starts
    events: Counter[tuple[str, str]] = Counter()
    am2 = AlertManager(s, outbox_dir=tmp_path / "outbox", on_event=lambda w, label: events.update([(w, label)]))
    am2.start()
    try:
        assert wait(lambda: len(receiver.posts) == 1), "the queued alert was not sent after the restart"
    finally:
        am2.stop()
    assert receiver.posts[0][0]["alerts"][0]["labels"]["incident"] == _incident()["id"]
    assert events[("delivered", "webhook")] == 1 and not list((tmp_path / "outbox").glob("*.json"))
    # a receiver that never comes back: given up after give_up_after_s, kept in failed/
    receiver.fail = 10**6
    am3 = AlertManager(settings(webhook_urls=[receiver.url], give_up_after_s=0.5), outbox_dir=tmp_path / "outbox",
                       on_event=lambda w, label: events.update([(w, label)]))
    am3.start()
    try:
        am3.handle("opened", dict(_incident(), id="never"))
        assert wait(lambda: events[("failed", "webhook")] == 1)
    finally:
        am3.stop()
    assert len(list((tmp_path / "outbox" / "failed").glob("*.json"))) == 1
    assert not list((tmp_path / "outbox").glob("*.json"))


def test_smtp_failures_are_retried_and_counted_as_delivered_only_when_sent(receiver: Receiver,
                                                                            tmp_path: Path) -> None:
    """``alerts_sent_total`` counted mails queued; ``alerts_suppressed_total`` was never incremented."""
    fails = [3]
    sent: list[EmailMessage] = []

    def smtp(msg: EmailMessage) -> None:
        if fails[0] > 0:
            fails[0] -= 1
            raise smtplib.SMTPServerDisconnected("relay down")
        sent.append(msg)

    col = collector(tmp_path)
    col.cfg.alerts = settings(to=["ops@example.net"], webhook_urls=[receiver.url])
    col.alerts = AlertManager(col.cfg.alerts, smtp, outbox_dir=tmp_path / "outbox", on_event=col._alert_event)
    inc = _incident()
    col._announce(Change("opened", inc))
    col._announce(Change("opened", inc))       # the same transition again: suppressed as a duplicate
    m = samples(col)
    assert m[("mailpulse_alerts_queued_total", (("kind", "opened"),))] == 1
    assert m[("mailpulse_alerts_suppressed_total", (("reason", "duplicate"),))] == 1
    assert m[("mailpulse_alerts_delivered_total", (("channel", "webhook"),))] == 1   # the mail path is down,
    assert ("mailpulse_alerts_delivered_total", (("channel", "email"),)) not in m    # the webhook is not
    assert m[("mailpulse_alerts_retried_total", (("channel", "email"),))] == 1
    col.alerts.start()
    try:
        assert wait(lambda: len(sent) == 1)
    finally:
        col.alerts.stop()
    m = samples(col)
    assert m[("mailpulse_alerts_delivered_total", (("channel", "email"),))] == 1
    assert m[("mailpulse_alerts_retried_total", (("channel", "email"),))] == 3
    assert m[("mailpulse_alerts_outbox_depth", ())] == 0
    assert "OPEN" in str(sent[0]["Subject"]) and len(receiver.posts) == 1
