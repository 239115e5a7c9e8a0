"""Delivered mail: analyse one message (hops + render features), and watch a Maildir for new ones.

:func:`analyse` is what ``mailpulse inspect FILE.eml`` prints and what the watcher turns into a
:class:`~mailpulse.pi_firmware.events.MessageEvent`: the ``Received:`` chain as hops (oldest first, with
per-hop delays, :mod:`mailpulse.pi_firmware.received`), the MIME tree (:mod:`mailpulse.pi_firmware.mime`) and the
feature vector the node scores (raw values and fixed point, :mod:`mailpulse.features`).

:class:`MaildirWatcher` polls a Maildir's ``new/`` and ``cur/`` folders.  A message is known by its
unique name (the file name up to the ``:2,`` flags), so a reader moving it from ``new/`` to
``cur/`` does not make it new again.  The names already seen are kept in a JSON state file (at most
``max_seen``, the oldest forgotten first), so a restart does not analyse old mail again.  On the
very first start the messages already there are taken as seen unless ``backlog`` is set.  A file
that vanishes or cannot be read between the listing and the read is skipped (and counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mailpulse import features as F
from mailpulse.errors import UserError

from .events import Event, MessageEvent
from .headers import MessageRefused, count_addresses, read_header_block
from .mime import MimeLimits, walk
from .quarantine import Quarantine, describe
from .received import dropped_hops, parse_chain

_HEADER_START = re.compile(rb"(?:From [^\n]*\n)?[!-9;-~]+[ \t]*:")

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))

#: Names that mean standard input to ``mailpulse inspect``.
STDIN_NAMES = ("-", "/dev/stdin")


def _read_limited(f: BinaryIO, limit: int, name: str, max_bytes: int | None = None) -> bytes:
    """At most ``limit`` bytes of ``f``; ``MessageRefused`` (limit ``max_bytes``) if there is more."""
    parts: list[bytes] = []
    got = 0
    while True:
        b = f.read(min(1 << 20, limit + 1 - got))
        if not b:
            break
        parts.append(b)
        got += len(b)
        if got > limit:
            shown = limit if max_bytes is None else max_bytes
            raise MessageRefused("max_bytes", f"{name} is more than {shown} bytes, the limit mime.max_bytes")
    return b"".join(parts)


def read_message_file(path: Path | str, limits: MimeLimits) -> tuple[bytes, os.stat_result]:
    """The bytes of a message file, read under the size limit, and its status.

    Only a regular file is read: it is opened without blocking (a FIFO without a writer does not
    hang) and checked before any byte is read (a device such as ``/dev/zero`` is refused).

    Raises
    ------
    MessageRefused
        Not a regular file (limit ``regular_file``), or larger than ``limits.max_bytes``.
    OSError
        It does not exist or cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            raise MessageRefused("regular_file", f"{path} is {kind}, not a regular file (a message is read from "
                                                 f"a regular file or standard input)")
        if st.st_size > limits.max_bytes:
            raise MessageRefused("max_bytes", f"{path} is {st.st_size} bytes, more than the limit mime.max_bytes "
                                              f"({limits.max_bytes})")
        data = f.read(st.st_size + 1)   # one allocation of the final size (a chunked read would join a copy)
        if len(data) > st.st_size:       # it grew since the fstat: read the rest under the limit
            if len(data) > limits.max_bytes:
                raise MessageRefused("max_bytes", f"{path} is more than {limits.max_bytes} bytes, the limit "
                                                  f"mime.max_bytes")
            data += _read_limited(f, limits.max_bytes - len(data), str(path), limits.max_bytes)
        return data, st


def read_stdin(limits: MimeLimits, stream: BinaryIO | None = None) -> bytes:
    """Standard input, read under the same size limit as a file (``MessageRefused`` beyond it)."""
    return _read_limited(stream or sys.stdin.buffer, limits.max_bytes, "standard input")


def _message_event(data: bytes, key: str, node: str, limits: MimeLimits, ts: float | None) -> MessageEvent:
    """The event of one message; ``MessageRefused`` when its header block breaks a limit."""
    head = read_header_block(data, max_headers=limits.max_headers, max_header_bytes=limits.max_header_bytes,
                             where=key or "the message")
    summary = walk(data, limits, headers=head)
    received = head.get_all("received")
    hops = parse_chain(received)
    hop_dicts = [h.to_json() | {"ts": h.ts, "zone_known": h.zone_known} for h in hops]
    mid_value = head.get("message-id")
    mid = mid_value.strip().strip("<>")[:998] or None if mid_value is not None else None
    stamps = [h.ts for h in hops if h.ts is not None]
    when = ts if ts is not None else (stamps[-1] if stamps else 0.0)
    return MessageEvent(when, node, key=key, message_id=mid, size=len(data),
                        recipients=count_addresses(head.get_all("to") + head.get_all("cc")), hops=hop_dicts,
                        mime=summary.to_json(), hops_dropped=dropped_hops(received))


def check_message_bytes(data: bytes, name: str) -> None:
    """Raise ``UserError`` unless ``data`` starts like an e-mail message (a header field)."""
    if not data:
        raise UserError(f"{name} is empty, not an e-mail message")
    if not _HEADER_START.match(data.replace(b"\r\n", b"\n", 1)):
        raise UserError(f"{name} does not start with an e-mail header field (Name: value), so it is not a message")


def analyse(data: bytes, *, key: str = "", node: str = "", limits: MimeLimits | None = None,
            ts: float | None = None) -> tuple[MessageEvent, dict[str, Any]]:
    """Analyse one message: its event and the JSON document ``mailpulse inspect`` prints.

    The document has ``hops`` (oldest first: ``from``, ``by``, ``with``, ``id``, ``for``, ``ip``,
    ``timestamp`` ISO 8601 UTC or null, ``delay_s`` to the next hop or null, ``delay_uncertain``,
    ``date_note``), ``hops_dropped`` (``Received:`` fields beyond the hop limit), ``mime`` (see
    :class:`mailpulse.pi_firmware.mime.MimeSummary`) and ``features`` (schema version, raw values
    by name, the fixed-point vector).

    Raises ``MessageRefused`` (one sentence naming the limit) when the message's header block
    breaks ``max_headers`` or ``max_header_bytes``.
    """
    ev = _message_event(data, key, node, limits or MimeLimits(), ts)
    raw = ev.raw_features()
    x = ev.vector()
    doc = {
        "hops": [{k: v for k, v in h.items() if k not in ("ts", "zone_known")} for h in ev.hops],
        "hops_dropped": ev.hops_dropped,
        "mime": ev.mime,
        "features": {
            "schema": F.SCHEMA_VERSION,
            "kind": ev.KIND,
            "names": list(F.NAMES),
            "raw": {n: (raw.get(n) if F.KIND_MASK[ev.KIND][i] else None) for i, n in enumerate(F.NAMES)},
            "fixed": x,
            "missing": F.MISSING,
        },
    }
    return ev, doc


def inspect_file(path: Path | str, limits: MimeLimits | None = None, stdin: BinaryIO | None = None) -> dict[str, Any]:
    """The ``mailpulse inspect`` document of a file (or of standard input: ``-``, ``/dev/stdin``).

    Raises ``UserError`` with one sentence for anything that is not an analysable message: a
    missing or unreadable file, not a regular file, a limit of ``limits`` broken, not a message.
    """
    limits = limits or MimeLimits()
    name = "standard input" if str(path) in STDIN_NAMES else str(path)
    try:
        if str(path) in STDIN_NAMES:
            data = read_stdin(limits, stdin)
        else:
            data, _ = read_message_file(path, limits)
    except MessageRefused as e:
        raise UserError(str(e)) from None
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except PermissionError:
        raise UserError(f"{path} cannot be read (permission denied)") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e.strerror or describe(e)}") from None
    check_message_bytes(data, name)
    try:
        _, doc = analyse(data, key=Path(name).name, limits=limits)
    except MessageRefused as e:
        raise UserError(str(e)) from None
    except Exception as e:  # a bug must still not end in a traceback for the user
        raise UserError(f"{name} could not be analysed ({describe(e)}); please report this message") from None
    return doc


def _unique(name: str) -> str:
    return name.split(":2,", 1)[0]


class MaildirWatcher:
    """Poll a Maildir for new messages (see the module docstring).

    Each message is isolated: one that cannot be read as a regular file, breaks a header limit or
    makes the analysis fail is recorded in :attr:`quarantine` with the reason, marked seen and
    skipped (an oversized message still gives an event with its size); the others are emitted.
    Messages are read one at a time (memory holds one message, not a poll's worth).
    """

    #: Name of this source in the quarantine and the node's status.
    name = "maildir"

    def __init__(self, path: Path | str, node: str = "", state_file: Path | str | None = None, *,
                 limits: MimeLimits | None = None, max_seen: int = 100_000, backlog: bool = False,
                 poll_s: float = 2.0, quarantine: Quarantine | None = None) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.node = node
        self.state_file = Path(state_file) if state_file is not None else None
        self.limits = limits or MimeLimits()
        self.max_seen = max_seen
        self.quarantine = quarantine or Quarantine()
        self.seen: dict[str, None] = {}
        self.skipped = 0          # vanished or unreadable between the listing and the read (tried again)
        self.refused = 0          # broke a limit (recorded in the quarantine)
        self.failed = 0           # the analysis raised (recorded in the quarantine)
        self.emitted = 0
        self._dirty = False
        started = False
        if self.state_file is not None and self.state_file.exists():
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                self.seen = dict.fromkeys(str(k) for k in json.loads(self.state_file.read_text())["seen"])
                started = True
        if not started and not backlog:
            for _, name in self._listing():
                self.seen[_unique(name)] = None

    def _listing(self) -> list[tuple[Path, str]]:
        out = []
        for sub in ("new", "cur"):
            d = self.path / sub
            with contextlib.suppress(OSError):
                for entry in os.scandir(d):
                    if not entry.name.startswith(".") and not entry.is_dir():
                        out.append((Path(entry.path), entry.name))
        return out

    def counters(self) -> dict[str, int]:
        """What the watcher did since it started (the node's status)."""
        return {"emitted": self.emitted, "refused": self.refused, "failed": self.failed, "skipped": self.skipped}

    def _refuse(self, u: str, path: Path, reason: str) -> None:
        self.refused += 1
        self.quarantine.record(self.name, u, reason, str(path))

    def _one(self, path: Path, u: str) -> MessageEvent | None:
        """The event of one new message, or ``None`` (recorded, or to be tried again)."""
        try:
            data, st = read_message_file(path, self.limits)
        except MessageRefused as e:
            self.seen[u] = None
            self._refuse(u, path, str(e))
            if e.limit != "max_bytes":
                return None
            size = path.stat().st_size if path.exists() else 0
            return MessageEvent(path.stat().st_mtime if path.exists() else 0.0, self.node, key=u, size=size,
                                mime={"limits": [str(e)]})
        except OSError:
            self.skipped += 1
            return None
        self.seen[u] = None
        try:
            ev, _ = analyse(data, key=u, node=self.node, limits=self.limits, ts=st.st_mtime)
        except MessageRefused as e:
            self._refuse(u, path, str(e))
            ev = MessageEvent(st.st_mtime, self.node, key=u, size=len(data), mime={"limits": [str(e)]})
        except Exception as e:  # one message must not stop the watcher
            self.failed += 1
            self.quarantine.record(self.name, u, f"the analysis failed: {describe(e)}", str(path))
            return None
        stamps = [h["ts"] for h in ev.hops if h.get("ts") is not None]
        ev.mailbox_delay_s = (st.st_mtime - stamps[-1]) if stamps else None
        return ev

    def poll(self) -> list[Event]:
        """Events of the messages that appeared since the last poll (oldest file first)."""
        fresh = []
        for path, name in self._listing():
            u = _unique(name)
            if u in self.seen:
                continue
            try:
                fresh.append((path.lstat().st_mtime, u, path))
            except OSError:
                self.skipped += 1
        fresh.sort()
        self._dirty = self._dirty or bool(fresh)
        events: list[Event] = []
        for _, u, path in fresh:
            ev = self._one(path, u)
            if ev is not None:
                events.append(ev)
        self.emitted += len(events)
        while len(self.seen) > self.max_seen:
            del self.seen[next(iter(self.seen))]
        return events

    def commit(self) -> None:
        """Save the seen names (atomically)."""
        self._dirty = False
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"seen": list(self.seen)}))
        os.replace(tmp, self.state_file)

    def run(self, emit: Callable[[list[Event]], None], stop: threading.Event) -> None:
        """Source protocol of the daemon: emit new messages' events until ``stop`` is set."""
        while not stop.is_set():
            evs = self.poll()
            if evs:
                emit(evs)
            if self._dirty:
                self.commit()
            stop.wait(self.poll_s)


__all__ = ["STDIN_NAMES", "MaildirWatcher", "analyse", "check_message_bytes", "inspect_file", "read_message_file",
           "read_stdin"]
