"""The node's Postfix queue, read with ``postqueue -j``: messages, bytes and the oldest message's age
per queue (``active``, ``deferred``, ``hold``, ``incoming``, ``maildrop``).

``postqueue -j`` writes one JSON object per queued message (``queue_name``, ``arrival_time``,
``message_size``, ``recipients`` ...).  The output is read as a stream and only summed up, so a
queue of a million messages costs the time to read it, never the memory to hold it; a reading
that takes longer than ``timeout_s`` is stopped and reported as an error (with what was counted so
far thrown away: a partial count would look like a shrinking queue).

Hostile lines (not JSON, an unknown queue name, a size or time that is not a number, a line longer
than :data:`MAX_LINE`) are skipped and counted in ``bad_lines``; the rest is summed.  The summary is
the ``postfix_queue`` object of the node's status (declared in :mod:`mailpulse.payload`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["MAX_LINE", "QUEUES", "queue_command", "read_queue", "summarise"]

#: The queues ``postqueue -j`` names (``maildrop``: posted locally, not yet picked up).
QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")
#: Longest line taken (a message with thousands of recipients is longer; it is counted as bad).
MAX_LINE = 1 << 20


def queue_command(config_dir: str = "") -> list[str]:
    """``postqueue [-c DIR] -j``."""
    return ["postqueue", *(["-c", config_dir] if config_dir else []), "-j"]


def _empty() -> dict[str, dict[str, Any]]:
    return {q: {"messages": 0, "bytes": 0, "oldest_age_s": None} for q in QUEUES}


def summarise(lines: Iterable[bytes], now: float) -> dict[str, Any]:
    """Sum ``postqueue -j`` lines into per-queue ``messages``, ``bytes``, ``oldest_age_s``."""
    queues = _empty()
    oldest: dict[str, float] = {}
    bad = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            if len(raw) > MAX_LINE:
                raise ValueError("line too long")
            doc = json.loads(raw)
            q = queues[doc["queue_name"]]
            size, arrival = doc.get("message_size", 0), doc["arrival_time"]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                       for v in (size, arrival)) or size < 0:
                raise ValueError("size or arrival time is not a number")
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        q["messages"] += 1
        q["bytes"] += int(size)
        name = doc["queue_name"]
        oldest[name] = min(oldest.get(name, arrival), arrival)
    for name, t in oldest.items():
        queues[name]["oldest_age_s"] = round(max(0.0, now - float(t)), 3)
    return {"queues": queues, "bad_lines": bad, "error": None, "ts": now}


def read_queue(command: Sequence[str], timeout_s: float = 30.0) -> dict[str, Any]:
    """Run ``command`` (:func:`queue_command`) and summarise its output; on failure the summary has
    no queues (not zeros: an unreadable queue is not an empty one) and ``error`` says why."""
    now = time.time()
    try:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "LC_ALL": "C"})
    except OSError as e:
        return _failed(now, f"cannot run {command[0]}: {e.strerror or e}")
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = summarise(iter(lambda: proc.stdout.readline(MAX_LINE + 1), b""), now)  # type: ignore[union-attr]
        err = proc.stderr.read(4096).decode("utf-8", "replace").strip()
        rc = proc.wait()
    finally:
        timer.cancel()
    if rc != 0:
        why = f"it took longer than {timeout_s:g} s" if rc < 0 else (err.splitlines() or [f"exit status {rc}"])[-1]
        return _failed(now, f"{' '.join(command)} failed: {why[:300]}")
    return out


def _failed(now: float, error: str) -> dict[str, Any]:
    return {"queues": {}, "bad_lines": 0, "error": error, "ts": now}
