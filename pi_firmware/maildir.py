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
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailpulse import features as F
from mailpulse.errors import UserError

from .events import Event, MessageEvent
from .mime import MimeLimits, parse_message, recipients, walk
from .received import parse_chain

_HEADER_START = re.compile(rb"(?:From [^\n]*\n)?[!-9;-~]+[ \t]*:")


def _message_event(data: bytes, key: str, node: str, limits: MimeLimits, ts: float | None) -> MessageEvent:
    msg = None
    summary = None
    try:
        msg = parse_message(data)
        summary = walk(data, limits, msg=msg)
    except RecursionError:
        summary = walk(b"", limits)
        summary.total_size = len(data)
        summary.limits.append("depth: the MIME tree is nested too deeply to parse")
    received = [str(v) for v in (msg.get_all("Received") or [])] if msg is not None else []
    hops = parse_chain(received)
    hop_dicts = [h.to_json() | {"ts": h.ts} for h in hops]
    mid = None
    if msg is not None and msg.get("Message-ID") is not None:
        mid = str(msg.get("Message-ID")).strip().strip("<>")[:998] or None
    stamps = [h.ts for h in hops if h.ts is not None]
    when = ts if ts is not None else (stamps[-1] if stamps else 0.0)
    return MessageEvent(when, node, key=key, message_id=mid, size=len(data),
                        recipients=recipients(msg) if msg is not None else 0, hops=hop_dicts,
                        mime=summary.to_json())


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
    ``timestamp`` ISO 8601 UTC or null, ``delay_s`` to the next hop or null), ``mime`` (see
    :class:`mailpulse.pi_firmware.mime.MimeSummary`) and ``features`` (schema version, raw values by name,
    the fixed-point vector).
    """
    ev = _message_event(data, key, node, limits or MimeLimits(), ts)
    raw = ev.raw_features()
    x = ev.vector()
    doc = {
        "hops": [{k: v for k, v in h.items() if k != "ts"} for h in ev.hops],
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


def inspect_file(path: Path | str, limits: MimeLimits | None = None) -> dict[str, Any]:
    """The ``mailpulse inspect`` document of a file; ``UserError`` for a file that is not a message."""
    p = Path(path)
    limits = limits or MimeLimits()
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise UserError(f"{p} is a directory, not a message file")
        if size > limits.max_bytes:
            raise UserError(f"{p} is {size} bytes, more than the {limits.max_bytes}-byte message limit")
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{p} does not exist") from None
    except PermissionError:
        raise UserError(f"{p} cannot be read (permission denied)") from None
    except OSError as e:
        raise UserError(f"{p} cannot be read: {e.strerror or e}") from None
    check_message_bytes(data, str(p))
    _, doc = analyse(data, key=p.name, limits=limits)
    return doc


def _unique(name: str) -> str:
    return name.split(":2,", 1)[0]


class MaildirWatcher:
    """Poll a Maildir for new messages (see the module docstring)."""

    def __init__(self, path: Path | str, node: str = "", state_file: Path | str | None = None, *,
                 limits: MimeLimits | None = None, max_seen: int = 100_000, backlog: bool = False,
                 poll_s: float = 2.0) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.node = node
        self.state_file = Path(state_file) if state_file is not None else None
        self.limits = limits or MimeLimits()
        self.max_seen = max_seen
        self.seen: dict[str, None] = {}
        self.skipped = 0
        started = False
        if self.state_file is not None and self.state_file.exists():
            with contextlib.suppress(OSError, ValueError, TypeError):
                self.seen = dict.fromkeys(json.loads(self.state_file.read_text())["seen"])
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
                    if entry.is_file() and not entry.name.startswith("."):
                        out.append((Path(entry.path), entry.name))
        return out

    def poll(self) -> list[Event]:
        """Events of the messages that appeared since the last poll (oldest file first)."""
        fresh = []
        for path, name in self._listing():
            u = _unique(name)
            if u in self.seen:
                continue
            try:
                st = path.stat()
                if st.st_size > self.limits.max_bytes:
                    data = b""
                else:
                    data = path.read_bytes()
            except OSError:
                self.skipped += 1
                continue
            fresh.append((st.st_mtime, u, data, st.st_size))
        fresh.sort()
        events: list[Event] = []
        for mtime, u, data, size in fresh:
            if data:
                ev, _ = analyse(data, key=u, node=self.node, limits=self.limits, ts=mtime)
            else:
                ev = MessageEvent(mtime, self.node, key=u, size=size,
                                  mime={"limits": [f"size: {size} bytes is more than {self.limits.max_bytes}"]})
            stamps = [h["ts"] for h in ev.hops if h.get("ts") is not None]
            ev.mailbox_delay_s = (mtime - stamps[-1]) if stamps else None
            events.append(ev)
            self.seen[u] = None
        while len(self.seen) > self.max_seen:
            del self.seen[next(iter(self.seen))]
        return events

    def commit(self) -> None:
        """Save the seen names (atomically)."""
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
                self.commit()
            stop.wait(self.poll_s)


__all__ = ["MaildirWatcher", "analyse", "check_message_bytes", "inspect_file"]
