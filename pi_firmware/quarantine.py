"""The quarantine: inputs a source could not handle, recorded with the reason, counted, skipped.

Every source of the node (the log follower, the journal reader, the Maildir watcher, the prober)
isolates each input: a message or a line whose handling raises is recorded here and the source
goes on with the next one.  A record is one JSON line in ``<state_dir>/quarantine.jsonl``::

    {"ts": 1796405192.2, "source": "maildir", "key": "1733.M1P2.host", "reason": "...", "sample": "..."}

``sample`` is the start of the input (a log line, or the message's file name: a message stays
where it is, the node only observes).  The file is bounded: past :attr:`QuarantineLimits.max_bytes`
it is renamed to ``quarantine.jsonl.1`` (the previous one is dropped) and a new one is started.
The counts by source (and the last reason) are in the node's status (``quarantine``) and so in
the collector's metrics.

:func:`describe` turns an exception into the reason: its type and message, without the object
memory addresses some messages carry (``<_io.BytesIO object at 0x7f...>``), cut to 300 characters.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

_ADDRESS = re.compile(r"<([^<>]*?) (?:object )?at 0x[0-9a-fA-F]+>|\s+at 0x[0-9a-fA-F]+")


def describe(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception, without memory addresses, at most ``limit`` characters.

    A :class:`~mailpulse.errors.UserError` is already a sentence for the user: its message alone.
    """
    text = str(e)
    text = _ADDRESS.sub(lambda m: f"<{m.group(1)}>" if m.group(1) is not None else "", text)
    if isinstance(e, UserError):
        return text[:limit]
    out = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return out[:limit]


@dataclass(frozen=True)
class QuarantineLimits:
    """Bounds of the quarantine file (see the module docstring)."""

    max_bytes: int = field(default=4 << 20, metadata={
        "doc": "Size of the quarantine file (`<state_dir>/quarantine.jsonl`) before it is rotated to `.1`."})
    max_sample: int = field(default=1024, metadata={
        "doc": "Characters of a quarantined input (log line, message name) kept in its record."})

    def __post_init__(self) -> None:
        for k in ("max_bytes", "max_sample"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"quarantine limit {k} must be a positive integer, not {v!r}")


class Quarantine:
    """Records and counts the inputs sources could not handle (thread-safe).

    Parameters
    ----------
    path : Path, optional
        The JSON-lines file; ``None`` keeps the counts only (tools, tests).
    limits : QuarantineLimits, optional
        File size and sample length.
    """

    def __init__(self, path: Path | str | None = None, limits: QuarantineLimits | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.limits = limits or QuarantineLimits()
        self.counts: dict[str, int] = {}
        self.last: dict[str, str] = {}
        self.write_errors = 0
        self._lock = threading.Lock()

    def record(self, source: str, key: str, reason: str, sample: str | bytes = "") -> None:
        """Record one input of ``source`` that was skipped for ``reason`` (one sentence)."""
        if isinstance(sample, bytes):
            sample = sample[: self.limits.max_sample * 4].decode("utf-8", "replace")
        doc = {"ts": round(time.time(), 3), "source": source, "key": key[:256], "reason": reason[:1000],
               "sample": sample[: self.limits.max_sample]}
        with self._lock:
            self.counts[source] = self.counts.get(source, 0) + 1
            self.last[source] = reason[:300]
            if self.path is None:
                return
            try:
                line = json.dumps(doc, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
                if self.path.exists() and self.path.stat().st_size + len(line) > self.limits.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                with self.path.open("ab") as f:
                    f.write(line)
            except OSError:
                self.write_errors += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def status(self) -> dict[str, Any]:
        """Counts by source and the last reason of each (the node's status ``quarantine``)."""
        with self._lock:
            return {"total": sum(self.counts.values()), "by_source": dict(self.counts), "last": dict(self.last),
                    "write_errors": self.write_errors}


__all__ = ["Quarantine", "QuarantineLimits", "describe"]
