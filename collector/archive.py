"""The collector's archive: append-only JSON-lines segments, rotated, compressed, crash safe.

Layout of an archive folder::

    seg-20261126T101500Z-000042.jsonl.gz    closed segments (gzip), read by the trainer and readers
    seg-20261126T102000Z-000043.jsonl.tmp   the one open segment (never read by anybody else)

One line is one event: the node's event payload as published, plus ``site`` and ``received``.

How a segment is written and closed (:class:`ArchiveWriter`):

1. lines are appended to ``<name>.jsonl.tmp``; :meth:`ArchiveWriter.sync` (called by the ingest
   after every MQTT batch it acknowledges) flushes and ``fsync``\\ s it;
2. when the segment reaches ``max_bytes`` or ``max_age_s``, it is compressed into
   ``<name>.jsonl.gz.part``, that file is fsynced, renamed to ``<name>.jsonl.gz`` (atomic on
   POSIX), the folder is fsynced, and only then the ``.tmp`` is removed.

So a crash at any point leaves either no closed segment of that name or a complete one, never a
half-visible one.  On start (:meth:`ArchiveWriter.recover`) leftovers are repaired: a ``.part``
is deleted; a ``.tmp`` whose ``.gz`` exists is deleted (the crash hit between rename and unlink);
any other ``.tmp`` is closed as a segment after dropping a torn last line (a line without its
newline), so every line that was fsynced survives a ``kill -9``.

Failure: ``OSError`` from the file system propagates (the ingest then does not acknowledge the
MQTT batch, so the broker redelivers it).
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailpulse import payload as P

__all__ = ["ArchiveWriter", "SegmentInfo", "closed_segments", "read_events", "read_segment", "read_valid_events",
           "read_valid_segment", "skipped_summary", "valid_lines"]

_SEG = re.compile(r"^seg-(\d{8}T\d{6}Z)-(\d{6})\.jsonl(\.gz|\.tmp|\.gz\.part)?$")


@dataclass(frozen=True)
class SegmentInfo:
    """A closed segment: path, sequence number, events and bytes (uncompressed)."""

    path: Path
    seq: int
    events: int
    raw_bytes: int


def closed_segments(folder: str | os.PathLike[str]) -> list[Path]:
    """The closed segments of an archive in write order (``*.jsonl`` and ``*.jsonl.gz``, never ``.tmp``)."""
    d = Path(folder)
    if not d.is_dir():
        return []
    segs = [p for p in d.iterdir() if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))]
    return sorted(segs, key=lambda p: p.name)


def read_segment(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Events of one closed segment, in order.  Raises ``OSError``/``ValueError`` on a damaged file."""
    p = Path(path)
    data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
    for line in data.splitlines():
        if line.strip():
            yield json.loads(line)


def read_events(folder: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Events of every closed segment of an archive, in write order."""
    for seg in closed_segments(folder):
        yield from read_segment(seg)


def read_valid_events(folder: str | os.PathLike[str], skipped: collections.Counter[str]) -> Iterator[dict[str, Any]]:
    """Events of every closed segment that pass the payload declaration (:func:`mailpulse.payload.check_event`).

    Whatever does not - a line that is not JSON, an event that fails the declaration (an archive
    written before the collector validated), a segment that cannot be read - is skipped and
    counted in ``skipped`` by reason; :func:`skipped_summary` says it in one line.
    """
    for seg in closed_segments(folder):
        try:
            data = gzip.decompress(seg.read_bytes()) if seg.name.endswith(".gz") else seg.read_bytes()
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
            skipped["unreadable_segment"] += 1
            continue
        yield from valid_lines(data, skipped)


def read_valid_segment(path: str | os.PathLike[str], skipped: collections.Counter[str]) -> list[dict[str, Any]]:
    """The valid events of one closed segment (as :func:`read_valid_events` reads it); a segment
    that cannot be read raises ``ValueError`` naming the reason."""
    p = Path(path)
    try:
        data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"unreadable segment ({e})") from None
    return list(valid_lines(data, skipped))


def valid_lines(data: bytes, skipped: collections.Counter[str]) -> Iterator[dict[str, Any]]:
    """The events of a segment's bytes that pass the payload declaration; the rest counted by reason."""
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except (ValueError, RecursionError):
            skipped["not_json"] += 1
            continue
        prob = P.check_event(ev)
        if prob is not None:
            skipped[prob.reason] += 1
            continue
        yield ev


def skipped_summary(skipped: collections.Counter[str], what: str = "archive") -> str:
    """One line: how many archive entries were skipped and why (empty when none were)."""
    n = sum(skipped.values())
    if not n:
        return ""
    reasons = ", ".join(f"{r} {c}" for r, c in skipped.most_common())
    return f"{what}: skipped {n} entries that fail the payload declaration ({reasons})"


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


class ArchiveWriter:
    """Appends events to the open segment and rotates it by size and age.

    Parameters
    ----------
    folder : path
        The archive folder (created).
    max_bytes : int
        Uncompressed size at which the open segment is closed.
    max_age_s : float
        Age at which a non-empty open segment is closed (checked on every write and by :meth:`tick`).
    compress_level : int
        gzip level of closed segments (1 = fast; the archive is written once and read rarely).
    fsync : bool
        fsync on :meth:`sync` and on close (off only for benchmarks of the CPU cost).
    clock : callable
        Time source (tests).
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int = 64 << 20, max_age_s: float = 600.0,
                 compress_level: int = 1, fsync: bool = True, clock: Any = time.time) -> None:
        if max_bytes < 1024:
            raise ValueError(f"archive max_bytes {max_bytes} is below 1024")
        if max_age_s <= 0:
            raise ValueError(f"archive max_age_s {max_age_s} must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.compress_level = compress_level
        self.fsync = fsync
        self.clock = clock
        self._fh: Any = None
        self._tmp: Path | None = None
        self._opened_at = 0.0
        self._bytes = 0
        self._events = 0
        self._dirty = False
        self.closed: list[SegmentInfo] = []
        self.recovered = self.recover()
        self._seq = self._next_seq()

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> list[Path]:
        """Repair what a crash left (see the module docstring); returns the segments closed now."""
        out: list[Path] = []
        for p in sorted(self.folder.iterdir()):
            if p.name.endswith(".gz.part"):
                p.unlink()
        for p in sorted(self.folder.iterdir()):
            if not p.name.endswith(".jsonl.tmp"):
                continue
            final = p.with_name(p.name[: -len(".tmp")] + ".gz")
            if final.exists():
                p.unlink()
                continue
            data = p.read_bytes()
            cut = data.rfind(b"\n") + 1  # a torn last line (no newline) was never acknowledged
            data = data[:cut]
            if not data:
                p.unlink()
                continue
            self._write_closed(final, data)
            p.unlink()
            out.append(final)
        if out:
            _fsync_dir(self.folder)
        return out

    def _next_seq(self) -> int:
        seqs = [int(m.group(2)) for p in self.folder.iterdir() if (m := _SEG.match(p.name))]
        return max(seqs, default=-1) + 1

    # -- writing ------------------------------------------------------------------------------

    @property
    def open_path(self) -> Path | None:
        return self._tmp

    def _open(self) -> None:
        now = self.clock()
        name = f"seg-{_stamp(now)}-{self._seq:06d}.jsonl.tmp"
        self._seq += 1
        self._tmp = self.folder / name
        self._fh = self._tmp.open("ab", buffering=1 << 20)
        self._opened_at = now
        self._bytes = 0
        self._events = 0

    def write_lines(self, lines: list[bytes]) -> None:
        """Append encoded events (each one JSON object without newline); rotates when due."""
        if not lines:
            return
        if self._fh is None:
            self._open()
        data = b"\n".join(lines) + b"\n"
        self._fh.write(data)
        self._bytes += len(data)
        self._events += len(lines)
        self._dirty = True
        if self._bytes >= self.max_bytes or self.clock() - self._opened_at >= self.max_age_s:
            self.rotate()

    def write(self, events: list[dict[str, Any]]) -> None:
        """Append event dicts."""
        self.write_lines([json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() for e in events])

    def sync(self) -> None:
        """Flush and fsync the open segment (everything written so far survives a crash)."""
        if self._fh is not None and self._dirty:
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self._dirty = False

    def tick(self) -> None:
        """Close the open segment if it is older than ``max_age_s`` (call periodically)."""
        if self._fh is not None and self._events and self.clock() - self._opened_at >= self.max_age_s:
            self.rotate()

    def _write_closed(self, final: Path, data: bytes) -> None:
        part = final.with_name(final.name + ".part")
        with open(part, "wb") as f:
            f.write(gzip.compress(data, compresslevel=self.compress_level, mtime=0))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(part, final)

    def rotate(self) -> SegmentInfo | None:
        """Close the open segment: compress, fsync, rename, drop the ``.tmp``."""
        if self._fh is None or self._tmp is None:
            return None
        self.sync()
        self._fh.close()
        tmp, self._fh, self._tmp = self._tmp, None, None
        if self._events == 0:
            tmp.unlink(missing_ok=True)
            return None
        final = tmp.with_name(tmp.name[: -len(".tmp")] + ".gz")
        data = tmp.read_bytes()
        self._write_closed(final, data)
        if self.fsync:
            _fsync_dir(self.folder)
        tmp.unlink()
        info = SegmentInfo(final, self._seq - 1, self._events, len(data))
        self.closed.append(info)
        return info

    def close(self) -> SegmentInfo | None:
        """Close the open segment (so everything written is readable)."""
        return self.rotate()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
