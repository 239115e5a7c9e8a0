"""Alert e-mails: the rules (unit) and delivery into a real Dovecot mailbox through real Postfix."""

from __future__ import annotations

import email
import functools
import html as htmllib
import imaplib
import io
import json
import shutil
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from collector_synth import stream
from mailpulse.collector.alerts import (
    AlertManager,
    RateSeries,
    chart_axes,
    compose_alert,
    compose_summary,
    render_chart,
)
from mailpulse.collector.correlate import CorrelateSettings, correlate_archive
from mailpulse.collector.service import Collector
from server_fixtures import require
from test_collector_ingest import collector_cfg, envelope, node_client, publish

from mailpulse import topics as T
from mailpulse.config.collector import AlertSettings
from mailpulse.lab.servers import MailChain, make_root


@functools.lru_cache(maxsize=1)
def _incident_json() -> str:
    _, changes = correlate_archive(stream(900, seed=7, fault="relay2.example.net", fault_from=600),
                                   CorrelateSettings(history_s=600.0))
    return json.dumps(next(c.incident for c in changes if c.kind == "opened"))


def _incident() -> dict:
    return json.loads(_incident_json())


def test_rules_dedup_flapping_hysteresis_rate_limit() -> None:
    now = [1000.0]
    sent: list[EmailMessage] = []
    s = AlertSettings(to=["ops@example.net"], rate_limit_per_hour=3, min_interval_s=300)
    am = AlertManager(s, send=sent.append, clock=lambda: now[0])
    inc = dict(_incident(), severity="critical")
    assert am.handle("opened", inc)
    assert not am.handle("opened", inc)                        # duplicate
    assert am.suppressed["duplicate"] == 1
    # a severity drop shortly after the last mail is held back (hysteresis); a rise is not
    low = dict(inc, severity="minor")
    assert not am.handle("severity", low, previous=inc["severity"])
    assert am.suppressed["hysteresis"] == 1
    now[0] += 10
    assert am.handle("resolved", dict(inc, state="resolved", resolved=now[0]))
    # the same root cause opens again 60 s later: a flap, neither open nor resolve mailed
    now[0] += 60
    flap = dict(inc, id="flap1")
    assert not am.handle("opened", flap)
    assert not am.handle("resolved", dict(flap, state="resolved"))
    assert am.suppressed["flapping"] == 2
    # after min_interval_s it is news again; then the hourly rate limit (3) bites
    now[0] += 400
    assert am.handle("opened", dict(inc, id="again"))
    assert not am.handle("opened", dict(inc, id="other", root_cause="mx.example.net > relay1.example.net"))
    assert am.suppressed["rate"] == 1
    now[0] += 3700
    assert am.handle("opened", dict(inc, id="later", root_cause="mx.example.net > relay1.example.net"))
    assert len(sent) == 4
    assert am.maybe_summary(force=True) and len(sent) == 5
    assert "summary" in sent[-1]["Subject"]


def test_alert_chart_has_axes_with_units_and_utc_times() -> None:
    """The chart in the mail: a fixed 0-100 % axis for rates (not scaled to its own maximum), the
    first, middle and last bucket's start in UTC (the first with its date), and a legend."""
    t0 = 1_796_395_200.0                                       # 2026-12-04 14:40:00 UTC
    top, y, x = chart_axes([0.1, None, 0.3, 0.2, 0.25], t0, 10.0)
    assert top == 1.0 and y == ["0 %", "50 %", "100 %"]
    assert x == [(0, "2026-12-04 14:40:00"), (2, "14:40:20"), (4, "14:40:40")]
    top, y, x = chart_axes([3, 7], None, None)                 # counts: scaled to their maximum, no times
    assert top == 7 and y[-1] == "7" and x == [(0, "bucket 1"), (1, "bucket 2")]
    from PIL import Image

    png = render_chart([0.1, None, 0.9], "anomaly rate", t0=t0, bucket_s=10.0)
    img = Image.open(io.BytesIO(png)).convert("L")
    w, h = img.size
    # the axis lines are drawn: the x axis row and the y axis column are dark across the plot
    px = img.tobytes()                                         # mode L: one byte per pixel, row by row
    xaxis = [px[(h - 44) * w + c] for c in range(50, w - 10)]
    yaxis = [px[r * w + 44] for r in range(22, h - 46)]
    assert max(xaxis) < 100 and max(yaxis) < 100
    # the series from the collector carries its times into the mail's chart
    inc = _incident()
    msg = compose_alert("opened", inc, "c@example.net", ["ops@example.net"], RateSeries(t0, 10.0, [0.0, 0.5, 1.0]))
    chart = next(p for p in msg.walk() if p.get_content_type() == "image/png").get_content()
    title = f"anomaly rate at {inc['root_cause']} (% of its events)"
    assert chart == render_chart([0.0, 0.5, 1.0], title, t0=t0, bucket_s=10.0)


def test_message_has_text_html_and_embedded_chart() -> None:
    inc = _incident()
    msg = compose_alert("opened", inc, "c@example.net", ["ops@example.net"], [0.0, 0.1, 0.8, None, 0.9])
    types = [p.get_content_type() for p in msg.walk()]
    assert types == ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    png = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert png["Content-ID"].strip("<>") in html
    assert png.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    assert inc["root_cause"] in msg["Subject"] and htmllib.escape(inc["root_cause"]) in html
    summ = compose_summary(86400, {"events": 10}, [inc], "c@example.net", ["ops@example.net"], [1, 2, 3])
    assert "image/png" in [p.get_content_type() for p in summ.walk()]


@pytest.fixture(scope="module")
def chain() -> Iterator[MailChain]:
    require("postfix", "dovecot", root=True)
    root = make_root("mailpulse-alerts-")
    ch = MailChain(root)
    try:
        ch.start()
        yield ch
    finally:
        ch.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _fetch(ch: MailChain, subject_part: str, timeout: float = 30.0) -> EmailMessage | None:
    box = ch.mailboxes["probe"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with imaplib.IMAP4(ch.imap.host, ch.imap.port) as im:
            im.login(box.user, box.password)
            im.select("INBOX")
            _, data = im.search(None, "ALL")
            for num in data[0].split():
                _, parts = im.fetch(num, "(RFC822)")
                first = parts[0]
                assert isinstance(first, tuple)
                raw = first[1]
                msg = email.message_from_bytes(raw, policy=default_policy)
                if subject_part in str(msg["Subject"]):
                    assert isinstance(msg, EmailMessage)
                    return msg
        time.sleep(0.1)
    return None


@pytest.mark.xdist_group("collector-mail")
def test_alert_arrives_in_a_real_mailbox(chain: MailChain) -> None:
    host, port = chain.smtp
    s = AlertSettings(smtp_host=host, smtp_port=port, sender="mailpulse@collector.test",
                      to=[chain.mailboxes["probe"].address], dashboard_url="http://127.0.0.1:8080/")
    am = AlertManager(s)
    am.start()
    inc = _incident()
    t0 = time.monotonic()
    try:
        assert am.handle("opened", inc, series=[0.01, 0.02, 0.7, 0.8])
        msg = _fetch(chain, inc["id"])
    finally:
        am.stop()
    assert msg is not None, "the alert did not arrive in the Dovecot mailbox"
    elapsed = time.monotonic() - t0
    assert am.failed == 0
    types = [p.get_content_type() for p in msg.walk()]
    assert "text/plain" in types and "text/html" in types and "image/png" in types
    body = msg.get_body(("plain",))
    assert body is not None and inc["root_cause"] in body.get_content()
    # went through both Postfix instances
    assert len(msg.get_all("Received") or []) >= 2
    print(f"alert delivered in {elapsed:.2f} s")


@pytest.mark.xdist_group("collector-mail")
def test_collector_mails_an_incident_from_published_events(chain: MailChain, broker: Any, tmp_path: Path) -> None:
    """Events published to a real broker -> collector -> incident -> e-mail in the ops mailbox."""
    cfg = collector_cfg(broker, tmp_path)
    cfg.alerts = AlertSettings(smtp_host=chain.smtp[0], smtp_port=chain.smtp[1], sender="mailpulse@collector.test",
                               to=[chain.mailboxes["probe"].address])
    col = Collector(cfg)
    col.start()
    node = node_client(broker, "node-a")
    try:
        assert col.ingest.wait_connected()
        time.sleep(0.3)
        evs = list(stream(900, seed=11, t0=time.time() - 900, fault="relay1.example.net", fault_from=600,
                          nodes=("node-a",)))
        for i in range(0, len(evs), 500):
            publish(node, T.NodeTopics("lab", "node-a").events, envelope("node-a", evs[i:i + 500]))
        end = time.monotonic() + 20
        while time.monotonic() < end and not col.correlator.open_by_path:
            col.tick()
            time.sleep(0.05)
        assert col.correlator.open_by_path, "no incident opened"
        msg = _fetch(chain, "relay1.example.net")
    finally:
        col.stop()
        node.loop_stop()
        node.disconnect()
    assert msg is not None, "the collector's alert did not arrive"
    assert "OPEN" in str(msg["Subject"])
    html = msg.get_body(("html",))
    assert html is not None and col.web is not None and col.web.url in html.get_content()
