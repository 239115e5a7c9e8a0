"""The active 4K probe: send a heavy, image-rich e-mail through a relay route and fetch it back.

One probe (:meth:`Prober.run`):

1. **Compose** (:func:`compose`): ``multipart/mixed`` = [ ``multipart/related`` = [ HTML that
   shows the image by ``cid:``, the inline 3840x2160 image ], an attachment ].  The image and the
   attachment are generated deterministically (same bytes on every node, every run; generated once
   per process and cached).  Headers carry the probe id (``X-Mailpulse-Probe-Id``), the sending
   node, the route, the send time in Unix milliseconds (``X-Mailpulse-Sent-Ms``) and the SHA-256 of
   the image and the attachment.
2. **Send** over SMTP to the route's relay (STARTTLS and AUTH when configured).
3. **Fetch back** over IMAP: the mailbox is opened *before* sending; then, when the server
   advertises IDLE (and the route's ``imap_idle`` allows it), the prober idles until the server
   pushes ``EXISTS`` (:mod:`.imapwait`), else it polls every ``poll_interval_s`` (``NOOP`` +
   ``UID SEARCH HEADER``), until the probe appears or ``timeout_s`` passes; the probe is fetched
   and deleted (``\\Deleted`` + ``EXPUNGE``).
4. **Measure**: latency (arrival minus the send timestamp, in ms: with IDLE the arrival is when
   the ``EXISTS`` push was read, resolution 1 ms from the send header's whole milliseconds, and
   the event's ``poll_interval_ms`` is 0; when polling it is the poll that saw it, resolution the
   poll interval), outcome (``ok``, ``damaged``, ``lost``; a probe that shows up after its
   timeout is reported once more as ``late`` - the earlier ``lost`` verdict is superseded, never
   counted twice), integrity (MIME structure, image decodes at 3840x2160, byte hashes; PSNR of the
   arrived image against the original when a hop recompressed or resized it), per-hop delays from
   the ``Received:`` chain (1 s resolution), refined with Postfix's own ``delays=`` when the route
   names the relays' log files.

Failure modes: an SMTP error (refused connection, rejected recipient) gives a ``lost`` result whose
``error`` says which step failed; an IMAP login or connection error before sending raises
:class:`ProbeError` (nothing can be measured); an IMAP connection that breaks while waiting (idling
or polling) gives a ``lost`` result saying so (a later arrival is then ``late``); a damaged probe is
reported, not raised.  A probe lost after its submission carries the hops (``from``/``by`` only,
``assumed``) of the route's last probe that arrived, so the correlation charges the loss to that
path's relays rather than to the node.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, ClassVar

from mailpulse.config.node import ProbeRoute, ProbeSettings
from mailpulse.features import OUTCOMES

from .events import Event, event_id
from .headers import HeaderBlock
from .imapwait import REFUSED, has_idle, idle_wait
from .probemail import H_ID, H_NODE, H_SENT, ProbeContent, ProbeError, analyse, cached_content, compose
from .quarantine import Quarantine, describe
from .received import parse_chain

__all__ = ["ProbeError", "ProbeEvent", "ProbeRoute", "ProbeSettings", "Prober"]

#: Probe ids :attr:`Prober.finished` remembers (a few minutes of probes on every route)
FINISHED_KEPT = 4096
_DELAYS = re.compile(r"\b(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): to=<(?P<to>[^>]*)>.*?"
                     r"\bdelay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+).*?status=(?P<status>\w+)")


def postfix_delays(queue_ids: Sequence[str], logs: Sequence[str],
                   tail_bytes: int = 8 << 20) -> dict[str, dict[str, Any]]:
    """Postfix ``delay=``/``delays=`` (10 ms resolution) of the given queue ids, from the last
    ``tail_bytes`` of each readable log file (unreadable files are skipped)."""
    want = set(q for q in queue_ids if q)
    out: dict[str, dict[str, Any]] = {}
    if not want:
        return out
    for path in logs:
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - tail_bytes))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        for m in _DELAYS.finditer(text):
            if m.group("qid") in want:
                out[m.group("qid")] = {"delay_s": float(m.group("delay")),
                                       "delays": [float(v) for v in m.group("delays").split("/")],
                                       "status": m.group("status")}
    return out


def hops_of(head: HeaderBlock, route: ProbeRoute) -> list[dict[str, Any]]:
    """Per-hop delays: the ``Received:`` chain (oldest first), refined with Postfix ``delays=``."""
    hops = [h.to_json() | {"ts": h.ts} for h in parse_chain(head.get_all("received"))]
    if route.maillogs:
        found = postfix_delays([h.get("id") or "" for h in hops], route.maillogs)
        for h in hops:
            pf = found.get(h.get("id") or "")
            if pf:
                h["postfix"] = pf
    return hops


# --------------------------------------------------------------------------------------------
# the event
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ProbeEvent(Event):
    """The measurement of one probe (or a late arrival of an earlier one)."""

    KIND: ClassVar[str] = "probe"

    route: str = ""
    probe_id: str = ""
    outcome: str = ""               # ok, damaged, lost, late
    sent_ms: int = 0
    arrived_ms: int | None = None
    latency_ms: float | None = None
    poll_interval_ms: float = 0.0
    size: int = 0
    image_pixels: int | None = None
    hops: list[dict[str, Any]] = field(default_factory=list)
    integrity: dict[str, Any] | None = None
    supersedes: str | None = None   # id of the "lost" event a late arrival corrects
    error: str | None = None

    @property
    def id(self) -> str:
        return event_id(self.node, self.KIND, self.probe_id, self.outcome)

    def raw_features(self) -> dict[str, float | None]:
        delays = [h["delay_s"] for h in self.hops if h.get("delay_s") is not None]
        return {
            "delay_total_ms": self.latency_ms,
            "delay_queue_ms": max(delays) * 1000.0 if delays else None,
            "size_bytes": float(self.size) if self.size else None,
            "outcome": float(OUTCOMES.get(self.outcome, 3)),
            "recipients": 1.0,
            "image_pixels": None if self.image_pixels is None else float(self.image_pixels),
        }

    def fields(self) -> dict[str, Any]:
        hops = [{k: v for k, v in h.items() if k != "ts"} for h in self.hops]
        return {"route": self.route, "probe_id": self.probe_id, "outcome": self.outcome,
                "sent_ms": self.sent_ms, "arrived_ms": self.arrived_ms, "latency_ms": self.latency_ms,
                "poll_interval_ms": self.poll_interval_ms, "size": self.size,
                "image_pixels": self.image_pixels, "hops": hops, "integrity": self.integrity,
                "supersedes": self.supersedes, "error": self.error}

    def summary(self) -> dict[str, Any]:
        """The short form for the status document and ``node probe`` output."""
        integ = self.integrity or {}
        return {"route": self.route, "probe_id": self.probe_id, "outcome": self.outcome,
                "latency_ms": self.latency_ms, "psnr_db": integ.get("psnr_db"),
                "intact": integ.get("intact"), "ts": self.ts}


# --------------------------------------------------------------------------------------------
# the prober
# --------------------------------------------------------------------------------------------


@dataclass
class _Lost:
    route: str
    sent_ms: int
    event_id: str


class Prober:
    """Runs probes for one node and remembers lost probes so that a late arrival is recognised.

    Parameters
    ----------
    node : str
        Node id (in the probe headers; only this node's probes are taken from a mailbox).
    settings : ProbeSettings
        Content and routes.
    state_file : Path, optional
        Where the lost-probe registry is kept across restarts (JSON).
    """

    #: Name of the prober in the quarantine.
    name = "probe"

    def __init__(self, node: str, settings: ProbeSettings, state_file: Path | None = None,
                 cache_dir: Path | None = None, quarantine: Quarantine | None = None) -> None:
        self.node = node
        self.settings = settings
        self.quarantine = quarantine or Quarantine()
        self.state_file = state_file
        self.cache_dir = cache_dir
        self._content: ProbeContent | None = None
        self.lost: dict[str, _Lost] = {}
        self.counts = {"sent": 0, "ok": 0, "damaged": 0, "lost": 0, "late": 0, "stray": 0}
        #: per route, how the last probe waited for mail: ``idle`` (IMAP IDLE) or ``poll``
        self.wait_mode: dict[str, str] = {}
        #: per route, the relays (``from``/``by``) the last probe that arrived went through
        self.last_path: dict[str, list[dict[str, Any]]] = {}
        #: probes sent and still awaited (probe id -> route): routes run concurrently, each in its own
        #: thread, and may share a mailbox; a probe another route awaits is left to that route
        self.inflight: dict[str, str] = {}
        #: probes whose wait has ended (newest last, at most :data:`FINISHED_KEPT`): another route's
        #: thread that fetched one just before its owner deleted it drops it quietly, not as a stray
        self.finished: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.RLock()
        self._load()

    @property
    def content(self) -> ProbeContent:
        with self._lock:
            if self._content is None:
                s = self.settings
                self._content = cached_content(self.cache_dir, s.image_format, s.image_quality, s.attachment_bytes)
            return self._content

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            data = json.loads(self.state_file.read_text())
            self.lost = {k: _Lost(**v) for k, v in data.get("lost", {}).items()}
        except (OSError, ValueError, TypeError):
            self.lost = {}

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _save(self) -> None:
        if self.state_file is None:
            return
        with self._lock:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"lost": {k: asdict(v) for k, v in self.lost.items()}}))
            tmp.replace(self.state_file)

    def route(self, name: str) -> ProbeRoute:
        for r in self.settings.routes:
            if r.name == name:
                return r
        raise KeyError(f"no probe route named {name!r}")

    # -- connections --------------------------------------------------------------------------

    def _ssl(self, route: ProbeRoute) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=route.ca_file)

    @contextlib.contextmanager
    def _imap(self, route: ProbeRoute) -> Iterator[imaplib.IMAP4]:
        try:
            if route.imap_security == "tls":
                im: imaplib.IMAP4 = imaplib.IMAP4_SSL(route.imap_host, route.imap_port,
                                                      ssl_context=self._ssl(route), timeout=10)
            else:
                im = imaplib.IMAP4(route.imap_host, route.imap_port, timeout=10)
                if route.imap_security == "starttls":
                    im.starttls(self._ssl(route))
            im.login(route.imap_username, route.imap_password)
            typ, _ = im.select(route.mailbox)
            if typ != "OK":
                raise ProbeError(f"probe route {route.name}: IMAP mailbox {route.mailbox} cannot be selected")
            self.wait_mode[route.name] = "idle" if route.imap_idle and has_idle(im) else "poll"
        except (OSError, imaplib.IMAP4.error) as e:
            raise ProbeError(f"probe route {route.name}: IMAP {route.imap_host}:{route.imap_port} failed: {e}") from e
        try:
            yield im
        finally:
            with contextlib.suppress(Exception):
                im.close()
            with contextlib.suppress(Exception):
                im.logout()

    def _send(self, route: ProbeRoute, data: bytes) -> None:
        if route.smtp_security == "tls":
            s: smtplib.SMTP = smtplib.SMTP_SSL(route.smtp_host, route.smtp_port, timeout=30,
                                               context=self._ssl(route))
        else:
            s = smtplib.SMTP(route.smtp_host, route.smtp_port, timeout=30)
        try:
            s.ehlo()
            if route.smtp_security == "starttls":
                s.starttls(context=self._ssl(route))
                s.ehlo()
            if route.smtp_username:
                s.login(route.smtp_username, route.smtp_password or "")
            s.sendmail(route.mail_from, [route.rcpt_to], data)
        finally:
            with contextlib.suppress(Exception):
                s.quit()

    @staticmethod
    def _search(im: imaplib.IMAP4, node: str) -> list[str]:
        im.noop()
        typ, data = im.uid("SEARCH", "HEADER", H_NODE, node)
        if typ != "OK" or not data or not data[0]:
            return []
        return [u.decode() for u in data[0].split()]

    @staticmethod
    def _fetch(im: imaplib.IMAP4, uid: str) -> bytes | None:
        typ, data = im.uid("FETCH", uid, "(BODY.PEEK[])")
        if typ != "OK":
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    @staticmethod
    def _delete(im: imaplib.IMAP4, uids: Sequence[str]) -> None:
        if uids:
            im.uid("STORE", ",".join(uids), "+FLAGS.SILENT", r"(\Deleted)")
            im.expunge()

    # -- one probe ----------------------------------------------------------------------------

    def run(self, route_name: str, stop: threading.Event | None = None) -> list[ProbeEvent]:
        """Send one probe on a route and wait for it; return its event, plus ``late`` events for
        earlier lost probes that turned up meanwhile.  If ``stop`` is set while waiting, the probe
        is reported lost (a later arrival will be recognised as late).

        Thread-safe: the node runs each route in its own thread, so one route's wait (up to its
        ``timeout_s`` for a lost probe) never delays another route's probes."""
        route = self.route(route_name)
        content = self.content
        probe_id = uuid.uuid4().hex
        seen: set[str] = set()
        try:
            with self._imap(route) as im:
                return self._run(im, route, content, probe_id, seen, stop)
        finally:
            with self._lock:
                self.inflight.pop(probe_id, None)
                self.finished[probe_id] = None
                while len(self.finished) > FINISHED_KEPT:
                    self.finished.popitem(last=False)

    def _run(self, im: imaplib.IMAP4, route: ProbeRoute, content: ProbeContent, probe_id: str, seen: set[str],
             stop: threading.Event | None) -> list[ProbeEvent]:
        out: list[ProbeEvent] = []
        # earlier probes still in the mailbox (late ones, or strays from before a restart)
        out += self._collect(im, route, content, None, seen)
        sent_ms = int(time.time() * 1000)
        data = compose(content, probe_id, self.node, route, sent_ms)
        with self._lock:
            self.inflight[probe_id] = route.name
        self._count("sent")
        try:
            self._send(route, data)
        except (OSError, smtplib.SMTPException) as e:
            ev = self._event(route, probe_id, "lost", sent_ms, size=len(data))
            ev.error = f"SMTP to {route.smtp_host}:{route.smtp_port} failed: {e}"
            self._mark_lost(ev)
            return [*out, ev]
        deadline = time.monotonic() + route.timeout_s
        notified: float | None = None
        broken: str | None = None
        while True:
            try:
                got = self._collect(im, route, content, probe_id, seen, notified)
            except (OSError, imaplib.IMAP4.error) as e:   # the connection broke while waiting
                broken = f"IMAP {route.imap_host}:{route.imap_port} failed while waiting: {e}"
                break
            mine = [e for e in got if e.probe_id == probe_id]
            out += got
            if mine or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                break
            notified = None
            if self.wait_mode[route.name] == "idle":
                try:
                    notified = idle_wait(im, deadline - time.monotonic(), stop)
                except (OSError, imaplib.IMAP4.error) as e:
                    broken = f"IMAP {route.imap_host}:{route.imap_port} failed while idling: {e}"
                    break
                if notified == REFUSED:
                    self.wait_mode[route.name], notified = "poll", None
            else:
                time.sleep(route.poll_interval_s)
        if not any(e.probe_id == probe_id for e in out):
            ev = self._event(route, probe_id, "lost", sent_ms, size=len(data))
            ev.error = broken or (f"not arrived within {route.timeout_s:g} s" if stop is None or not stop.is_set()
                                  else "the node stopped before the probe came back")
            # accepted by the route's first relay, never read back: it was lost somewhere on the path the
            # route's mail took last time - the hops of that path (no delays), marked as assumed, let the
            # collector's correlation charge the loss to those relays instead of to this node
            ev.hops = [dict(h) for h in self.last_path.get(route.name, [])]
            self._mark_lost(ev)
            out.append(ev)
        return out

    def _mark_lost(self, ev: ProbeEvent) -> None:
        with self._lock:
            self.counts["lost"] += 1
            self.inflight.pop(ev.probe_id, None)
            self.lost[ev.probe_id] = _Lost(ev.route, ev.sent_ms, ev.id)
            self._save()

    def _event(self, route: ProbeRoute, probe_id: str, outcome: str, sent_ms: int, size: int = 0) -> ProbeEvent:
        idle = self.wait_mode.get(route.name) == "idle"
        return ProbeEvent(ts=sent_ms / 1000.0, node=self.node, route=route.name, probe_id=probe_id,
                          outcome=outcome, sent_ms=sent_ms, size=size,
                          poll_interval_ms=0.0 if idle else route.poll_interval_s * 1000.0)

    def _collect(self, im: imaplib.IMAP4, route: ProbeRoute, content: ProbeContent, current: str | None,
                 seen: set[str], notified: float | None = None) -> list[ProbeEvent]:
        """Fetch, measure and delete every new probe of this node in the mailbox; ``notified`` is
        when IDLE reported the arrival (``time.time()``), else arrival is now (the poll saw it)."""
        uids = [u for u in self._search(im, self.node) if u not in seen]
        if not uids:
            return []
        arrived_precise = (time.time() if notified is None else notified) * 1000.0
        arrived_ms = int(arrived_precise)
        out: list[ProbeEvent] = []
        delete: list[str] = []
        for uid in uids:
            seen.add(uid)
            data = self._fetch(im, uid)
            if data is None:
                continue
            end = data.find(b"\r\n\r\n")
            hdr = BytesParser(policy=policy.compat32).parsebytes(data[:end if end >= 0 else 65536], headersonly=True)
            pid = (hdr.get(H_ID) or "").strip()
            try:
                sent_ms = int((hdr.get(H_SENT) or "").strip())
            except ValueError:
                sent_ms = 0
            of = route
            with self._lock:
                awaited = pid != current and pid in self.inflight
                lost = self.lost.pop(pid, None) if pid != current and not awaited else None
                if lost is not None:
                    self.counts["lost"] -= 1
                    self._save()
            if pid == current:
                outcome = None
                supersedes = None
            elif awaited:
                continue           # another route's probe, in a shared mailbox: that route fetches it
            elif lost is not None:
                outcome = "late"
                supersedes = lost.event_id
                of = next((r for r in self.settings.routes if r.name == lost.route), route)
            elif pid in self.finished:
                delete.append(uid)   # its own route has measured it (and is deleting it): not a stray
                continue
            else:
                # a probe of ours with no record (sent before a restart lost the state, or a duplicate)
                self._count("stray")
                delete.append(uid)
                continue
            try:
                ev = self._measure(of, content, pid, sent_ms, arrived_ms, arrived_precise, data, outcome)
            except Exception as e:   # one hostile or broken arrival must not stop the prober
                reason = f"the arrived probe could not be analysed: {describe(e)}"
                self.quarantine.record(self.name, pid, reason, data[:1024])
                self._count("damaged")
                ev = self._event(of, pid, "damaged", sent_ms, size=len(data))
                ev.arrived_ms = arrived_ms
                ev.error = reason
            ev.supersedes = supersedes
            out.append(ev)
            delete.append(uid)
        self._delete(im, delete)
        return out

    def _measure(self, route: ProbeRoute, content: ProbeContent, probe_id: str, sent_ms: int, arrived_ms: int,
                 arrived_precise: float, data: bytes, outcome: str | None) -> ProbeEvent:
        integ, head = analyse(data, content)
        if outcome is None:
            outcome = "ok" if integ.intact else "damaged"
        self._count(outcome)
        ev = self._event(route, probe_id, outcome, sent_ms, size=len(data))
        ev.arrived_ms = arrived_ms
        ev.latency_ms = round(arrived_precise - sent_ms, 1)
        ev.image_pixels = (integ.image_width or 0) * (integ.image_height or 0) if integ.image_decodes else None
        ev.integrity = integ.to_json()
        ev.hops = hops_of(head, route)
        if ev.hops:
            with self._lock:
                self.last_path[route.name] = [{"from": h.get("from"), "by": h.get("by"), "assumed": True}
                                          for h in ev.hops]
        return ev
