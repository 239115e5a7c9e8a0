"""The disk spool in front of the MQTT client: events are on disk before anything is sent.

A SQLite database in WAL mode holds the events waiting for the broker's PUBACK.  They are stored
the way they are sent: one row (a *batch*) per future MQTT message, holding the events' JSON already
joined (``e1,e2,...``), so the publisher sends a row with no per-event work and deletes it with one
statement when the PUBACK arrives.  Every event still has its own sequence number (the batch's
``seq`` plus its index in the batch), id and payload, and the per-event view (:meth:`Spool.peek`,
:meth:`Spool.ack`) is kept for inspection and tests.

* **Durable before acknowledged**: :meth:`Spool.put_many` commits (one transaction for the whole
  call) before it returns, so an event the pipeline has handed over survives a crash of the daemon
  (SIGKILL) and - with ``synchronous="FULL"`` - a power loss.
* **Deleted only on PUBACK**: the publisher reads batches in order (:meth:`Spool.peek_batches`),
  publishes them and deletes them only when the broker acknowledged them
  (:meth:`Spool.ack_batches`); after a restart everything not yet acknowledged is sent again,
  oldest first (at-least-once; consumers de-duplicate by event id).
* **Bound**: at most ``max_rows`` *events* (an anomalous event counts twice: it is spooled on the
  ``events`` and the ``anomalies`` channel).  Adding beyond the bound first drops the *oldest
  ordinary* events (channel ``events``); anomaly events (channel ``anomalies``) are dropped only
  when nothing else is left.  Drops are per event (a batch may lose its oldest events only; it is
  then marked and rewritten when published), counted (persisted) and reported in the node's status.
* **De-duplication**: an event whose (channel, id) was spooled among the last ``dedup_window``
  events (in memory, rebuilt from the newest batches when the spool is opened) is ignored, so log
  lines re-read after a crash are not queued twice.  Older repeats are queued again and the
  collector de-duplicates them by id (the guarantee was at-least-once anyway).

Batching: :meth:`Spool.put_many` cuts consecutive events of one channel into batches of at most
``max_events`` events and ``max_bytes`` bytes of joined JSON (the publisher passes its MQTT message
limits).  A single event larger than ``max_bytes`` is a batch of its own.

Failure modes: a corrupt or unwritable database raises :class:`SpoolError` at open time with the
path and SQLite's reason; a write that fails is rolled back and raises :class:`SpoolError` (nothing
of that call is in the spool).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Spool", "SpoolBatch", "SpoolError", "SpoolRow", "SpoolStats"]

#: Channels, in drop order: events of earlier channels are dropped first when the spool is full.
DROP_ORDER = ("events", "anomalies")

#: Separator of the event ids stored with a batch (never part of an id).
_SEP = "\x1f"


class SpoolError(RuntimeError):
    """The spool database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """One spooled event (the per-event view)."""

    seq: int
    channel: str
    event_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """One batch = one future MQTT message: ``n`` events of ``channel``, their JSON joined by ``,``."""

    seq: int
    channel: str
    n: int
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
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,    -- sequence number of the batch's first event
    channel TEXT NOT NULL,
    n0 INTEGER NOT NULL,        -- events written: the batch spans seq .. seq + n0 - 1
    n INTEGER NOT NULL,         -- events still live
    live BLOB,                  -- NULL when all n0 are live, else one byte per event (1 = live)
    ids TEXT NOT NULL,          -- the n0 event ids, separated by U+001F
    lens BLOB NOT NULL,         -- the n0 payload lengths, uint32 little-endian
    payload BLOB NOT NULL       -- the n0 payloads joined by ","
);
CREATE INDEX IF NOT EXISTS batches_channel ON batches (channel, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _lens_blob(lens: list[int]) -> bytes:
    a = array("I", lens)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def _lens_list(blob: bytes) -> list[int]:
    a = array("I")
    a.frombytes(blob)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


def _split(payload: bytes, lens: list[int]) -> list[bytes]:
    """The single payloads of a batch (joined with one ``,`` between them)."""
    out = []
    pos = 0
    for n in lens:
        out.append(payload[pos:pos + n])
        pos += n + 1
    return out


class Spool:
    """A bounded, ordered, durable queue of (channel, event id, payload) events, stored in batches.

    Parameters
    ----------
    path : Path
        Database file (its directory is created).  ``":memory:"`` for tests that need no disk.
    max_rows : int
        Bound on the number of spooled events (>= 1).
    synchronous : str
        SQLite ``synchronous`` mode: ``NORMAL`` (default; survives a daemon crash, may lose the last
        transactions on power loss) or ``FULL`` (survives power loss, slower on SD cards).
    max_events, max_bytes : int
        Default batch limits of :meth:`put_many` (events per batch, bytes of joined JSON).
    dedup_window : int
        How many of the newest (channel, id) keys are remembered for de-duplication (~120 bytes of
        memory each; the default covers several of the log source's read rounds of 5000 lines).

    Thread-safe: one connection guarded by a lock (the pipeline thread adds, the MQTT publisher
    thread reads and acknowledges).
    """

    def __init__(self, path: Path | str, max_rows: int = 1_000_000, synchronous: str = "NORMAL", *,
                 max_events: int = 500, max_bytes: int = 256 * 1024, dedup_window: int = 16384) -> None:
        if max_rows < 1:
            raise ValueError(f"spool max_rows must be at least 1, not {max_rows}")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"spool synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        if max_events < 1 or max_bytes < 1:
            raise ValueError("spool max_events and max_bytes must be positive")
        if dedup_window < 0:
            raise ValueError(f"spool dedup_window must not be negative, not {dedup_window}")
        self.path = str(path)
        self.max_rows = int(max_rows)
        self.max_events = int(max_events)
        self.max_bytes = int(max_bytes)
        self.dedup_window = int(dedup_window)
        self._lock = threading.Lock()
        self._recent: set[str] = set()
        self._recent_q: deque[str] = deque()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            r = self._db.execute("SELECT COALESCE(SUM(n), 0), COALESCE(MAX(seq + n0), 1) FROM batches").fetchone()
            self._depth = int(r[0])
            self._next = max(int(r[1]), self._counter("next_seq"), 1)
            self._load_recent()
        except (sqlite3.Error, OSError) as e:
            raise SpoolError(f"cannot open the spool {self.path}: {e}") from e

    # -- opening ------------------------------------------------------------------------------

    def _load_recent(self) -> None:
        """Fill the de-duplication window from the newest batches."""
        keys: list[str] = []
        if self.dedup_window:
            for channel, ids in self._db.execute("SELECT channel, ids FROM batches ORDER BY seq DESC"):
                batch = [f"{channel}{_SEP}{i}" for i in str(ids).split(_SEP)]
                keys.extend(reversed(batch))
                if len(keys) >= self.dedup_window:
                    break
        for k in reversed(keys[:self.dedup_window]):
            self._remember(k)

    def _remember_many(self, keys: list[str]) -> None:
        """Add new keys (none of them in the window yet), oldest first; evict beyond the window."""
        if not self.dedup_window or not keys:
            return
        recent, q = self._recent, self._recent_q
        recent.update(keys)
        q.extend(keys)
        for _ in range(len(q) - self.dedup_window):
            recent.discard(q.popleft())

    def _remember(self, key: str) -> None:
        if key in self._recent or not self.dedup_window:
            return
        self._recent.add(key)
        self._recent_q.append(key)
        if len(self._recent_q) > self.dedup_window:
            self._recent.discard(self._recent_q.popleft())

    # -- counters -----------------------------------------------------------------------------

    def _bump(self, name: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def _set(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def _counter(self, name: str) -> int:
        r = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(r[0]) if r else 0

    # -- writing ------------------------------------------------------------------------------

    def put(self, channel: str, event_id: str, payload: bytes) -> None:
        """Add one event (committed when this returns)."""
        self.put_many([(channel, event_id, payload)])

    def put_many(self, rows: Iterable[tuple[str, str, bytes]], *, max_events: int | None = None,
                 max_bytes: int | None = None) -> int:
        """Add ``(channel, event id, payload)`` events in one transaction, in order; return how many
        were new (repeats within the de-duplication window are ignored).

        Consecutive events of one channel are stored as batches of at most ``max_events`` events and
        ``max_bytes`` bytes (default: the spool's).  If the bound is exceeded, the oldest ``events``
        are dropped first, then the oldest ``anomalies`` (counted in ``dropped_events`` /
        ``dropped_anomalies``).
        """
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return 0
        me = self.max_events if max_events is None else max(1, int(max_events))
        mb = self.max_bytes if max_bytes is None else max(1, int(max_bytes))
        with self._lock:
            keys: dict[str, None] = {}   # the new (channel, id) keys, in order
            try:
                self._db.execute("BEGIN IMMEDIATE")
                added = self._insert(rows, me, mb, keys)
                self._depth += added
                self._enforce_bound()
                self._set("next_seq", self._next)
                self._db.execute("COMMIT")
            except BaseException as e:
                self._rollback()
                self._depth = int(self._db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0])
                self._next = max(self._next, int(self._db.execute(
                    "SELECT COALESCE(MAX(seq + n0), 1) FROM batches").fetchone()[0]))
                if isinstance(e, sqlite3.Error):
                    raise SpoolError(f"cannot write to the spool {self.path}: {e}") from e
                raise
            self._remember_many(list(keys))   # only what is committed joins the window
        return added

    def _insert(self, rows: list[tuple[str, str, bytes]], max_events: int, max_bytes: int,
                keys: dict[str, None]) -> int:
        """Insert batches (inside a transaction); the new (channel, id) keys are added to ``keys``."""
        recent = self._recent
        out: list[tuple[int, str, int, int, None, str, bytes, bytes]] = []
        channel = ""
        ids: list[str] = []
        pays: list[bytes] = []
        lens: list[int] = []
        size = 0

        def cut() -> None:
            nonlocal size
            n = len(ids)
            out.append((self._next, channel, n, n, None, _SEP.join(ids), _lens_blob(lens), b",".join(pays)))
            self._next += n
            ids.clear()
            pays.clear()
            lens.clear()
            size = 0

        for ch, eid, payload in rows:
            key = f"{ch}{_SEP}{eid}"
            if key in recent or key in keys:
                continue
            if _SEP in eid:
                raise ValueError(f"event id {eid!r} contains U+001F")
            keys[key] = None
            ln = len(payload)
            if ids and (ch != channel or len(ids) >= max_events or size + ln + 1 > max_bytes):
                cut()
            channel = ch
            ids.append(eid)
            pays.append(payload)
            lens.append(ln)
            size += ln + 1
        if ids:
            cut()
        if out:
            self._db.executemany(
                "INSERT INTO batches(seq, channel, n0, n, live, ids, lens, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                out)
        return sum(r[2] for r in out)

    def _drop_front(self, seq: int, n0: int, live: bytes | None, k: int) -> None:
        """Mark the oldest ``k`` live events of batch ``seq`` dropped (fewer than it has)."""
        mask = bytearray(live if live is not None else b"\x01" * n0)
        for i in range(n0):
            if k == 0:
                break
            if mask[i]:
                mask[i] = 0
                k -= 1
        self._db.execute("UPDATE batches SET live = ?, n = ? WHERE seq = ?", (bytes(mask), sum(mask), seq))

    def _enforce_bound(self) -> None:
        excess = self._depth - self.max_rows
        if excess <= 0:
            return
        for channel in (*DROP_ORDER, None):
            while excess > 0:
                if channel is None:   # channels outside DROP_ORDER: count as ordinary events
                    r = self._db.execute("SELECT seq, n0, n, live FROM batches WHERE channel NOT IN (?, ?) "
                                         "ORDER BY seq LIMIT 1", DROP_ORDER).fetchone()
                else:
                    r = self._db.execute("SELECT seq, n0, n, live FROM batches WHERE channel = ? "
                                         "ORDER BY seq LIMIT 1", (channel,)).fetchone()
                if r is None:
                    break
                seq, n0, n, live = int(r[0]), int(r[1]), int(r[2]), r[3]
                k = min(n, excess)
                if k == n:
                    self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                else:
                    self._drop_front(seq, n0, None if live is None else bytes(live), k)
                self._bump(f"dropped_{channel if channel == 'anomalies' else 'events'}", k)
                self._depth -= k
                excess -= k

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # -- the publisher's view: batches -----------------------------------------------------------

    def peek_batches(self, limit: int, after: int = 0) -> list[SpoolBatch]:
        """Up to ``limit`` batches with ``seq > after``, oldest first; payloads hold live events only."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, channel, n, live, lens, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit)).fetchall()
        out = []
        for seq, channel, n, live, lens, payload in rows:
            data = bytes(payload)
            if live is not None:
                parts = _split(data, _lens_list(bytes(lens)))
                data = b",".join(p for p, keep in zip(parts, bytes(live), strict=True) if keep)
            out.append(SpoolBatch(int(seq), str(channel), int(n), data))
        return out

    def has_after(self, seq: int) -> bool:
        """Whether a batch newer than ``seq`` is spooled."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM batches WHERE seq > ? LIMIT 1", (seq,)).fetchone() is not None

    def ack_batches(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged batches; return how many live events they held (a dropped one is gone)."""
        if not seqs:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                n = 0
                for s in seqs:
                    r = self._db.execute("SELECT n FROM batches WHERE seq = ?", (int(s),)).fetchone()
                    if r is not None:
                        n += int(r[0])
                        self._db.execute("DELETE FROM batches WHERE seq = ?", (int(s),))
                self._depth -= n
                self._bump("acked", n)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise SpoolError(f"cannot write to the spool {self.path}: {e}") from e
            return n

    # -- the per-event view (inspection, tests) --------------------------------------------------

    def peek(self, limit: int, after: int = 0, channel: str | None = None) -> list[SpoolRow]:
        """Up to ``limit`` live events with ``seq > after`` in order (optionally of one channel)."""
        out: list[SpoolRow] = []
        with self._lock:
            sql = "SELECT seq, channel, n0, live, ids, lens, payload FROM batches WHERE seq + n0 > ?"
            args: tuple[object, ...] = (after,)
            if channel is not None:
                sql += " AND channel = ?"
                args += (channel,)
            for seq, ch, n0, live, ids, lens, payload in self._db.execute(sql + " ORDER BY seq", args):
                parts = _split(bytes(payload), _lens_list(bytes(lens)))
                mask = bytes(live) if live is not None else b"\x01" * int(n0)
                for i, (eid, p) in enumerate(zip(str(ids).split(_SEP), parts, strict=True)):
                    s = int(seq) + i
                    if s > after and mask[i]:
                        out.append(SpoolRow(s, str(ch), eid, p))
                        if len(out) >= limit:
                            return out
        return out

    def ack(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged events by their sequence numbers; return how many were still spooled."""
        if not seqs:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                by_batch: dict[tuple[int, int, bytes | None], list[int]] = {}
                for s in sorted({int(x) for x in seqs}):
                    r = self._db.execute("SELECT seq, n0, live FROM batches WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
                                         (s,)).fetchone()
                    if r is None or s >= int(r[0]) + int(r[1]):
                        continue
                    key = (int(r[0]), int(r[1]), None if r[2] is None else bytes(r[2]))
                    by_batch.setdefault(key, []).append(s - key[0])
                n = 0
                for (seq, n0, live), idx in by_batch.items():
                    mask = bytearray(live if live is not None else b"\x01" * n0)
                    for i in idx:
                        n += mask[i]
                        mask[i] = 0
                    if any(mask):
                        self._db.execute("UPDATE batches SET live = ?, n = ? WHERE seq = ?",
                                         (bytes(mask), sum(mask), seq))
                    else:
                        self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                self._depth -= n
                self._bump("acked", n)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise SpoolError(f"cannot write to the spool {self.path}: {e}") from e
            return n

    # -- state --------------------------------------------------------------------------------

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
