"""Alerts: incident opened / severity changed / resolved, and a periodic summary.

:class:`AlertManager` decides *whether* to alert (the rules below), composes a
``multipart/alternative`` mail (plain text, and HTML with a small PNG chart of the root cause's
anomaly rate embedded as a ``multipart/related`` part, drawn with Pillow) and, for every
configured webhook, the Alertmanager-format document, and puts them in the persistent outbox
(:mod:`mailpulse.collector.delivery`), whose thread sends them - SMTP (:func:`smtp_send`) and HTTP -
with retries, so a slow or failing mail server never stalls the ingest or loses an alert.

Rules against floods:

* **de-duplication**: one mail per (incident, transition, severity); a retained incident seen
  again after a restart is not re-announced;
* **hysteresis** (with the correlator's own: resolve after several quiet evaluations): an incident
  that opens on the same root cause within ``min_interval_s`` of the last announced one is a
  *flap*: neither its opening nor its resolution is mailed (they are counted for the summary);
  a severity *drop* is mailed only if ``min_interval_s`` passed since the incident's last mail;
* **rate limit**: at most ``rate_limit_per_hour`` alert mails in any sliding hour; the excess is
  counted and listed in the next summary;
* **operators' word** (:mod:`mailpulse.collector.actions`, from the dashboard): a *silenced*
  incident (or a new one at the root cause of a silenced one) sends nothing until the silence
  expires; an *acknowledged* one sends nothing more but its resolution.

Every suppression is counted by reason (``suppressed``; ``mailpulse_alerts_suppressed_total``).
Failure: a delivery that fails is retried with back-off and given up only after
``give_up_after_s`` (see :mod:`mailpulse.collector.delivery`).
"""

from __future__ import annotations

import collections
import email
import email.policy
import io
import json
import logging
import os
import smtplib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from html import escape
from typing import Any

from mailpulse.config.collector import AlertSettings

from .actions import IncidentActions
from .correlate import SEVERITIES
from .delivery import Outbox, alertmanager_payload, post_webhook

log = logging.getLogger(__name__)

__all__ = ["AlertManager", "compose_alert", "compose_summary", "render_chart", "smtp_send"]


def render_chart(values: Sequence[float | None], title: str = "", width: int = 360, height: int = 120) -> bytes:
    """A small bar chart (PNG bytes) of ``values`` (e.g. the anomaly rate per bucket), with Pillow."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 2), title[:60], fill=(30, 30, 30))
    top, bottom, left, right = 16, height - 4, 4, width - 4
    d.rectangle([left, top, right, bottom], outline=(200, 200, 200))
    vals = [v if v is not None else 0.0 for v in values] or [0.0]
    vmax = max(max(vals), 1e-9)
    w = (right - left) / len(vals)
    for i, v in enumerate(vals):
        h = (bottom - top - 2) * (v / vmax)
        x0 = left + 1 + i * w
        colour = (200, 40, 40) if v >= 0.5 * vmax and v > 0 else (70, 120, 200)
        d.rectangle([x0, bottom - 1 - h, x0 + max(w - 2, 1), bottom - 1], fill=colour)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _fmt_t(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def compose_alert(kind: str, inc: dict[str, Any], sender: str, to: Sequence[str], series: Sequence[float | None] = (),
                  dashboard_url: str = "", previous: str | None = None) -> EmailMessage:
    """The e-mail for one incident transition (``opened``, ``severity``, ``resolved``)."""
    e = inc.get("evidence", {})
    ctx = inc.get("context") or {}
    verb = {"opened": "OPEN", "severity": f"SEVERITY {previous} -> {inc['severity']}", "resolved": "RESOLVED"}[kind]
    where = ctx.get("relay") or inc["root_cause"]
    subject = f"[mailpulse] {verb}: {inc['severity']} incident at {where} (incident {inc['id']})"
    dashboard_url = ctx.get("link") or dashboard_url
    facts = [*([("What", ctx["evidence"]), ("Relay", ctx["relay"]), ("Path", ctx["path"]),
                ("Incident", inc["id"])] if ctx else []),
        ("Root cause", inc["root_cause"]),
        ("Severity", inc["severity"]),
        ("State", inc["state"]),
        ("Opened", _fmt_t(inc.get("opened"))),
        ("Resolved", _fmt_t(inc.get("resolved")) if inc.get("resolved") else "-"),
        ("Anomalies / events", f"{e.get('anomalies')} / {e.get('events')} in {e.get('window_s')} s"),
        ("Anomaly rate",
         f"{e.get('anomaly_rate')} (siblings {e.get('sibling_rate')}, history {e.get('history_rate')})"),
        ("Latency p50/p90/p99", f"{e.get('latency_p50_s')} / {e.get('latency_p90_s')} / {e.get('latency_p99_s')} s"
                                f" (history p90 {e.get('history_latency_p90_s')} s)"),
        ("Affected nodes", ", ".join(inc.get("affected_nodes") or []) or "-"),
        ("Affected routes", ", ".join(inc.get("affected_routes") or []) or "-"),
        *([("Examples", "\n  " + "\n  ".join(ctx["example_lines"]))] if ctx.get("example_lines") else
          [("Example events", ", ".join(e.get("example_event_ids") or []) or "-")]),
    ]
    text = f"{subject}\n\n" + "\n".join(f"{k}: {v}" for k, v in facts)
    if dashboard_url:
        text += f"\n\nDashboard: {dashboard_url}"
    return _message(subject, sender, to, text, facts, series, f"anomaly rate at {inc['root_cause']}", dashboard_url)


def compose_summary(period_s: float, figures: dict[str, Any], incidents: Sequence[dict[str, Any]], sender: str,
                    to: Sequence[str], series: Sequence[float | None] = (), dashboard_url: str = "") -> EmailMessage:
    """The periodic summary mail: the period's figures and its incidents."""
    subject = f"[mailpulse] summary of the last {period_s / 3600:.1f} h: {figures.get('incidents_opened', 0)} incidents"
    facts = [(k.replace("_", " "), str(v)) for k, v in figures.items()]
    facts += [(f"incident {i['id']}", f"{i['state']} {i['severity']} at {i['root_cause']}") for i in incidents]
    text = f"{subject}\n\n" + "\n".join(f"{k}: {v}" for k, v in facts)
    return _message(subject, sender, to, text, facts, series, "anomalies per bucket", dashboard_url)


def _message(subject: str, sender: str, to: Sequence[str], text: str, facts: list[tuple[str, str]],
             series: Sequence[float | None], chart_title: str, dashboard_url: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = make_msgid("mailpulse")
    msg["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg.set_content(text)
    cid = make_msgid("chart")
    rows = "".join(f"<tr><th align='left' valign='top'>{escape(k)}</th><td>{_cell_html(v)}</td></tr>"
                   for k, v in facts)
    link = f"<p><a href='{escape(dashboard_url)}'>Dashboard</a></p>" if dashboard_url else ""
    html = (f"<html><body><h3>{escape(subject)}</h3><table>{rows}</table>"
            f"<p><img src='cid:{cid[1:-1]}' alt='{escape(chart_title)}'></p>{link}</body></html>")
    msg.add_alternative(html, subtype="html")
    html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(render_chart(list(series), chart_title), maintype="image", subtype="png", cid=cid,
                          filename="chart.png")
    return msg


def _cell_html(v: str) -> str:
    return "<br>".join(escape(line) for line in v.strip("\n").split("\n"))


def smtp_send(settings: AlertSettings, msg: EmailMessage, timeout: float = 10.0) -> None:
    """Send one message over SMTP (STARTTLS and login when configured)."""
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as s:
        if settings.starttls:
            s.starttls()
        if settings.username:
            s.login(settings.username, settings.password or "")
        s.send_message(msg)


class AlertManager:
    """Applies the rules of the module docstring and queues the alerts in the outbox.

    Parameters
    ----------
    settings : AlertSettings
        Recipients, SMTP server, webhooks, limits, retries.
    send : callable, optional
        ``send(msg)`` for the e-mail channel; default :func:`smtp_send` with ``settings``.
    clock : callable
        Wall-clock time source (tests).
    outbox_dir : path, optional
        The persistent outbox (None: in memory, tests).
    on_event : callable, optional
        ``on_event(what, label)``: ``queued`` (label = transition), ``suppressed`` (reason),
        ``delivered``/``retried``/``failed`` (channel) - the collector's counters.
    actions : IncidentActions, optional
        Acknowledgements and silences (suppression reasons ``silenced``, ``acknowledged``).
    """

    def __init__(self, settings: AlertSettings, send: Callable[[EmailMessage], None] | None = None,
                 clock: Callable[[], float] = time.time, outbox_dir: str | os.PathLike[str] | None = None,
                 on_event: Callable[[str, str], None] | None = None, actions: IncidentActions | None = None) -> None:
        self.s = settings
        self.actions = actions
        self.send_fn = send or (lambda m: smtp_send(settings, m))
        self.clock = clock
        self.on_event = on_event
        self._announced: set[tuple[str, str, str]] = set()
        self._last_by_cause: dict[str, float] = {}
        self._last_by_incident: dict[str, float] = {}
        self._flapping: set[str] = set()
        self._sent_times: collections.deque[float] = collections.deque()
        self.sent = collections.Counter[str]()          # queued, by transition
        self.suppressed = collections.Counter[str]()    # by reason
        self.outbox = Outbox(outbox_dir, {"email": self._send_email, "webhook": self._send_webhook},
                             retry_min_s=settings.retry_min_s, retry_max_s=settings.retry_max_s,
                             give_up_after_s=settings.give_up_after_s,
                             on_event=lambda what, ch: self._emit(what, ch), clock=clock)
        self._started = False
        self._period_start = clock()
        self._period: collections.Counter[str] = collections.Counter()
        self._period_incidents: dict[str, dict[str, Any]] = {}

    @property
    def failed(self) -> int:
        return self.outbox.failed

    def _emit(self, what: str, label: str) -> None:
        if self.on_event is not None:
            self.on_event(what, label)

    def _send_email(self, data: bytes, target: str) -> None:
        msg = email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
        self.send_fn(msg)

    def _send_webhook(self, data: bytes, target: str) -> None:
        post_webhook(data, target, self.s.webhook_token)

    def start(self) -> None:
        if not self._started:
            self.outbox.start()
            self._started = True

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self.outbox.stop(timeout)

    def _submit(self, msg: EmailMessage | None, kind: str, webhook: dict[str, Any] | None = None) -> None:
        if msg is not None and self.s.to:
            self.outbox.put("email", kind, msg.as_bytes())
        if webhook is not None:
            data = json.dumps(webhook, separators=(",", ":")).encode()
            for url in self.s.webhook_urls:
                self.outbox.put("webhook", kind, data, url)
        if not self._started:
            self.outbox.run_due()

    def decide(self, kind: str, inc: dict[str, Any], previous: str | None = None) -> str | None:
        """Why a transition is *not* mailed (``duplicate``, ``silenced``, ``acknowledged``, ``flapping``,
        ``hysteresis``, ``rate``), else None."""
        now = self.clock()
        key = (inc["id"], kind, inc["severity"])
        if key in self._announced:
            return "duplicate"
        if self.actions is not None and (muted := self.actions.mute(kind, inc)) is not None:
            return muted
        cause = inc["root_cause"]
        if kind == "opened":
            last = self._last_by_cause.get(cause)
            if last is not None and now - last < self.s.min_interval_s:
                self._flapping.add(inc["id"])
                return "flapping"
        elif inc["id"] in self._flapping:
            return "flapping"
        if kind == "severity" and previous is not None:
            lower = SEVERITIES.index(inc["severity"]) < SEVERITIES.index(previous)
            last = self._last_by_incident.get(inc["id"])
            if lower and last is not None and now - last < self.s.min_interval_s:
                return "hysteresis"
        while self._sent_times and now - self._sent_times[0] > 3600:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.s.rate_limit_per_hour:
            return "rate"
        return None

    def handle(self, kind: str, inc: dict[str, Any], previous: str | None = None,
               series: Sequence[float | None] = (), context: dict[str, Any] | None = None) -> bool:
        """Consider one incident transition; True when a mail was queued.  ``context`` (relay name,
        evidence in words, examples, link: :mod:`mailpulse.collector.alertctx`) goes into the mail
        and the webhook."""
        if context is not None:
            inc = {**inc, "context": context}
        self._period[f"incidents_{kind}"] += 1
        self._period_incidents[inc["id"]] = inc
        why = self.decide(kind, inc, previous)
        if why is not None:
            self.suppressed[why] += 1
            self._emit("suppressed", why)
            return False
        now = self.clock()
        self._announced.add((inc["id"], kind, inc["severity"]))
        self._last_by_cause[inc["root_cause"]] = now
        self._last_by_incident[inc["id"]] = now
        self._sent_times.append(now)
        msg = compose_alert(kind, inc, self.s.sender, self.s.to, series, self.s.dashboard_url, previous) \
            if self.s.to else None
        hook = alertmanager_payload(kind, inc, previous, self.s.dashboard_url) if self.s.webhook_urls else None
        self.sent[kind] += 1
        self._emit("queued", kind)
        self._submit(msg, kind, hook)
        return True

    def count(self, name: str, n: int = 1) -> None:
        """Add to the period's figures (events, anomalies, duplicates) for the summary."""
        self._period[name] += n

    def maybe_summary(self, series: Sequence[float | None] = (), force: bool = False) -> bool:
        """Send the periodic summary when ``summary_interval_s`` has passed (or ``force``)."""
        now = self.clock()
        period = now - self._period_start
        if not force and period < self.s.summary_interval_s:
            return False
        figures = {k: self._period.get(k, 0) for k in ("events", "anomalies", "duplicates", "incidents_opened",
                                                        "incidents_severity", "incidents_resolved")}
        figures["alert_mails_suppressed"] = sum(self.suppressed.values())
        msg = compose_summary(period, figures, list(self._period_incidents.values()), self.s.sender, self.s.to,
                              series, self.s.dashboard_url)
        self._period_start = now
        self._period.clear()
        self._period_incidents.clear()
        self.sent["summary"] += 1
        self._emit("queued", "summary")
        self._submit(msg, "summary")
        return True
