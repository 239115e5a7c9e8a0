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
from dataclasses import dataclass
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

__all__ = ["AlertManager", "RateSeries", "chart_axes", "compose_alert", "compose_summary", "render_chart", "smtp_send"]


@dataclass(frozen=True)
class RateSeries:
    """The anomaly rate (0..1, ``None`` where a bucket had no events) per time bucket at an incident's
    tree node, the oldest first: ``t0`` is the first bucket's start (Unix seconds)."""

    t0: float
    bucket_s: float
    rates: Sequence[float | None]


#: What an alert's chart plots: a :class:`RateSeries`, or bare values (no times on the x axis).
Series = RateSeries | Sequence[float | None]


def chart_axes(values: Sequence[float | None], t0: float | None = None,
               bucket_s: float | None = None) -> tuple[float, list[str], list[tuple[int, str]]]:
    """The chart's scale and tick labels: ``(top, y_labels, [(bucket index, x label), ...])``.

    Rates (every value within 0..1) get a fixed 0-100 % axis, so a chart is not scaled up to its own
    maximum; other values 0..their maximum.  The x ticks are the first, middle and last bucket's
    start in UTC (``HH:MM:SS``, the first with its date) or, without times, bucket numbers."""
    vals = [v for v in values if v is not None]
    rates = all(0.0 <= v <= 1.0 for v in vals)
    top = 1.0 if rates else max(max(vals, default=1.0), 1e-9)
    y = ["0 %", "50 %", "100 %"] if rates else ["0", f"{top / 2:.3g}", f"{top:.3g}"]
    n = max(len(values), 1)
    idx = sorted({0, (n - 1) // 2, n - 1})
    if t0 is not None and bucket_s:
        x = [(i, datetime.fromtimestamp(t0 + i * bucket_s, UTC).strftime("%Y-%m-%d %H:%M:%S" if i == 0
                                                                          else "%H:%M:%S")) for i in idx]
    else:
        x = [(i, f"bucket {i + 1}") for i in idx]
    return top, y, x


def render_chart(values: Sequence[float | None], title: str = "", width: int = 480, height: int = 190, *,
                 t0: float | None = None, bucket_s: float | None = None) -> bytes:
    """A bar chart (PNG bytes) of ``values`` per time bucket (e.g. the anomaly rate), with Pillow: a
    y axis with its unit (%, for rates), an x axis of UTC times (:func:`chart_axes`), and a legend."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    ink, grid = (30, 30, 30), (215, 215, 215)
    d.text((4, 2), title[:80], fill=ink)
    top_v, ylab, xlab = chart_axes(values, t0, bucket_s)
    left, right, top, bottom = 44, width - 8, 20, height - 44
    for k, lab in enumerate(ylab):                       # y axis: gridlines at 0, half, top
        yy = bottom - (bottom - top) * k / 2
        d.line([left, yy, right, yy], fill=grid)
        d.text((left - 6 - 6 * len(lab), yy - 6), lab, fill=ink)
    d.line([left, top, left, bottom], fill=ink)
    d.line([left, bottom, right, bottom], fill=ink)
    vals = list(values) or [None]
    w = (right - left) / len(vals)
    for i, v in enumerate(vals):
        if v is None:
            continue
        h = (bottom - top - 1) * min(max(v / top_v, 0.0), 1.0)
        x0 = left + 1 + i * w
        colour = (200, 40, 40) if v >= 0.5 * top_v and v > 0 else (70, 120, 200)
        d.rectangle([x0, bottom - 1 - h, x0 + max(w - 2, 1), bottom - 1], fill=colour)
    for i, lab in xlab:                                  # x axis: ticks and times
        xx = left + (i + 0.5) * w
        d.line([xx, bottom, xx, bottom + 4], fill=ink)
        d.text((min(max(xx - 3 * len(lab), 2), width - 6 * len(lab) - 2), bottom + 6), lab, fill=ink)
    per = f", {bucket_s:g} s per bar" if bucket_s else ""
    d.text((left, height - 24), f"time (UTC){per}", fill=ink)
    d.rectangle([left, height - 11, left + 8, height - 3], fill=(200, 40, 40))
    d.text((left + 12, height - 13), ">= 50 %", fill=ink)
    d.rectangle([left + 70, height - 11, left + 78, height - 3], fill=(70, 120, 200))
    d.text((left + 82, height - 13), "< 50 %   no bar: no events", fill=ink)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _fmt_t(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def compose_alert(kind: str, inc: dict[str, Any], sender: str, to: Sequence[str], series: Series = (),
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
    title = f"anomaly rate at {where} (% of its events)"
    return _message(subject, sender, to, text, facts, series, title, dashboard_url)


def compose_summary(period_s: float, figures: dict[str, Any], incidents: Sequence[dict[str, Any]], sender: str,
                    to: Sequence[str], series: Series = (), dashboard_url: str = "") -> EmailMessage:
    """The periodic summary mail: the period's figures and its incidents."""
    subject = f"[mailpulse] summary of the last {period_s / 3600:.1f} h: {figures.get('incidents_opened', 0)} incidents"
    facts = [(k.replace("_", " "), str(v)) for k, v in figures.items()]
    facts += [(f"incident {i['id']}", f"{i['state']} {i['severity']} at {i['root_cause']}") for i in incidents]
    text = f"{subject}\n\n" + "\n".join(f"{k}: {v}" for k, v in facts)
    return _message(subject, sender, to, text, facts, series, "anomalies per bucket", dashboard_url)


def _message(subject: str, sender: str, to: Sequence[str], text: str, facts: list[tuple[str, str]],
             series: Series, chart_title: str, dashboard_url: str) -> EmailMessage:
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
    png = (render_chart(series.rates, chart_title, t0=series.t0, bucket_s=series.bucket_s)
           if isinstance(series, RateSeries) else render_chart(list(series), chart_title))
    html_part.add_related(png, maintype="image", subtype="png", cid=cid,
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
               series: Series = (), context: dict[str, Any] | None = None) -> bool:
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

    def maybe_summary(self, series: Series = (), force: bool = False) -> bool:
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
