"""Parse ``Received:`` header chains into hops with per-hop delays.

A relay prepends its ``Received:`` field, so a message's fields read newest first; :func:`parse_chain`
returns the hops oldest first.  Each field is split at its last ``;`` into the clauses (``from``,
``by``, ``via``, ``with``, ``id``, ``for``) and the date.  The parser is tolerant, never strict:

* folded lines (CRLF or LF followed by white space) are unfolded first;
* comments in parentheses (nested, with quoted pairs) are removed from the clauses, but the first
  comment after ``from`` is kept to find the sending IP address, and a field that starts with a
  ``(from user@host)`` comment (sendmail's local submissions) uses that as ``from``;
* the sending IP address (``ip``) is the first address in brackets or a bare address found in the
  ``from`` clause: in the first comments after it (``from h (h [192.0.2.1])``, qmail's
  ``from unknown (HELO x) (192.0.2.1)``), as its value (``from [192.0.2.1]``) or as the next word
  (Exim and fetchmail's ``from host [192.0.2.1]``); only a valid IPv4/IPv6 address is taken;
* dates are parsed by :func:`email.utils.parsedate_tz` after their comments (``(PDT)``,
  ``(MET DST)``) are dropped, two-digit years included, then checked: a day the month does not
  have, an hour, minute or second out of range (``31 Feb 25:61:61``), a zone beyond
  +/-:data:`MAX_ZONE_HOURS` hours or with more than 59 minutes, or a time outside years 1970-9999
  (UTC) gives ``timestamp = None`` with the reason in ``date_note``.  A date without a zone (or
  with ``-0000``, "local time unknown" in RFC 5322) is taken as UTC and flagged: ``date_note``
  says so, and the delays that use it are ``delay_uncertain``;
* ``delay_s`` of a hop is the next (newer) hop's time minus its own: negative when the clocks of
  the two relays disagree, reported as is and never clamped; ``None`` when either time is missing.

Failure: none for any text input (a field that matches nothing gives a hop with all clauses
``None``); very long fields are cut at :data:`MAX_FIELD` characters.  At most :data:`MAX_HOPS`
fields are parsed: :func:`dropped_hops` counts the rest.
"""

from __future__ import annotations

import calendar
import ipaddress
import itertools
import re
from dataclasses import dataclass
from email.utils import parsedate_tz
from typing import Any

from .events import iso_utc

#: Longest header field considered (characters); the rest is ignored.
MAX_FIELD = 8192
#: Most hops kept per message (the oldest beyond it are dropped and counted).
MAX_HOPS = 100

_CLAUSES = ("from", "by", "via", "with", "id", "for")
_FOLD = re.compile(r"\r?\n[ \t]+|\r\n|\r|\n")
_WS = re.compile(r"\s+")
_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_BARE_IP = re.compile(r"^\s*(?:IPv6:)?([0-9A-Fa-f:.]{3,})\s*$")
_ZONE = re.compile(r"([+-])(\d\d)(\d\d)$")
#: Zone names :func:`email.utils.parsedate_tz` knows (any other name, or none, gives offset 0).
_ZONE_NAMES = frozenset(("UT", "UTC", "GMT", "Z", "AST", "ADT", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT"))
_TIME = re.compile(r"\d{1,2}:\d{1,2}")


def _zone_given(plain: str) -> bool:
    """Whether a date names its zone (a numeric offset other than ``-0000``, or a known name)."""
    m = _TIME.search(plain)
    rest = plain[m.end():].split() if m is not None else plain.split()[-1:]
    return any((t.upper() in _ZONE_NAMES) or (len(t) == 5 and t[0] in "+-" and t[1:].isdigit() and t != "-0000")
               for t in rest)

#: Largest time-zone offset accepted, in hours (real zones span -12 to +14).
MAX_ZONE_HOURS = 18
#: Latest time a date may give (9999-12-31T23:59:59Z).
_MAX_TS = 253402300799


@dataclass(slots=True)
class Hop:
    """One relay hop.  ``ts`` is Unix seconds (UTC) or ``None``."""

    from_: str | None
    by: str | None
    with_: str | None
    id: str | None
    for_: str | None
    ip: str | None
    ts: float | None
    delay_s: float | None = None
    date_note: str | None = None        # why the date is missing or uncertain (None: it is sound)
    zone_known: bool = True             # False: the date had no zone and was taken as UTC
    delay_uncertain: bool = False       # delay_s uses a date whose zone was not known

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_, "by": self.by, "with": self.with_, "id": self.id, "for": self.for_,
                "ip": self.ip, "timestamp": iso_utc(self.ts), "delay_s": self.delay_s,
                "delay_uncertain": self.delay_uncertain, "date_note": self.date_note}


def split_comments(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Text with comments replaced by one space, and the comments with their positions."""
    out: list[str] = []
    size = 0                     # characters in ``out`` (the position of the next one)
    comments: list[tuple[int, str]] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and (depth or quoted):
            if depth == 0:
                out.append(text[i:i + 2])
                size += 2
            i += 2
            continue
        if depth == 0 and c == '"':
            quoted = not quoted
            out.append(c)
            size += 1
        elif quoted:
            out.append(c)
            size += 1
        elif c == "(":
            if depth == 0:
                start = i
            depth += 1
        elif c == ")" and depth:
            depth -= 1
            if depth == 0:
                comments.append((size, text[start + 1:i]))
                out.append(" ")
                size += 1
        elif depth == 0:
            out.append(c)
            size += 1
        i += 1
    if depth:  # unbalanced: keep the unterminated comment as one
        comments.append((size, text[start + 1:]))
    return "".join(out), comments


def _strip_angle(v: str) -> str:
    v = v.strip().rstrip(";,")
    if len(v) > 1 and v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    return v


def check_date(text: str) -> tuple[float | None, str | None, bool]:
    """Parse and check an RFC 5322 date with comments: (Unix time or ``None``, note, zone known).

    The note is ``None`` for a sound date, else one sentence: why the date was refused (the time
    is then ``None``) or that it had no zone and was taken as UTC.
    """
    plain, _ = split_comments(text)
    plain = _WS.sub(" ", plain).strip()
    if not plain:
        return None, None, True
    try:
        t = parsedate_tz(plain)
    except (ValueError, IndexError, TypeError, OverflowError):
        t = None
    if t is None:
        return None, f"the date {plain[:64]!r} does not parse", True
    year, month, day, hh, mm, ss = t[:6]
    off = t[9]
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(min(max(year, 1), 9999), month)[1]
            and 0 <= hh <= 23 and 0 <= mm <= 59 and 0 <= ss <= 60):
        return None, f"the date {plain[:64]!r} is not a valid calendar date and time", True
    z = _ZONE.search(plain)
    if z is not None and (int(z.group(2)) > MAX_ZONE_HOURS or int(z.group(3)) > 59):
        return None, f"the zone {z.group(0)} of {plain[:64]!r} is beyond +/-{MAX_ZONE_HOURS} hours", True
    try:
        ts = float(calendar.timegm((year, month, day, hh, mm, ss, 0, 1, 0)) - (off or 0))
    except (OverflowError, ValueError, TypeError):
        ts = -1.0
    if not 0 <= ts <= _MAX_TS:
        return None, f"the date {plain[:64]!r} is outside the years 1970-9999", True
    if off is None or not _zone_given(plain):
        return ts, "the date has no zone (or -0000): taken as UTC, its delays are uncertain", False
    return ts, None, True


def parse_date(text: str) -> float | None:
    """Unix time of an RFC 5322 date with comments, or ``None`` when it does not parse or is
    not a valid date (see :func:`check_date`)."""
    return check_date(text)[0]


def _as_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _from_ip(value: str, words: list[str], comments: list[str]) -> str | None:
    """The sending address of a ``from`` clause (see the module docstring)."""
    for cand in (value, *words):
        m = _IP.fullmatch(cand.strip().rstrip(";,")) if cand.startswith("[") else None
        if m is not None and (ip := _as_ip(m.group(1))) is not None:
            return ip
    for c in comments:
        for m in _IP.finditer(c):
            if (ip := _as_ip(m.group(1))) is not None:
                return ip
        b = _BARE_IP.match(c)
        if b is not None and (ip := _as_ip(b.group(1))) is not None:
            return ip
    return None


def parse_received(value: str) -> Hop:
    """Parse one ``Received:`` field value (folded or not)."""
    value = _FOLD.sub(" ", str(value)[:MAX_FIELD])
    clauses, sep, date = value.rpartition(";")
    if not sep:
        clauses, date = value, ""
    ts, note, zone_known = check_date(date) if date.strip() else (None, None, True)
    plain, comments = split_comments(clauses)
    tokens = plain.split()
    found: dict[str, str] = {}
    pos_of: dict[str, int] = {}
    offs = 0
    positions = []
    for tok in tokens:  # character position of every token in ``plain``
        offs = plain.index(tok, offs)
        positions.append(offs)
        offs += len(tok)
    i = 0
    while i < len(tokens):
        key = tokens[i].lower()
        if key in _CLAUSES and key not in found and i + 1 < len(tokens) and tokens[i + 1].lower() not in _CLAUSES:
            found[key] = _strip_angle(tokens[i + 1])
            pos_of[key] = positions[i + 1]
            i += 2
        else:
            i += 1
    ip = None
    if "from" in found:
        start = pos_of["from"]
        # the from clause ends where the next clause keyword starts
        end = min((positions[i] for i, t in enumerate(tokens) if positions[i] > start and t.lower() in _CLAUSES),
                  default=len(plain) + 1)
        words = [t for i, t in enumerate(tokens) if start < positions[i] < end][:2]
        after = [c for p, c in comments if start <= p <= end][:3]
        ip = _from_ip(found["from"], words, after)
    elif comments and comments[0][0] <= (positions[0] if positions else 0):
        first = comments[0][1].strip()
        if first.lower().startswith("from "):
            found["from"] = _strip_angle(first[5:].split()[0]) if first[5:].split() else ""
    return Hop(from_=found.get("from"), by=found.get("by"), with_=found.get("with"), id=found.get("id"),
               for_=found.get("for"), ip=ip, ts=ts, date_note=note, zone_known=zone_known)


def dropped_hops(values: list[str]) -> int:
    """How many of a message's ``Received:`` fields :func:`parse_chain` leaves out (the oldest
    beyond :data:`MAX_HOPS`)."""
    return max(0, len(values) - MAX_HOPS)


def parse_chain(values: list[str]) -> list[Hop]:
    """Hops of a message, oldest first, from its ``Received:`` fields in header order (newest first).

    Sets ``delay_s`` of every hop but the newest; keeps at most :data:`MAX_HOPS` (the newest).
    """
    hops = [parse_received(v) for v in values[:MAX_HOPS]]
    hops.reverse()
    for a, b in itertools.pairwise(hops):
        if a.ts is not None and b.ts is not None:
            a.delay_s = b.ts - a.ts
            a.delay_uncertain = not (a.zone_known and b.zone_known)
    return hops


__all__ = ["MAX_FIELD", "MAX_HOPS", "MAX_ZONE_HOURS", "Hop", "check_date", "dropped_hops", "parse_chain",
           "parse_date", "parse_received", "split_comments"]
