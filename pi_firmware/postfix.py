"""Parse Postfix log lines and join them by queue id into per-recipient delivery events.

A message's life in the log, by queue id::

    smtpd[..]: 4Q1: client=...                            (ignored)
    cleanup[..]: 4Q1: message-id=<...>                    -> joined: message_id
    qmgr[..]: 4Q1: from=<a@x>, size=1234, nrcpt=2 (queue active)   -> joined: sender, size, nrcpt
    smtp[..]: 4Q1: to=<b@y>, relay=..., delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (...)
                                                          -> one DeliveryEvent per such line
    qmgr[..]: 4Q1: from=<a@x>, status=expired, returned to sender
                                                          -> one "expired" event per recipient
                                                             still deferred (or one with to="")
    qmgr[..]: 4Q1: removed                                -> the queue id is forgotten

Delivery lines of every agent are understood (``smtp``, ``lmtp``, ``virtual``, ``local``,
``pipe``, ``error``, ``retry``, ``discard``...: any ``to=<...>, ..., status=`` line), with or
without ``orig_to=`` and ``conn_use=``; the statuses are ``sent``, ``deferred``, ``bounced``,
``expired`` and the address-verification results ``deliverable`` and ``undeliverable``
(``reject_unverified_sender``/``_recipient`` probes, :data:`STATUSES`).  Each line's format is
detected on its own (:mod:`mailpulse.pi_firmware.logformats`): RFC 3164 syslog with or without
``<PRI>`` (``Nov 26 10:00:00``, optionally with fractional seconds; the year is inferred, see
:class:`PostfixParser`), RFC 3339 stamps (``2026-11-26T10:00:00.123456+00:00``), RFC 5424, and
journald's ``short``, ``short-precise``, ``short-iso``, ``short-iso-precise``, ``short-full``,
``short-unix`` and ``json`` exports.

Event ids (see :mod:`mailpulse.pi_firmware.events`) hash the whole line (without its newline) with an
occurrence counter that tells byte-identical lines under one timestamp apart; the counters are part
of the saved state (:meth:`PostfixParser.occurrence_state`, :meth:`PostfixParser.save_state`).

**Whose deferral.**  When Postfix made no connection it logs ``relay=none``: a refused or timed-out
connection (``... (connect to host[ip]:port: Connection refused)``), or a destination it marked dead
after earlier failures (``... (delivery temporarily suspended: TLS is required, but was not offered
by host 127.0.0.1[127.0.0.1])``, no port).  Such a deferral belongs to the relay Postfix was trying
to reach, not to this host: its ``relay`` is the ``host[ip]:port`` its text names with a port, else
the last relay a delivery to the recipient's domain went to (at most :data:`MAX_DOMAINS` domains
remembered), else ``none`` as logged.

Memory is bounded: a queue id is forgotten on ``removed``, when it is older than ``max_age_s``
(by log time) and when more than ``max_queue_ids`` are held (the oldest first).

Queue ids: the short form (hexadecimal, 6 or more digits) and the long form (``enable_long_queue_ids``:
base-51 digits without vowels, a ``z``, more digits).

Hot path: one compiled regular expression splits every line (timestamp, host, program, queue id);
a second one, chosen by the first characters of the message, reads the fields; timestamps are
converted once per distinct text.  Lines in none of the formats (``not_log``), and lines the parser
recognises but cannot read (a delivery line without ``<>`` around the address, an unknown status,
a qmgr or cleanup line whose fields do not parse) are counted as ``unparsed``, the first
:data:`MAX_EXAMPLES` of them kept with the reason in ``Counters.examples``; everything else that is
not used (``connect from``, ``client=``, other programs) is counted as ``ignored``.  Nothing is
fatal: a line whose handling raises is counted (``errors``), reported to ``on_error`` (the node's
quarantine) and skipped.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .events import DeliveryEvent
from .logformats import canonical
from .quarantine import describe

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

#: Syslog prefix: timestamp, host, program[pid]: optional queue id.
LINE_RE = re.compile(
    r"(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)?"
    r"|@\d+(?:\.\d+)?)"
    r" (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[\d+\])?: "
    r"(?:(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{6,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+): )?")

#: The three characters after a queue id that mark a line the parser uses.
_KEYS = frozenset(("to=", "fro", "mes", "rem"))

#: The prefix with a queue id (groups: ts, host, prog, qid), the start of the one-call patterns below.
_PREFIX_QID = LINE_RE.pattern[:LINE_RE.pattern.rindex("(?:(?P<qid>")] + LINE_RE.pattern[
    LINE_RE.pattern.rindex("(?:(?P<qid>") + 3:-2]

#: Delivery statuses (what a ``to=`` line's ``status=`` may say; qmgr's ``expired`` is separate).
STATUSES = frozenset(("sent", "deferred", "bounced", "deliverable", "undeliverable"))

#: Unparsed lines kept as examples (with the reason) in :class:`Counters`.
MAX_EXAMPLES = 5
#: Recipient domains whose last relay is remembered (for ``relay=none`` deferrals; the oldest forgotten first).
MAX_DOMAINS = 4096
#: The next hop a ``relay=none`` deferral names, with its port: ``connect to host[ip]:port:``.
_CONNECT_TO = re.compile(r"connect to (?P<hop>[^\s\[\]:]*\[[^\]\s]+\]:\d{1,5})")

#: A delivery agent's status line (after the queue id).
DELIVERY_RE = re.compile(
    r"to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]*), (?:conn_use=\d+, )?"
    r"delay=(?P<delay>[\d.eE+-]+), delays=(?P<a>[\d.eE+-]+)/(?P<b>[\d.eE+-]+)/(?P<c>[\d.eE+-]+)/(?P<d>[\d.eE+-]+), "
    r"dsn=(?P<dsn>[\d.]+), status=(?P<status>[a-z]+)")

#: A whole delivery line in one match (the hot path; a line it misses takes the two-step path,
#: which tells why it is unparsed).
_DELIVERY_LINE = re.compile(_PREFIX_QID + DELIVERY_RE.pattern)
#: A whole "removed" line.
_REMOVED_LINE = re.compile(_PREFIX_QID + "removed")

#: qmgr: the message entered the active queue.
QMGR_FROM_RE = re.compile(r"from=<(?P<from>[^>]*)>, size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)")
#: qmgr: the message expired.
QMGR_EXPIRED_RE = re.compile(r"from=<(?P<from>[^>]*)>, status=expired")
#: cleanup: the message id.
CLEANUP_RE = re.compile(r"message-id=<?(?P<mid>[^>\s]*)>?")


class _Entry:
    """What is known about one queue id (slots: one small object per message in flight)."""

    __slots__ = ("deferred", "message_id", "nrcpt", "sender", "size", "ts")

    def __init__(self, ts: float) -> None:
        self.ts = ts
        self.sender: str | None = None
        self.size: int | None = None
        self.nrcpt: int | None = None
        self.message_id: str | None = None
        self.deferred: dict[str, str] | None = None   # recipient -> last dsn


@dataclass
class Counters:
    """Line and event counts since the parser was created."""

    lines: int = 0
    used: int = 0           # lines that made an event or fed the join
    ignored: int = 0        # log lines the parser does not use
    unparsed: int = 0       # not log lines (not_log), or recognised but unreadable
    not_log: int = 0        # lines in none of the log formats
    errors: int = 0         # lines whose handling raised (part of unparsed; reported to on_error)
    events: int = 0
    status: dict[str, int] = field(default_factory=lambda: {"sent": 0, "deferred": 0, "bounced": 0, "expired": 0,
                                                            "deliverable": 0, "undeliverable": 0})
    evicted: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)   # (reason, line) of unparsed lines

    def example(self, reason: str, line: str) -> None:
        """Keep an unparsed line as an example (the first :data:`MAX_EXAMPLES`)."""
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((reason, line.rstrip("\r\n")[:300]))


class PostfixParser:
    """Stateful Postfix log parser with the queue-id join.

    Parameters
    ----------
    node : str
        Node id stamped on the events (part of their ids).
    year : int, optional
        Year of RFC 3164 timestamps (which carry none).  Default: the current year, except that a
        timestamp more than a day in the future is taken from the year before (a log read just
        after New Year).
    max_queue_ids : int
        Most queue ids held at once (the oldest are evicted first).
    max_age_s : float
        Queue ids not seen for longer than this (log time) are evicted; Postfix's default
        ``maximal_queue_lifetime`` is 5 days, each retry re-logs the qmgr line, which refreshes the
        entry.
    """

    def __init__(self, node: str = "", *, year: int | None = None, max_queue_ids: int = 100_000,
                 max_age_s: float = 6 * 86400.0, on_error: Callable[[str, str], None] | None = None) -> None:
        if max_queue_ids < 1:
            raise ValueError(f"max_queue_ids must be positive, not {max_queue_ids}")
        self.node = node
        self.on_error = on_error
        self.year = year
        self.max_queue_ids = max_queue_ids
        self.max_age_s = max_age_s
        self.queue: dict[str, _Entry] = {}
        self.counters = Counters()
        self._ts_cache: dict[str, float] = {}
        self._last_ts = 0.0
        self._sweep = 0
        # occurrences of each delivery/expiry line text under the current timestamp (event ids)
        self._occ_stamp = ""
        self._occ: dict[str, int] = {}
        #: recipient domain -> the relay (``host[ip]:port``) its last delivery attempt reached
        self.domain_relay: dict[str, str] = {}

    # -- occurrences (event ids) --------------------------------------------------------------
    def _occurrence(self, stamp: str, text: str) -> int:
        """How many times ``text`` was seen before under ``stamp`` (0 the first time).

        Two byte-identical delivery lines with the same timestamp (e.g. a recipient listed twice)
        are two attempts; the counter gives them distinct, still deterministic, event ids.  It is
        reset when the timestamp changes, and saved with the follower's position
        (:meth:`occurrence_state`) so a restart between two such lines continues the count.
        """
        if stamp != self._occ_stamp:
            self._occ_stamp = stamp
            self._occ = {}
        occ = self._occ
        k = occ.get(text, 0)
        occ[text] = k + 1
        return k

    def occurrence_state(self) -> dict[str, object]:
        """The occurrence counters of the current timestamp (small; JSON-ready)."""
        return {"stamp": self._occ_stamp, "counts": dict(self._occ)}

    def restore_occurrences(self, doc: object) -> bool:
        """Restore :meth:`occurrence_state`; False (and nothing changed) if ``doc`` is not one."""
        try:
            assert isinstance(doc, dict)
            stamp = str(doc["stamp"])
            counts = {str(k): int(v) for k, v in dict(doc["counts"]).items()}
        except (AssertionError, KeyError, TypeError, ValueError):
            return False
        self._occ_stamp, self._occ = stamp, counts
        return True

    # -- timestamps -------------------------------------------------------------------------
    def timestamp(self, text: str) -> float:
        """Unix time of a log timestamp (local time for RFC 3164, as syslog writes it)."""
        cached = self._ts_cache.get(text)
        if cached is not None:
            return cached
        if len(self._ts_cache) > 4096:
            self._ts_cache.clear()
        if text[0] == "@":
            v = float(text[1:])
        elif text[0].isdigit():
            t = text.replace("Z", "+00:00")
            try:
                v = datetime.fromisoformat(t).timestamp()
            except ValueError:
                v = self._last_ts
        else:
            mon = _MONTHS.get(text[:3], 1)
            day = int(text[4:6])
            hh, mm, rest = text[7:].split(":", 2)
            sec = float(rest)
            now = time.time()
            year = self.year or time.localtime(now).tm_year
            tt = (year, mon, day, int(hh), int(mm), int(sec), 0, 0, -1)
            try:
                v = time.mktime(tt) + (sec - int(sec))
                if self.year is None and v > now + 86400:
                    v = time.mktime((year - 1, *tt[1:])) + (sec - int(sec))
            except (OverflowError, ValueError):
                v = float(calendar.timegm(tt))
        self._ts_cache[text] = v
        return v

    # -- queue state ------------------------------------------------------------------------
    def _entry(self, qid: str, ts: float) -> _Entry:
        e = self.queue.get(qid)
        if e is None:
            e = _Entry(ts)
            self.queue[qid] = e
            if len(self.queue) > self.max_queue_ids:
                del self.queue[next(iter(self.queue))]
                self.counters.evicted += 1
        return e

    def _sweep_old(self, now: float) -> None:
        limit = now - self.max_age_s
        q = self.queue
        while q:
            qid = next(iter(q))
            if q[qid].ts >= limit:
                break
            del q[qid]
            self.counters.evicted += 1

    # -- parsing ----------------------------------------------------------------------------
    def feed(self, lines: Iterable[str]) -> Iterator[DeliveryEvent]:
        """Parse lines (with or without their newline), yielding delivery events as they complete.

        Fast path: a line in RFC 3164 or RFC 3339 form is taken as it is (other formats are
        rewritten by :func:`~mailpulse.pi_firmware.logformats.canonical` first); ``str.find``
        locates the program and queue id and the three characters after the queue id choose the
        line kind; only the kinds that are used (``to=``, qmgr ``from=``, ``message-id=``,
        ``removed``) go through a full regular expression, which also validates the prefix.

        It is one loop over ~100 lines on purpose: the replay's hot path, where a method call per
        line costs several per cent of the whole run; the rarer kinds are methods.
        """
        c = self.counters
        months = _MONTHS
        canon = canonical
        keys = _KEYS
        line_match = LINE_RE.match
        delivery_line = _DELIVERY_LINE.match
        removed_line = _REMOVED_LINE.match
        delivery = self._delivery
        qmgr_from = self._qmgr_from
        n = 0
        ignored = 0     # local counters of the two commonest outcomes (written back at the end)
        bad = 0
        try:
            for line in lines:
                n += 1
                if not ((line[:3] in months and line[6:7] == " ") or (line[10:11] == "T" and line[:1].isdigit())):
                    fixed = canon(line)
                    if fixed is None:
                        bad += 1
                        if len(c.examples) < MAX_EXAMPLES:
                            c.example("not a log line in a known format", line)
                        continue
                    line = fixed
                # every used or recognised line has "=<" (to=<, from=<, message-id=<), "to=",
                # "from=" or "removed"
                if "=<" not in line and "removed" not in line and "to=" not in line and "from=" not in line:
                    ignored += 1
                    continue
                try:
                    i = line.find(": ", 15)
                    j = line.find(": ", i + 2, i + 28) if i >= 0 else -1
                    key = line[j + 2:j + 5] if j > 0 else ""
                    if key not in keys:
                        ignored += 1   # not used (connect, client=, NOQUEUE, other programs)
                        continue
                    if key == "to=":   # the hot path: one match for the whole line
                        d = delivery_line(line)
                        if d is not None:
                            g = d.groups()
                            ev = delivery(line, g[0], g[1], g[3], g[2][g[2].rfind("/") + 1:], g[4:])
                            if ev is not None:
                                yield ev
                            continue
                    elif key == "rem":
                        r = removed_line(line)
                        if r is not None:
                            if r.group(3).endswith("qmgr"):
                                self.queue.pop(r.group(4), None)
                            ignored += 1
                            continue
                    m = line_match(line)
                    if m is None or m.end() != j + 2:
                        if m is None:
                            self._unparsed("the syslog prefix (time, host, program, queue id) does not parse", line)
                        else:
                            ignored += 1  # a ": " inside the text, not after a queue id
                        continue
                    stamp, host, prog, qid = m.groups()
                    if qid is None:   # to=, from= and message-id= lines all name their queue id
                        self._unparsed("a to=/from=/message-id= line without a queue id", line)
                        continue
                    agent = prog[prog.rfind("/") + 1:]
                    if key == "to=":
                        dm = DELIVERY_RE.match(line, j + 2)
                        if dm is None:
                            self._unparsed("a delivery line (to=) whose fields do not parse", line)
                            continue
                        ev = delivery(line, stamp, host, qid, agent, dm.groups())
                        if ev is not None:
                            yield ev
                    elif agent == "qmgr":
                        if key == "fro":
                            evs = qmgr_from(line, j + 2, stamp, host, qid)
                            if evs:
                                yield from evs
                        else:
                            if key == "rem":
                                self.queue.pop(qid, None)
                            ignored += 1
                    elif key == "mes" and agent == "cleanup":
                        mm = CLEANUP_RE.match(line, j + 2)
                        if mm is None:
                            self._unparsed("a cleanup message-id= line whose value does not parse", line)
                        else:
                            self._entry(qid, self.timestamp(stamp)).message_id = mm.group("mid")
                            c.used += 1
                    else:
                        ignored += 1
                except Exception as e:  # a line must never stop the parser
                    c.errors += 1
                    c.unparsed += 1
                    reason = f"the parser failed on the line: {describe(e)}"
                    c.example(reason, line)
                    if self.on_error is not None:
                        self.on_error(line, reason)
        finally:
            c.lines += n
            c.ignored += ignored
            c.unparsed += bad
            c.not_log += bad

    def _unparsed(self, reason: str, line: str) -> None:
        c = self.counters
        c.unparsed += 1
        c.example(reason, line)

    def _delivery(self, line: str, stamp: str, host: str, qid: str, agent: str,
                  fields: tuple[str, ...]) -> DeliveryEvent | None:
        """The event of a delivery line; ``fields`` are :data:`DELIVERY_RE`'s groups."""
        c = self.counters
        to, relay, delay, da, db, dc, dd, dsn, status = fields
        if status not in STATUSES:
            self._unparsed(f"a delivery line with the unknown status {status!r}", line)
            return None
        try:
            delays = (float(da), float(db), float(dc), float(dd))
            fdelay = float(delay)
        except ValueError:
            self._unparsed("a delivery line whose delay= or delays= is not a number", line)
            return None
        if relay == "none":
            if status == "deferred":
                relay = self._relay_of_deferral(line, to)
        elif "[" in relay and agent in ("smtp", "lmtp"):
            dom = to[to.rfind("@") + 1:].lower()
            dr = self.domain_relay
            if dr.get(dom) != relay:
                dr.pop(dom, None)
                if len(dr) >= MAX_DOMAINS:
                    del dr[next(iter(dr))]
                dr[dom] = relay
        ts = self.timestamp(stamp)
        e = self.queue.get(qid)
        text = line.rstrip("\r\n")
        occ = self._occurrence(stamp, text)
        node = self.node
        if e is None:
            ev = DeliveryEvent(ts, node, host, qid, agent, to, status, relay, fdelay, delays,
                               dsn, None, None, None, None, stamp, text, occ)
            if status == "deferred":
                self._entry(qid, ts).deferred = {to: dsn}
        else:
            ev = DeliveryEvent(ts, node, host, qid, agent, to, status, relay, fdelay, delays,
                               dsn, e.sender, e.size, e.nrcpt, e.message_id, stamp, text, occ)
            if status == "deferred":
                if e.deferred is None:
                    e.deferred = {}
                e.deferred[to] = dsn
            elif e.deferred:
                e.deferred.pop(to, None)
        st = c.status
        st[status] = st.get(status, 0) + 1
        c.events += 1
        c.used += 1
        return ev

    def _relay_of_deferral(self, line: str, to: str) -> str:
        """The relay a ``relay=none`` deferral was for (see the module docstring: whose deferral)."""
        m = _CONNECT_TO.search(line)
        if m is not None:
            return m.group("hop")
        return self.domain_relay.get(to[to.rfind("@") + 1:].lower(), "none")

    def _qmgr_from(self, line: str, pos: int, stamp: str, host: str, qid: str) -> list[DeliveryEvent] | None:
        c = self.counters
        q = self.queue
        f = QMGR_FROM_RE.match(line, pos)
        if f is not None:
            ts = self.timestamp(stamp)
            e = q.pop(qid, None)   # re-insert: the entry moves to the young end
            if e is None:
                e = _Entry(ts)
                if len(q) >= self.max_queue_ids:
                    del q[next(iter(q))]
                    c.evicted += 1
            e.ts = ts
            q[qid] = e
            e.sender = f.group("from")
            e.size = int(f.group("size"))
            e.nrcpt = int(f.group("nrcpt"))
            c.used += 1
            self._sweep += 1
            if self._sweep >= 4096:
                self._sweep = 0
                self._sweep_old(ts)
            return None
        x = QMGR_EXPIRED_RE.match(line, pos)
        if x is None:
            self._unparsed("a qmgr from= line whose fields do not parse", line)
            return None
        c.used += 1
        return list(self._expired(qid, stamp, host, x.group("from"), line.rstrip("\r\n")))

    # -- persistence of the join (restarts) --------------------------------------------------
    def save_state(self, path: Path | str) -> None:
        """Save the queue-id join atomically (with the follower's position, so that a delivery
        line read after a restart still finds its qmgr/cleanup fields)."""
        doc = {qid: [e.ts, e.sender, e.size, e.nrcpt, e.message_id, e.deferred] for qid, e in self.queue.items()}
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "queue": doc, "occurrences": self.occurrence_state()},
                                  ensure_ascii=False), encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, p)

    def load_state(self, path: Path | str) -> bool:
        """Restore a join saved by :meth:`save_state`; False (and an empty join) if it is absent or bad."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8", errors="surrogateescape"))
            queue: dict[str, _Entry] = {}
            for qid, (ts, sender, size, nrcpt, mid, deferred) in doc["queue"].items():
                e = _Entry(float(ts))
                e.sender, e.size, e.nrcpt, e.message_id = sender, size, nrcpt, mid
                e.deferred = dict(deferred) if deferred else None
                queue[str(qid)] = e
        except (OSError, ValueError, KeyError, TypeError):
            return False
        while len(queue) > self.max_queue_ids:
            del queue[next(iter(queue))]
        self.queue = queue
        if "occurrences" in doc:
            self.restore_occurrences(doc["occurrences"])
        return True

    def _expired(self, qid: str, stamp: str, host: str, sender: str, text: str) -> Iterator[DeliveryEvent]:
        ts = self.timestamp(stamp)
        e = self.queue.get(qid)
        rcpts = dict(e.deferred) if e is not None and e.deferred else {"": None}
        occ = self._occurrence(stamp, text)
        for to, dsn in rcpts.items():
            ev = DeliveryEvent(ts, self.node, host=host, queue_id=qid, agent="qmgr", recipient=to,
                               status="expired", dsn=dsn, sender=sender, stamp=stamp, text=text, occ=occ)
            if e is not None:
                ev.size, ev.nrcpt, ev.message_id = e.size, e.nrcpt, e.message_id
            self.counters.status["expired"] += 1
            self.counters.events += 1
            yield ev
        if e is not None:
            e.deferred = None


def parse_lines(lines: Iterable[str], node: str = "", *, year: int | None = None,
                max_queue_ids: int = 100_000) -> tuple[list[DeliveryEvent], Counters]:
    """Parse a whole sequence of lines; the events and the counters (convenience for tests)."""
    p = PostfixParser(node, year=year, max_queue_ids=max_queue_ids)
    events = list(p.feed(lines))
    return events, p.counters


__all__ = ["CLEANUP_RE", "DELIVERY_RE", "LINE_RE", "MAX_EXAMPLES", "QMGR_EXPIRED_RE", "QMGR_FROM_RE", "STATUSES",
           "Counters", "PostfixParser", "parse_lines"]
