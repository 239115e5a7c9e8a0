"""The disk spool in front of the MQTT client: events are on disk before anything is sent.

A SQLite database in WAL mode holds one row per (event, channel) waiting for the broker's PUBACK.
:meth:`Spool.put_many` commits before it returns, so an event the pipeline has handed over survives
a crash of the daemon (SIGKILL) and - with ``synchronous="FULL"`` - a power loss.  The publisher
reads rows in insertion order (:meth:`Spool.peek`), publishes them, and deletes them only when the
broker has acknowledged them (:meth:`Spool.ack`); after a restart everything not yet acknowledged
is sent again, oldest first (at-least-once; consumers de-duplicate by event id).

Bound: at most ``max_rows`` rows.  Adding beyond the bound first drops the *oldest ordinary*
events (channel ``events``); anomaly rows (channel ``anomalies``) are dropped only when nothing
else is left.  Drops are counted (persisted) and reported in the node's status.

Failure modes: a corrupt or unwritable database raises :class:`SpoolError` at open time with the
path and SQLite's reason; an event whose (id, channel) is already spooled is ignored (a re-read log
line is not queued twice).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Spool", "SpoolError", "SpoolRow", "SpoolStats"]

#: Channels, in drop order: rows of earlier channels are dropped first when the spool is full.
DROP_ORDER = ("events", "anomalies")


class SpoolError(RuntimeError):
    """The spool database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class SpoolRow:
    seq: int
    channel: str
    event_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    max_rows: int
    full: bool
    dropped_events: int
    dropped_anomalies: int
    acked: int

    def as_dict(self) -> dict[str, int | bool]:
        return {"depth": self.depth, "max": self.max_rows, "full": self.full,
                "dropped_events": self.dropped_events, "dropped_anomalies": self.dropped_anomalies,
                "acked": self.acked}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (event_id, channel)
);
CREATE INDEX IF NOT EXISTS spool_channel ON spool (channel, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted sequence numbers as inclusive (first, last) runs (a batch is usually one run)."""
    out: list[tuple[int, int]] = []
    for s in sorted(int(x) for x in seqs):
        if out and s <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], s))
        else:
            out.append((s, s))
    return out


class Spool:
    """A bounded, ordered, durable queue of (channel, event id, payload) rows.

    Parameters
    ----------
    path : Path
        Database file (its directory is created).  ``":memory:"`` for tests that need no disk.
    max_rows : int
        Bound on the number of rows (>= 1).
    synchronous : str
        SQLite ``synchronous`` mode: ``NORMAL`` (default; survives a daemon crash, may lose the last
        transactions on power loss) or ``FULL`` (survives power loss, slower on SD cards).

    Thread-safe: one connection guarded by a lock (the pipeline thread adds, the MQTT network
    thread acknowledges).
    """

    def __init__(self, path: Path | str, max_rows: int = 1_000_000, synchronous: str = "NORMAL") -> None:
        if max_rows < 1:
            raise ValueError(f"spool max_rows must be at least 1, not {max_rows}")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"spool synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = str(path)
        self.max_rows = int(max_rows)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            self._depth = int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
        except (sqlite3.Error, OSError) as e:
            raise SpoolError(f"cannot open the spool {self.path}: {e}") from e

    # -- counters -----------------------------------------------------------------------------

    def _bump(self, name: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def _counter(self, name: str) -> int:
        r = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(r[0]) if r else 0

    # -- writing ------------------------------------------------------------------------------

    def put(self, channel: str, event_id: str, payload: bytes) -> None:
        """Add one row (committed when this returns)."""
        self.put_many([(channel, event_id, payload)])

    def put_many(self, rows: Iterable[tuple[str, str, bytes]]) -> int:
        """Add rows in one transaction, in order; return how many were new (duplicates are ignored).

        If the bound is exceeded, the oldest ``events`` rows are dropped first, then the oldest
        ``anomalies`` rows (counted in ``dropped_events`` / ``dropped_anomalies``).
        """
        rows = list(rows)
        if not rows:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO spool(channel, event_id, payload) VALUES (?, ?, ?)", rows)
                added = self._db.total_changes - before
                self._depth += added
                excess = self._depth - self.max_rows
                for channel in DROP_ORDER:
                    if excess <= 0:
                        break
                    cur = self._db.execute(
                        "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool WHERE channel = ? "
                        "ORDER BY seq LIMIT ?)", (channel, excess))
                    self._bump(f"dropped_{channel}", cur.rowcount)
                    self._depth -= cur.rowcount
                    excess -= cur.rowcount
                if excess > 0:  # channels outside DROP_ORDER
                    cur = self._db.execute(
                        "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (excess,))
                    self._bump("dropped_events", cur.rowcount)
                    self._depth -= cur.rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise SpoolError(f"cannot write to the spool {self.path}: {e}") from e
        return added

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # -- reading and acknowledging ------------------------------------------------------------

    def peek(self, limit: int, after: int = 0, channel: str | None = None) -> list[SpoolRow]:
        """Up to ``limit`` rows with ``seq > after`` in insertion order (optionally one channel)."""
        with self._lock:
            if channel is None:
                cur = self._db.execute(
                    "SELECT seq, channel, event_id, payload FROM spool WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit))
            else:
                cur = self._db.execute(
                    "SELECT seq, channel, event_id, payload FROM spool WHERE seq > ? AND channel = ? "
                    "ORDER BY seq LIMIT ?", (after, channel, limit))
            return [SpoolRow(int(s), c, i, bytes(p)) for s, c, i, p in cur.fetchall()]

    def ack(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged rows; return how many existed (a dropped row is simply gone)."""
        if not seqs:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM spool WHERE seq BETWEEN ? AND ?", _ranges(seqs))
                n = self._db.total_changes - before
                self._depth -= n
                self._bump("acked", n)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise SpoolError(f"cannot write to the spool {self.path}: {e}") from e
            return n

    def __len__(self) -> int:
        return self._depth

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(self._depth, self.max_rows, self._depth >= self.max_rows,
                              self._counter("dropped_events"), self._counter("dropped_anomalies"),
                              self._counter("acked"))

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
