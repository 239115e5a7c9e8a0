"""The Flink job's steps as plain Python (no pyflink here): the job wraps each in a Flink function.

1. :func:`read_segment_records` (parallel, stateless): a released segment becomes its runs
   (:func:`~mailpulse.collector.flink.segments.segment_runs`, relays by ``[relays] names``): one header
   per run ``("h", ordinal, run, runs, events, t_max, damaged, invalid)`` (``invalid``: the segment's
   entries that fail the payload declaration, skipped and counted on its first run, 0 on the others)
   and one record per event
   ``("e", ordinal, run, line, Observation, delivery)`` (``delivery``: ``(interval route, Q8.8 latency,
   the side by its node's core flags or None)`` or None, :func:`~mailpulse.collector.intervals.interval_input`).
2. De-duplication (parallel, keyed by :func:`dedup_key`, i.e. by (node, event id)): the first
   copy of an event passes, a later copy passes as ``("e", ordinal, run, line, None)`` (so the run
   still knows it has all its records).
3. :func:`aggregate_run` (parallel, keyed by (segment, run)): once a run's header and all its
   events are in, the run's statistics per (path prefix, time bucket) -- built with the
   correlator's own :meth:`Bucket.add <mailpulse.collector.correlate.Bucket.add>` in line order --
   become one record ``("run", ordinal, run, runs, t_max, parts, kept, duplicates, damaged, deliveries,
   invalid)``
   (``parts`` a :class:`~mailpulse.collector.correlate.RunParts`, with the watermark's marks;
   ``deliveries`` the run's kept deliveries ``(route, latency, node side, Observation)`` in line order).
4. :class:`GlobalStep` (one task): applies the runs in archive order (segment ordinal, run),
   holding back those that arrive early, with :meth:`Correlator.merge
   <mailpulse.collector.correlate.Correlator.merge>`, then :meth:`Correlator.maybe_evaluate` (whose
   ticks fall only at run ends) --
   the recursive walk of :mod:`mailpulse.collector.correlate` itself.  Before it merges a run it
   runs the run's deliveries through the per-route latency intervals (the reference model's integer
   tracker, :class:`~mailpulse.collector.intervals.RouteIntervals`) and counts each one's side in the
   buckets of its tree nodes - the side its node's core flagged when the delivery carries flags, as
   :class:`~mailpulse.collector.intervals.IntervalBook` counts it - as the collector does when it
   ingests them.  Its state lives in a
   :class:`Store` (Flink keyed state in the job, dicts in tests): the correlator, its buckets one by
   one, and each route's interval ``(id, lower, upper)`` under the route's name.

**Order and the intervals.**  An interval is a sequential scan per route: each delivery's side
depends on every earlier delivery of its route, in order.  The segments are read in parallel, so
records reach the keyed steps in no particular event-time (or archive) order; a tracker keyed by
route in front of step 4 would see each route's deliveries in arrival order, and its integer bounds,
hence the sides, would differ from run to run and from the collector's.  So the tracker runs in step 4,
after the runs are back in archive order (the collector's ingest order: it archives each batch as it
ingests it).  The sides then equal those of a live collector that ingested the whole archive from
its start (one that restarted started its intervals afresh; the job does not know when it did), and
those of ``mailpulse correlate`` (:func:`~mailpulse.collector.correlate.correlate_archive` with the same
names and route table size).  The cost is one integer update per delivery in the single task.

Output lines (JSON, one per record): ``{"type": "change", "seq", "kind", "incident",
"previous_severity"}`` for each incident change (``seq`` numbers them from 0), ``{"type": "progress",
...}`` after each segment and ``{"type": "final", "incidents": [...], ...}`` at the end of a finished
archive (the list that ``mailpulse correlate --json`` prints).
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from mailpulse.collector.archive import skipped_summary
from mailpulse.collector.correlate import (
    Bucket,
    Change,
    CorrelateSettings,
    Correlator,
    Observation,
    RunParts,
    _count_iv,
    run_parts,
)
from mailpulse.collector.intervals import ROUTE_CONFIG, RouteIntervals, side_of
from mailpulse.collector.relays import RelayNames

from .segments import segment_events, segment_runs

log = logging.getLogger(__name__)

__all__ = ["DictStore", "GlobalStep", "Store", "aggregate_run", "dedup_key", "read_segment_records", "run_key"]

#: Correlator attributes kept in the store's meta record (the buckets are kept one by one).
_BULKY = ("s", "buckets", "children")


def read_segment_records(rec: tuple[Any, ...], s: CorrelateSettings, names: RelayNames | None = None
                         ) -> Iterator[tuple[Any, ...]]:
    """Step 1: ``("seg", ordinal, path)`` -> headers and events; ``("end", n)`` passes."""
    if rec[0] != "seg":
        yield rec
        return
    _, ordinal, path = rec[:3]
    damaged = False
    skipped: collections.Counter[str] = collections.Counter()
    try:
        events = segment_events(path, skipped)
    except (OSError, ValueError) as e:
        log.error("archive segment %s cannot be read, skipped: %s", path, e)
        events, damaged = [], True
    if skipped:
        log.warning("%s", skipped_summary(skipped, str(path)))
    runs = segment_runs(events, s, names)
    for r in runs:
        yield ("h", ordinal, r.index, len(runs), len(r.events), r.t_max, damaged,
               sum(skipped.values()) if r.index == 0 else 0)
        for line, ob in r.events:
            yield ("e", ordinal, r.index, line, ob, r.deliveries.get(line))


def dedup_key(rec: tuple[Any, ...]) -> tuple[Any, ...]:
    """Step 2's key: an event's (node, id); anything else its run (it passes unchanged)."""
    if rec[0] == "e":
        ob: Observation = rec[4]
        return ("e", ob.node, ob.eid)
    return ("#", *rec[1:3])


def run_key(rec: tuple[Any, ...]) -> tuple[Any, ...]:
    """Step 3's key: the run (segment ordinal, run index); the end marker its own."""
    return (rec[1], rec[2]) if rec[0] in ("e", "h") else ("end",)


def aggregate_run(events: Iterable[tuple[Any, ...]], s: CorrelateSettings
                  ) -> tuple[RunParts, int, int, list[tuple[str, int, str | None, Observation]]]:
    """Step 3: a run's events (``(line, Observation or None for a duplicate[, delivery])``, any order)
    as :func:`~mailpulse.collector.correlate.run_parts` in line order, the counts kept and dropped, and
    the kept deliveries ``(route, latency, node side, Observation)`` in line order."""
    obs: list[Observation] = []
    deliveries: list[tuple[str, int, str | None, Observation]] = []
    dups = 0
    for e in sorted(events, key=lambda e: e[0]):
        ob = e[1]
        if ob is None:
            dups += 1
            continue
        obs.append(ob)
        if len(e) > 2 and e[2] is not None:
            deliveries.append((e[2][0], e[2][1], e[2][2] if len(e[2]) > 2 else None, ob))
    return run_parts(obs, s), len(obs), dups, deliveries


class Store(Protocol):
    """Where :class:`GlobalStep` keeps its state (Flink keyed state in the job)."""

    def get_meta(self) -> dict[str, Any] | None: ...
    def set_meta(self, meta: dict[str, Any]) -> None: ...
    def put_pending(self, key: str, rec: tuple[Any, ...]) -> None: ...
    def pop_pending(self, key: str) -> tuple[Any, ...] | None: ...
    def put_bucket(self, key: str, value: tuple[int, Bucket]) -> None: ...
    def remove_bucket(self, key: str) -> None: ...
    def bucket_items(self) -> Iterable[tuple[str, tuple[int, Bucket]]]: ...
    def put_route(self, route: str, entry: tuple[int, int, int]) -> None: ...
    def route_items(self) -> Iterable[tuple[str, tuple[int, int, int]]]: ...


class DictStore:
    """A :class:`Store` in dicts (tests, and the reference for the Flink one)."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] | None = None
        self.pending: dict[str, tuple[Any, ...]] = {}
        self.buckets: dict[str, tuple[int, Bucket]] = {}
        self.routes: dict[str, tuple[int, int, int]] = {}

    def get_meta(self) -> dict[str, Any] | None:
        return self.meta

    def set_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def put_pending(self, key: str, rec: tuple[Any, ...]) -> None:
        self.pending[key] = rec

    def pop_pending(self, key: str) -> tuple[Any, ...] | None:
        return self.pending.pop(key, None)

    def put_bucket(self, key: str, value: tuple[int, Bucket]) -> None:
        self.buckets[key] = value

    def remove_bucket(self, key: str) -> None:
        self.buckets.pop(key, None)

    def bucket_items(self) -> Iterable[tuple[str, tuple[int, Bucket]]]:
        return list(self.buckets.items())

    def put_route(self, route: str, entry: tuple[int, int, int]) -> None:
        self.routes[route] = entry

    def route_items(self) -> Iterable[tuple[str, tuple[int, int, int]]]:
        return list(self.routes.items())


def _bkey(key: tuple[str, ...], b: int) -> str:
    return "\x1f".join((*key, str(b)))


def _unbkey(k: str) -> tuple[tuple[str, ...], int]:
    *key, b = k.split("\x1f")
    return tuple(key), int(b)


def _change_line(ch: Change, seq: int) -> str:
    return json.dumps({"type": "change", "seq": seq, "kind": ch.kind, "previous_severity": ch.previous_severity,
                       "incident": ch.incident}, separators=(",", ":"))


class GlobalStep:
    """Step 4: the correlator fed with runs in archive order (module docstring).

    The in-memory :class:`Correlator` mirrors the store: after every record the meta record (its
    scalars and incidents, the next run due, counters) and each bucket that changed are written,
    so a restart from a checkpoint of the store continues exactly.
    """

    def __init__(self, settings: CorrelateSettings, store: Store, names: RelayNames | None = None,
                 interval_routes: int = 50) -> None:
        self.s = settings
        self.store = store
        self.names = names
        #: the route intervals (the collector's ``[metrics] label_values`` routes at most)
        self.intervals = RouteIntervals(ROUTE_CONFIG, max_routes=interval_routes)
        self.c: Correlator | None = None
        self.next: tuple[int, int] = (0, 0)
        self.counts = {"runs": 0, "segments": 0, "duplicates": 0, "damaged": 0, "invalid": 0, "changes": 0}
        self.order = 0                       # creation number of the next bucket (dict order on restore)
        self.stored: dict[str, int] = {}     # bucket key -> creation number, as in the store

    def _load(self) -> Correlator:
        c = Correlator(self.s, self.names, self.intervals.level)
        self.intervals.restore(self.store.route_items())
        meta = self.store.get_meta()
        if meta is not None:
            c.__dict__.update(meta["correlator"])
            self.next = (int(meta["next"][0]), int(meta["next"][1]))
            self.counts = dict(meta["counts"])
            self.order = meta["order"]
            self.intervals.table.untracked = meta.get("untracked", 0)
            items = sorted(self.store.bucket_items(), key=lambda kv: kv[1][0])
            for k, (n, bk) in items:
                key, b = _unbkey(k)
                c.buckets[key][b] = bk
                if len(key) > 1:
                    c.children[key[:-1]].add(key)
                self.stored[k] = n
        self.c = c
        return c

    def _save(self, c: Correlator) -> None:
        keep = {k: v for k, v in c.__dict__.items() if k not in _BULKY}
        self.store.set_meta({"correlator": keep, "next": list(self.next), "counts": self.counts, "order": self.order,
                             "untracked": self.intervals.table.untracked})

    def offer(self, rec: tuple[Any, ...]) -> list[str]:
        """Take a run (or the end marker) from step 3; returns the output lines it releases."""
        c = self.c if self.c is not None else self._load()
        at = (rec[1], 0) if rec[0] == "end" else (rec[1], rec[2])
        out: list[str] = []
        if at != self.next:
            self.store.put_pending(f"{at[0]}:{at[1]}", rec)
            return out
        while True:
            out.extend(self._apply(c, rec))
            if rec[0] == "end":
                break
            nxt = self.store.pop_pending(f"{self.next[0]}:{self.next[1]}")
            if nxt is None:
                break
            rec = nxt
        self._save(c)
        return out

    def _apply(self, c: Correlator, rec: tuple[Any, ...]) -> list[str]:
        if rec[0] == "end":
            changes = c.evaluate() if c.observed else []
            final = {"type": "final", "incidents": c.all_incidents(), "observed": c.observed, **self.counts}
            return [*self._lines(changes), json.dumps(final, separators=(",", ":"))]
        _, ordinal, idx, runs, _t_max, parts, kept, dups, damaged = rec[:9]
        oldest = c._oldest
        touched = [_bkey(k, b) for k, b, _ in parts.buckets if b >= oldest]
        c.merge(parts)
        self._intervals(c, rec[9] if len(rec) > 9 else [])
        changes = c.maybe_evaluate() if kept else []
        for k in touched:
            key, b = _unbkey(k)
            bk = c.buckets.get(key, {}).get(b)
            if bk is None:
                continue
            n = self.stored.get(k)
            if n is None:
                n = self.stored[k] = self.order
                self.order += 1
            self.store.put_bucket(k, (n, bk))
        if c._oldest != oldest:   # an evaluation pruned the buckets older than the history
            self._drop_pruned(c)
        self.counts["runs"] += 1
        self.counts["duplicates"] += dups
        self.counts["damaged"] += int(damaged and idx == 0)
        self.counts["invalid"] += rec[10] if len(rec) > 10 else 0
        out = self._lines(changes)
        if idx + 1 < runs:
            self.next = (ordinal, idx + 1)
        else:
            self.next = (ordinal + 1, 0)
            self.counts["segments"] += 1
            out.append(json.dumps({"type": "progress", "segment": ordinal, "observed": c.observed, "now": c.now,
                                   **self.counts}, separators=(",", ":")))
        return out

    def _intervals(self, c: Correlator, deliveries: list[tuple[str, int, str | None, Observation]]) -> None:
        """The run's deliveries through their routes' intervals, in order; each side (its node's flags
        when it carries them) counted in the merged buckets of the delivery's tree nodes (as
        :meth:`Correlator.observe` with the collector's ``(route, side)`` would; a skewed clock's delivery
        moves its interval but is not correlated)."""
        changed: set[str] = set()
        for route, v, ns, ob in deliveries:
            iv = self.intervals.interval(route)
            self.intervals.update(route, v)
            changed.add(route)
            side = ns if ns is not None else (None if iv is None else side_of(v, iv))
            if side is None or ob.skewed or ob.bucket < c._oldest:
                continue
            counts = [1, int(side == "above"), int(side == "below")]
            for key in ob.tree_nodes():
                bk = c.buckets.get(key, {}).get(ob.bucket)
                if bk is not None:
                    _count_iv(bk.iv, route, counts)
        for route in changed:
            entry = self.intervals.entry(route)
            if entry is not None:
                self.store.put_route(route, entry)

    def _lines(self, changes: list[Change]) -> list[str]:
        """Change lines, numbered from 0 over the job's life (a reader orders and de-duplicates by it)."""
        first = self.counts["changes"]
        self.counts["changes"] += len(changes)
        return [_change_line(ch, first + i) for i, ch in enumerate(changes)]

    def _drop_pruned(self, c: Correlator) -> None:
        for k in list(self.stored):
            key, b = _unbkey(k)
            if b not in c.buckets.get(key, {}):   # pruned, or its tree node forgotten
                del self.stored[k]
                self.store.remove_bucket(k)

