"""Time you can trust: per-node clock offsets, event times judged on ingest, and the watermark.

Every time a node sends is a value of *its* clock.  MQTT carries no broker receive time, so the
reference is the collector's own clock at the moment paho hands it a message (``received``); it
includes the network and broker delay ``d >= 0`` (and, after the collector was away, the time
the message waited in its persistent session).

**Offset.**  With ``offset = node clock - collector clock``, a heartbeat stamped ``s`` (status
``ts``, node clock, taken just before publishing) and received at ``r`` gives
``s - r = offset - d <= offset``: every sample is a lower bound.  :class:`ClockBook` keeps the last
:data:`HEARTBEAT_SAMPLES` live heartbeats of each node and takes the largest ``s - r`` - the least
delayed sample, NTP's clock filter - as the offset estimate.  Retained status delivered at
subscription time is old by construction and is not a sample.  Event times give lower bounds too
(``ts - r``, the event happened before it was published); their median over the last
:data:`EVENT_SAMPLES` events shows a clock that runs fast when no heartbeat is there to say so.

**Skewed.**  A node whose offset estimate is beyond ``max_offset_s`` in either direction, or whose
events' median lower bound is beyond it ahead, is *skewed*: it is reported (dashboard, metrics)
and its events, still archived, are marked ``"clock": "skewed"`` and kept out of the correlation:
such a node can neither open nor resolve incidents nor move correlation time.  One absurd value
cannot mark a node skewed through the event median; a forged heartbeat marks only its own node,
for the next :data:`HEARTBEAT_SAMPLES` heartbeats.

**Event time** (:meth:`ClockBook.judge`).  ``t`` = the event's ``ts`` minus the node's offset
when that is known and larger than :data:`RESOLUTION_S` (``clock`` = ``corrected``, else ``ok``);
an event of a skewed node, or one whose ``t`` is more than ``max_offset_s`` after ``received``
(no delay explains it: that stamp came from a wrong clock), is ``skewed`` and not correlated; a
``t`` more than ``max_future_s`` after ``received`` is replaced by ``received`` (``future``); an
event without ``ts`` gets ``received`` (``missing``).  ``t`` and ``clock`` are written into the
archived event, so ``mailpulse correlate`` replays exactly the times the live collector used.

**Watermark** (:class:`Watermark`, inside the correlator).  Correlation time never follows the
largest event time.  Each node has a high mark (its largest ``t``, which is at most its receive
time plus ``max_future_s``); the watermark is the *smallest* high mark among the nodes heard from
(receive time) in the last ``idle_s``, floored at the newest receive time minus ``max_lag_s`` (a
node replaying an old backlog does not hold everybody back) and never moving backwards.  So no
single node can push it forward: it is below every active node's own progress, and below the
collector's clock.
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field
from typing import Any

from mailpulse.payload import parse_time

__all__ = ["EVENT_SAMPLES", "HEARTBEAT_SAMPLES", "RESOLUTION_S", "ClockBook", "NodeClock", "Watermark"]

#: Live heartbeats kept per node for the offset estimate.
HEARTBEAT_SAMPLES = 5
#: Event lower bounds kept per node (their median tells a fast clock without heartbeats).
EVENT_SAMPLES = 32
#: Offsets below this are not corrected (log and Received times have one-second resolution).
RESOLUTION_S = 1.0


@dataclass
class NodeClock:
    """What the collector knows about one node's clock."""

    heartbeats: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=HEARTBEAT_SAMPLES))
    events: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=EVENT_SAMPLES))
    future: int = 0          # events whose time was replaced by the receive time
    skewed_events: int = 0   # events archived as "skewed"
    skewed: bool = False

    @property
    def offset(self) -> float | None:
        """Estimated node clock minus collector clock (seconds), from heartbeats; None before one."""
        return max(self.heartbeats) if self.heartbeats else None

    def event_bound(self) -> float | None:
        """Median of the event lower bounds (None with fewer than 8 events)."""
        return statistics.median(self.events) if len(self.events) >= 8 else None


class ClockBook:
    """Per-node clock offsets and the judgement of event times (see the module docstring)."""

    def __init__(self, max_offset_s: float = 30.0, max_future_s: float = 10.0) -> None:
        self.max_offset_s = max_offset_s
        self.max_future_s = max_future_s
        self.nodes: dict[tuple[str, str], NodeClock] = {}

    def _node(self, site: str, node: str) -> NodeClock:
        nc = self.nodes.get((site, node))
        if nc is None:
            nc = self.nodes[(site, node)] = NodeClock()
        return nc

    def _update(self, nc: NodeClock) -> None:
        off = nc.offset
        bound = nc.event_bound()
        nc.skewed = bool((off is not None and abs(off) > self.max_offset_s)
                         or (bound is not None and bound > self.max_offset_s))

    def heartbeat(self, site: str, node: str, ts: float, received: float) -> None:
        """A live (not retained) status stamped ``ts`` (node clock) arrived at ``received``."""
        nc = self._node(site, node)
        nc.heartbeats.append(ts - received)
        self._update(nc)

    def judge(self, site: str, node: str, ts: str | None, received: float) -> tuple[float, str]:
        """The event time the collector uses and how it was judged (``ok``, ``corrected``,
        ``future``, ``skewed``, ``missing``); ``ts`` is a validated ISO 8601 text or None."""
        nc = self._node(site, node)
        if ts is None:
            return received, "missing"
        e = parse_time(ts)
        lead = e - received
        nc.events.append(lead)
        if nc.skewed or lead > self.max_offset_s or len(nc.events) % 8 == 0:
            self._update(nc)      # the median of 32 on every event would cost more than the rest
        off = nc.offset
        t, how = e, "ok"
        if off is not None and abs(off) > RESOLUTION_S:
            t, how = e - off, "corrected"
        if nc.skewed or t - received > self.max_offset_s:
            # the node's clock, or this one stamp, is beyond any delay: never a correlation time
            nc.skewed_events += 1
            return min(t, received), "skewed"
        if t > received + self.max_future_s:
            nc.future += 1
            return received, "future"
        return t, how

    def is_skewed(self, site: str, node: str) -> bool:
        nc = self.nodes.get((site, node))
        return bool(nc and nc.skewed)

    def view(self, site: str, node: str) -> dict[str, Any]:
        """Offset, skew flag and counters of one node (dashboard and metrics)."""
        nc = self.nodes.get((site, node))
        if nc is None:
            return {"clock_offset_s": None, "clock_skewed": False, "future_events": 0, "skewed_events": 0}
        off = nc.offset
        return {"clock_offset_s": None if off is None else round(off, 3), "clock_skewed": nc.skewed,
                "future_events": nc.future, "skewed_events": nc.skewed_events}


class Watermark:
    """Correlation time: the smallest high mark of the active nodes (see the module docstring).

    Parameters
    ----------
    idle_s : float
        A node not heard from (receive time) for this long does not hold the watermark back.
    max_lag_s : float
        The watermark is at least the newest receive time minus this.
    """

    def __init__(self, idle_s: float = 30.0, max_lag_s: float = 120.0) -> None:
        self.idle_s = idle_s
        self.max_lag_s = max_lag_s
        self.high: dict[str, float] = {}
        self.heard: dict[str, float] = {}
        self.frontier = 0.0
        self.value = 0.0
        self.top = 0.0            # the largest high mark (the watermark is never above it)

    def observe(self, node: str, t: float, received: float) -> None:
        """An event of ``node`` with time ``t`` received at ``received``."""
        if t > self.high.get(node, -1.0):
            self.high[node] = t
            if t > self.top:
                self.top = t
        if received > self.heard.get(node, -1.0):
            self.heard[node] = received
        if received > self.frontier:
            self.frontier = received

    def advance(self) -> float:
        """Recompute and return the watermark (monotone)."""
        if not self.high:
            return self.value
        cut = self.frontier - self.idle_s
        active = [h for n, h in self.high.items() if self.heard[n] >= cut]
        cand = min(active) if active else self.value
        cand = max(cand, self.frontier - self.max_lag_s)
        if cand > self.value:
            self.value = cand
        for n in [n for n, r in self.heard.items() if r < cut - self.max_lag_s]:
            del self.heard[n], self.high[n]    # long gone: forget (bounded by the active nodes)
        return self.value
