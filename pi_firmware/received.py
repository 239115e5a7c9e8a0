"""Parse ``Received:`` header chains into hops with per-hop delays.

A relay prepends its ``Received:`` field, so a message's fields read newest first; :func:`parse_chain`
returns the hops oldest first.  Each field is split at its last ``;`` into the clauses (``from``,
``by``, ``via``, ``with``, ``id``, ``for``) and the date.  The parser is tolerant, never strict:

* folded lines (CRLF or LF followed by white space) are unfolded first;
* comments in parentheses (nested, with quoted pairs) are removed from the clauses, but the first
  comment after ``from`` is kept to find the sending IP address, and a field that starts with a
  ``(from user@host)`` comment (sendmail's local submissions) uses that as ``from``;
* dates are parsed by :func:`email.utils.parsedate_tz` after their comments (``(PDT)``,
  ``(MET DST)``) are dropped, two-digit years included; a date that is absent or unparseable gives
  ``timestamp = None``, and a date without a zone is taken as UTC;
* ``delay_s`` of a hop is the next (newer) hop's time minus its own: negative when the clocks of
  the two relays disagree, reported as is and never clamped; ``None`` when either time is missing.

Failure: none for any text input (a field that matches nothing gives a hop with all clauses
``None``); very long fields are cut at :data:`MAX_FIELD` characters.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz
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

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_, "by": self.by, "with": self.with_, "id": self.id, "for": self.for_,
                "ip": self.ip, "timestamp": iso_utc(self.ts), "delay_s": self.delay_s}


def _split_comments(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Text with comments replaced by one space, and the comments with their positions."""
    out: list[str] = []
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
            i += 2
            continue
        if depth == 0 and c == '"':
            quoted = not quoted
            out.append(c)
        elif quoted:
            out.append(c)
        elif c == "(":
            if depth == 0:
                start = i
            depth += 1
        elif c == ")" and depth:
            depth -= 1
            if depth == 0:
                comments.append((sum(map(len, out)), text[start + 1:i]))
                out.append(" ")
        elif depth == 0:
            out.append(c)
        i += 1
    if depth:  # unbalanced: keep the unterminated comment as one
        comments.append((sum(map(len, out)), text[start + 1:]))
    return "".join(out), comments


def _strip_angle(v: str) -> str:
    v = v.strip().rstrip(";,")
    if len(v) > 1 and v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    return v


def parse_date(text: str) -> float | None:
    """Unix time of an RFC 5322 date with comments, or ``None`` when it does not parse."""
    plain, _ = _split_comments(text)
    plain = _WS.sub(" ", plain).strip()
    if not plain:
        return None
    try:
        t = parsedate_tz(plain)
    except (ValueError, IndexError, TypeError):
        return None
    if t is None:
        return None
    try:
        if t[9] is None:
            t = (*t[:9], 0)
        return float(mktime_tz(t))
    except (OverflowError, ValueError, TypeError):
        return None


def parse_received(value: str) -> Hop:
    """Parse one ``Received:`` field value (folded or not)."""
    value = _FOLD.sub(" ", str(value)[:MAX_FIELD])
    clauses, sep, date = value.rpartition(";")
    if not sep:
        clauses, date = value, ""
    ts = parse_date(date) if date.strip() else None
    plain, comments = _split_comments(clauses)
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
        after = [c for p, c in comments if p >= pos_of["from"]]
        if after:
            m = _IP.search(after[0])
            ip = m.group(1) if m else None
    elif comments and comments[0][0] <= (positions[0] if positions else 0):
        first = comments[0][1].strip()
        if first.lower().startswith("from "):
            found["from"] = _strip_angle(first[5:].split()[0]) if first[5:].split() else ""
    return Hop(from_=found.get("from"), by=found.get("by"), with_=found.get("with"), id=found.get("id"),
               for_=found.get("for"), ip=ip, ts=ts)


def parse_chain(values: list[str]) -> list[Hop]:
    """Hops of a message, oldest first, from its ``Received:`` fields in header order (newest first).

    Sets ``delay_s`` of every hop but the newest; keeps at most :data:`MAX_HOPS` (the newest).
    """
    hops = [parse_received(v) for v in values[:MAX_HOPS]]
    hops.reverse()
    for a, b in itertools.pairwise(hops):
        if a.ts is not None and b.ts is not None:
            a.delay_s = b.ts - a.ts
    return hops


__all__ = ["MAX_FIELD", "MAX_HOPS", "Hop", "parse_chain", "parse_date", "parse_received"]
