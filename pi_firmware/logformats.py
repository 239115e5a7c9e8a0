"""Log line formats: each line's format is detected on its own and rewritten to one canonical form.

The Postfix parser (:mod:`mailpulse.pi_firmware.postfix`) reads lines of the form
``STAMP HOST PROGRAM[PID]: MESSAGE`` with ``STAMP`` in one of three shapes:

* RFC 3164 syslog ``Nov 26 10:00:00``, optionally with fractional seconds (``10:00:00.123456``,
  journald's ``short-precise``): local time, the year inferred;
* RFC 3339 ``2026-11-26T10:00:00.123456+00:00`` (rsyslog's high-precision format; journald's
  ``short-iso`` and ``short-iso-precise`` write the zone as ``+0000``, also accepted); without a
  zone, local time;
* ``@1796405192.199363``: Unix seconds (this module writes it for journald's ``short-unix`` and
  ``json`` exports).

Those lines need no rewriting (the parser's fast path).  :func:`canonical` rewrites the others:

==================================  ================================================================
format                              example
==================================  ================================================================
RFC 3164 with ``<PRI>``             ``<22>Nov 26 10:00:00 mx postfix/smtp[26709]: ...``
RFC 5424                            ``<22>1 2026-11-26T10:00:00.123Z mx postfix/smtp 26709 - - ...``
                                    (nil ``-`` fields, structured data ``[id k="v"]``, a BOM)
journald ``short-full``             ``Thu 2026-11-26 10:00:00 UTC mx postfix/smtp[26709]: ...``
                                    (a zone name other than UTC/GMT, as the local time zone
                                    prints it, is taken as local time; ``+03`` as an offset)
journald ``short-unix``             ``1796405192.199363 mx postfix/smtp[26709]: ...``
journald ``json`` (``-o json``)     ``{"MESSAGE": "...", "SYSLOG_IDENTIFIER": "postfix/smtp", ...}``
                                    (``_SOURCE_REALTIME_TIMESTAMP``, else ``__REALTIME_TIMESTAMP``;
                                    a binary ``MESSAGE`` as an array of bytes)
==================================  ================================================================

A line that fits none is not a log line (``None``).  Nothing raises for any text.
"""

from __future__ import annotations

import json
import re
from typing import Any

_MONTHS = frozenset(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))

_PRI = re.compile(r"<(\d{1,3})>")
#: RFC 5424 header after the PRI: version, timestamp, host, app, procid, msgid.
_RFC5424 = re.compile(r"(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")
#: journald short-full: weekday, date, time, zone.
_SHORT_FULL = re.compile(r"[A-Z][a-z]{2} (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?) (\S+) ")
#: journald short-unix: seconds since the epoch.
_SHORT_UNIX = re.compile(r"(\d{9,11}(?:\.\d+)?) ")
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)?")
_UTC = frozenset(("UTC", "GMT", "UT", "Z"))


def _structured_data_end(text: str, i: int) -> int:
    """Index after RFC 5424 structured data starting at ``text[i]`` (``-`` or ``[...]...``); -1 if malformed."""
    if text.startswith("-", i):
        return i + 1
    n = len(text)
    while i < n and text[i] == "[":
        i += 1
        quoted = False
        while i < n:
            c = text[i]
            if c == "\\" and quoted:
                i += 2
                continue
            if c == '"':
                quoted = not quoted
            elif c == "]" and not quoted:
                break
            i += 1
        if i >= n:
            return -1
        i += 1
    return i


def _rfc5424(rest: str) -> str | None:
    m = _RFC5424.match(rest)
    if m is None:
        return None
    stamp, host, app, procid = m.group(2), m.group(3), m.group(4), m.group(5)
    if stamp == "-" or "T" not in stamp or app == "-":
        return None
    end = _structured_data_end(rest, m.end())
    if end < 0:
        return None
    msg = rest[end + 1:] if rest[end:end + 1] == " " else rest[end:]
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    pid = f"[{procid}]" if procid != "-" else ""
    return f"{stamp} {host} {app}{pid}: {msg}"


def _short_full(line: str) -> str | None:
    m = _SHORT_FULL.match(line)
    if m is None:
        return None
    date, clock, zone = m.groups()
    if zone in _UTC:
        suffix = "+00:00"
    elif (o := _OFFSET.fullmatch(zone)) is not None:
        suffix = f"{o.group(1)}{o.group(2)}:{o.group(3) or '00'}"
    else:
        suffix = ""   # a zone name: the node's local time zone printed it
    return f"{date}T{clock}{suffix} {line[m.end():]}"


def _json_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(b, int) and 0 <= b < 256 for b in v):
        return bytes(v).decode("utf-8", "surrogateescape")
    return None


def journal_entry(doc: Any) -> str | None:
    """The canonical line of one journal entry (a ``journalctl -o json`` object), or ``None``."""
    if not isinstance(doc, dict):
        return None
    msg = _json_text(doc.get("MESSAGE"))
    prog = _json_text(doc.get("SYSLOG_IDENTIFIER")) or _json_text(doc.get("_COMM"))
    usec = doc.get("_SOURCE_REALTIME_TIMESTAMP") or doc.get("__REALTIME_TIMESTAMP")
    if msg is None or not prog or not isinstance(usec, str) or not usec.isdigit():
        return None
    pid = _json_text(doc.get("SYSLOG_PID")) or _json_text(doc.get("_PID"))
    host = _json_text(doc.get("_HOSTNAME")) or "localhost"
    sec, us = divmod(int(usec), 1_000_000)
    msg = msg.replace("\r", " ").replace("\n", " ")
    return f"@{sec}.{us:06d} {host} {prog}{f'[{pid}]' if pid else ''}: {msg}"


def canonical(line: str) -> str | None:
    """The line in the parser's form (see the module docstring), or ``None`` when it is not a log line."""
    c = line[:1]
    if c == "@":   # already canonical (a journal entry turned into a line)
        return line if line[1:2].isdigit() else None
    if c == "<":
        m = _PRI.match(line)
        if m is None or int(m.group(1)) > 191:
            return None
        rest = line[m.end():]
        if (rest[:1].isdigit() and rest[1:2] == " ") or (rest[2:3] == " " and rest[:2].isdigit()):
            return _rfc5424(rest)
        return rest if _plain(rest) else None
    if c == "{":
        try:
            return journal_entry(json.loads(line))
        except (ValueError, RecursionError):
            return None
    if c.isdigit():
        m = _SHORT_UNIX.match(line)
        return f"@{m.group(1)} {line[m.end():]}" if m is not None else None
    if c.isupper():
        return _short_full(line)
    return None


def _plain(line: str) -> bool:
    """Whether a line already has the parser's form (RFC 3164 or RFC 3339 stamp)."""
    return (line[:3] in _MONTHS and line[6:7] == " ") or (line[10:11] == "T" and line[:1].isdigit())


__all__ = ["canonical", "journal_entry"]
