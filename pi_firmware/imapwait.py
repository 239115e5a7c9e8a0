"""Waiting for new mail over IMAP: IDLE (RFC 2177) when the server offers it, polling otherwise.

With IDLE the server pushes ``* n EXISTS`` the moment a message lands in the mailbox (Dovecot
watches the Maildir with inotify), so the probe sees an arrival within the loopback round trip
instead of up to one poll period later, and the mailbox is not searched 100 times a second.

The standard library's :mod:`imaplib` (before Python 3.14) has no IDLE command, so it is done here
with imaplib's public ``send``/``readline``: ``<tag> IDLE``, the ``+`` continuation, untagged
responses until a new message (or the deadline), ``DONE``, the tagged completion.  The tags are
lower case (``mpidle<n>``) and so never collide with imaplib's own (four letters ``A``-``P`` and
a number).

How it fails: a server that refuses ``IDLE`` with a tagged ``NO``/``BAD`` makes :func:`idle_wait`
return :data:`REFUSED` (the caller falls back to polling); a connection lost while idling raises
``imaplib.IMAP4.abort`` like any other imaplib command.
"""

from __future__ import annotations

import imaplib
import itertools
import re
import select
import ssl
import threading
import time
from typing import Final

__all__ = ["REFUSED", "STOP_CHECK_S", "has_idle", "idle_wait"]

#: How often a waiting IDLE looks at the caller's stop event (does not affect the latency: an
#: arrival ends the wait at once).
STOP_CHECK_S: Final = 0.25
#: RFC 2177: servers may drop a client idle for 30 min; re-issue IDLE well before.
IDLE_RENEW_S: Final = 25 * 60.0
#: :func:`idle_wait` result when the server refused the IDLE command.
REFUSED: Final = -1.0

_EXISTS = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.IGNORECASE)
_tags = itertools.count(1)


def has_idle(im: imaplib.IMAP4) -> bool:
    """True when the server advertises IDLE *after* login (capabilities may change at login, so
    this asks with a CAPABILITY command instead of reading imaplib's greeting-time list)."""
    typ, data = im.capability()
    if typ != "OK":
        return False
    words = b" ".join(d for d in data if isinstance(d, bytes)).upper().split()
    return b"IDLE" in words


def _buffered(im: imaplib.IMAP4) -> bool:
    """True when bytes already sit in imaplib's reader (or in a decrypted TLS record), where
    ``select()`` on the socket cannot see them.  Looked at with the socket non-blocking, so an
    empty buffer costs one failed ``recv``, never a wait."""
    sock = im.sock
    before = sock.gettimeout()
    sock.setblocking(False)
    try:
        reader = im.file
        return bool(reader.peek(1)) if hasattr(reader, "peek") else False
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(before)


def _line(im: imaplib.IMAP4) -> bytes:
    line = im.readline()
    if not line:
        raise imaplib.IMAP4.abort("the IMAP server closed the connection during IDLE")
    return line.rstrip(b"\r\n")


def idle_wait(im: imaplib.IMAP4, timeout_s: float, stop: threading.Event | None = None) -> float | None:
    """Idle on the selected mailbox until the server reports a new message, ``timeout_s`` passes
    or ``stop`` is set.

    Returns the wall-clock time (``time.time()``, seconds) at which the ``EXISTS`` response was
    read, ``None`` at timeout or stop, or :data:`REFUSED` when the server refused IDLE.  The
    connection always leaves IDLE (``DONE`` and the tagged reply read) before this returns, so the
    caller can issue commands right away.
    """
    tag = f"mpidle{next(_tags)}".encode()
    im.send(tag + b" IDLE\r\n")
    seen: float | None = None
    while True:                          # the continuation, maybe after untagged responses
        line = _line(im)
        if line.startswith(b"+"):
            break
        if line.startswith(tag + b" "):
            return REFUSED
        if _EXISTS.match(line):
            seen = time.time()
    deadline = time.monotonic() + min(timeout_s, IDLE_RENEW_S)
    while seen is None:
        left = deadline - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            break
        if not _buffered(im):
            ready, _, _ = select.select([im.sock], [], [], min(left, STOP_CHECK_S) if stop is not None else left)
            if not ready:
                continue
        if _EXISTS.match(_line(im)):
            seen = time.time()
    im.send(b"DONE\r\n")
    while True:
        line = _line(im)
        if line.startswith(tag + b" "):
            if not line[len(tag) + 1:].upper().startswith(b"OK"):
                raise imaplib.IMAP4.error(f"IDLE ended with {line[:200]!r}")
            return seen
        if seen is None and _EXISTS.match(line):
            seen = time.time()
