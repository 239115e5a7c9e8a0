"""The Flink job's input: archive segments of one or more collector shards, in one order, cut into runs.

**Order.**  The embedded correlator (:func:`mailpulse.collector.correlate.correlate_archive`) sees
an archive's events in write order: segments by name, lines in order.  Several shards' archives
are read as one archive whose segments are ordered by :func:`segment_key`: the segment's open time
stamp (1 s resolution), then the shard (its position in the list of archive folders), then the
segment's sequence number.  For one folder this is the name order of ``closed_segments``.
:func:`merged_segments` lists them; :func:`read_shards` reads their events in that order (what
``mailpulse correlate --archive A --archive B`` replays).

**A growing archive.**  A collector names a new segment with the time it opens it, so a shard's
future segments sort at or after its open segment (``*.jsonl.tmp``), or, when it has none open,
after "now" (less a small clock margin).  :class:`Monitor` releases closed segments in
:func:`segment_key` order only below every shard's bound, so a live job sees the segments in the
same order as a batch run over the finished archive.  A shard whose open segment has not changed
for ``idle_s`` (a dead collector) stops holding the others back; a segment it closes later is
released after what was already released (the one case where live and batch order differ).

**Runs.**  The correlator looks at its watermark (and may evaluate) only on a tick: when the
newest receive time of the correlated events passes a multiple of ``eval_interval_s``
(:meth:`Correlator.maybe_evaluate`, :func:`~mailpulse.collector.correlate.next_step`).
:func:`segment_runs` cuts a segment into runs that end where such a tick can fall whatever came
before the segment: after the first event, and after each correlated event that raises the
segment's running maximum of receive times past the next multiple (a tick needs the global
maximum to pass one, and the global maximum is at least the segment's).  So no evaluation falls
inside a run, and a run's statistics can be aggregated in parallel and merged at once
(:meth:`Correlator.merge`).

Reading a segment is :func:`segment_events` (the one place that reads segment files): the
events that pass the payload declaration, as ``mailpulse correlate --archive`` reads them.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailpulse.collector.archive import closed_segments, read_valid_segment, skipped_summary
from mailpulse.collector.correlate import CorrelateSettings, Observation, next_step, observation
from mailpulse.collector.intervals import interval_input
from mailpulse.collector.relays import RelayNames

__all__ = ["Monitor", "Run", "SegmentRef", "merged_segments", "read_shards", "segment_events", "segment_key",
           "segment_runs"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^seg-(\d{8}T\d{6}Z)-(\d+)\.jsonl")
_FAR = "99999999T999999Z"


def segment_key(name: str, shard: int) -> tuple[str, int, int, str]:
    """Sort key of a segment file name of shard ``shard`` (names outside the layout sort by name, last)."""
    m = _NAME.match(name)
    if m is None:
        return (_FAR, shard, 0, name)
    return (m.group(1), shard, int(m.group(2)), name)


@dataclass(frozen=True)
class SegmentRef:
    """A closed segment and its place in the merged order."""

    path: str
    shard: int

    @property
    def key(self) -> tuple[str, int, int, str]:
        return segment_key(os.path.basename(self.path), self.shard)


def merged_segments(folders: Sequence[str | os.PathLike[str]]) -> list[SegmentRef]:
    """The closed segments of the shards' archive folders, in the merged order (module docstring)."""
    refs = [SegmentRef(str(p), i) for i, f in enumerate(folders) for p in closed_segments(f)]
    return sorted(refs, key=lambda r: r.key)


def segment_events(path: str | os.PathLike[str], skipped: collections.Counter[str] | None = None
                   ) -> list[dict[str, Any]]:
    """The valid events of one closed segment (``ValueError`` when it cannot be read).  Entries that
    fail the payload declaration are skipped, as ``mailpulse correlate`` skips them: counted in
    ``skipped``, or said in one log line without it."""
    mine: collections.Counter[str] = collections.Counter() if skipped is None else skipped
    n = sum(mine.values())
    events = read_valid_segment(path, mine)
    if skipped is None and sum(mine.values()) > n:
        log.warning("%s", skipped_summary(mine, str(path)))
    return events


def read_shards(folders: Sequence[str | os.PathLike[str]], skipped: collections.Counter[str] | None = None
                ) -> Iterator[dict[str, Any]]:
    """The valid events of several shards' archives, in the merged order (skipped ones counted in
    ``skipped``; an unreadable segment as ``unreadable_segment``)."""
    for ref in merged_segments(folders):
        try:
            yield from segment_events(ref.path, skipped)
        except ValueError as e:
            if skipped is None:
                raise
            log.debug("segment %s skipped: %s", ref.path, e)
            skipped["unreadable_segment"] += 1


@dataclass
class Run:
    """A run of consecutive events of one segment (see the module docstring).

    ``events`` are ``(line, Observation)``; ``t_max`` is the latest event time in the run.
    """

    index: int
    events: list[tuple[int, Observation]] = field(default_factory=list)
    t_max: float = -math.inf
    #: line -> a delivery's ``(interval route, Q8.8 latency, its node's side or None)`` (:func:`interval_input`)
    deliveries: dict[int, tuple[str, int, str | None]] = field(default_factory=dict)


def segment_runs(events: Sequence[dict[str, Any]], s: CorrelateSettings, names: RelayNames | None = None
                 ) -> list[Run]:
    """Cut a segment's events into runs; every segment has at least one run (an empty one if need be).
    ``names``: ``[relays] names`` (the tree's relay names and the deliveries' interval routes).  A
    delivery's interval input, ``(route, Q8.8 latency, node side)``, is in :attr:`Run.deliveries` by line."""
    runs = [Run(0)]
    step = s.eval_interval_s
    top = -math.inf
    for line, ev in enumerate(events):
        ob = observation(ev, s, names)
        run = runs[-1]
        run.events.append((line, ob))
        iv = interval_input(ev, names or RelayNames())
        if iv is not None:
            run.deliveries[line] = iv
        run.t_max = max(run.t_max, ob.t)
        cut = line == 0
        if not ob.skewed and ob.rec > top:
            cut = cut or top == -math.inf or next_step(top, step) <= ob.rec
            top = ob.rec
        if cut and line + 1 < len(events):
            runs.append(Run(len(runs)))
    return runs


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


class Monitor:
    """Releases the closed segments of growing archives in the merged order (module docstring).

    Its whole state is :attr:`last` (per shard, the key of the last segment released) and
    :attr:`next_ordinal`: a shard's own segments are released in its key order, so a checkpoint of
    those resumes it exactly.
    """

    def __init__(self, folders: Sequence[str], idle_s: float = 30.0, margin_s: float = 2.0,
                 clock: Any = time.time) -> None:
        self.folders = [str(f) for f in folders]
        self.idle_s = idle_s
        self.margin_s = margin_s
        self.clock = clock
        self.last: list[tuple[str, int, int, str] | None] = [None] * len(self.folders)
        self.next_ordinal = 0

    def _bound(self, shard: int, names: list[str], now: float) -> tuple[str, int, int, str] | None:
        """Where the shard's future segments sort from (None: it holds nothing back)."""
        open_ = sorted(n for n in names if n.endswith(".jsonl.tmp"))
        if not open_:
            return (_stamp(now - self.margin_s), shard, -1, "")
        try:
            age = now - os.stat(os.path.join(self.folders[shard], open_[0])).st_mtime
        except OSError:
            return (_stamp(now - self.margin_s), shard, -1, "")
        return None if age > self.idle_s else segment_key(open_[0], shard)

    def poll(self) -> list[tuple[int, SegmentRef]]:
        """Segments to release now, with their ordinals (consecutive from :attr:`next_ordinal`)."""
        now = self.clock()
        ready: list[SegmentRef] = []
        bounds = []
        for i, folder in enumerate(self.folders):
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            bounds.append(self._bound(i, names, now))
            last = self.last[i]
            for p in closed_segments(folder):
                ref = SegmentRef(str(p), i)
                if last is None or ref.key > last:
                    ready.append(ref)
        limits = [b for b in bounds if b is not None]
        limit = min(limits) if limits else None
        out = []
        for ref in sorted(ready, key=lambda r: r.key):
            if limit is not None and ref.key >= limit:
                break
            self.last[ref.shard] = ref.key
            out.append((self.next_ordinal, ref))
            self.next_ordinal += 1
        return out


def shard_folders(folders: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The archive folders as absolute paths (what the job is given)."""
    return [str(Path(f).resolve()) for f in folders]
