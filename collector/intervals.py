"""Per-route prediction intervals of delivery latency: the reference model's integer tracker.

For each route (the observing node and the delivery's relay, by its ``[relays] names`` name) the
collector keeps a lower and an upper bound of the delivery latency and updates them after every
delivery exactly as a scorer core's route unit does: :func:`mailpulse.hdl.reference.route_intervals`
(adaptive conformal prediction, Gibbs & Candes 2021, in integers).  The latency is the unsigned Q8.8
``log2(microseconds)`` of :func:`mailpulse.features.route_latency`; each bound is an accumulator with
``ADAPT_FRAC`` fraction bits that widens by ``big`` after a miss on its side and narrows by ``small``
after a hit (``route_steps(ratio, step_exp)``: ``big = ratio * small``), so each side's miss rate
tends to ``1 / (ratio + 1)`` and the coverage to ``1 - 2 / (ratio + 1)``.  Whatever the collector shows (the
dashboard's bands, ``mailpulse_route_interval_*``, an incident's ``interval_misses``) is therefore the
integer a core computes on the same deliveries, bit for bit (``tests/test_collector_intervals.py``).

Route ids are given out per route name in the order routes first deliver, from a bounded table
(``max_routes``): a route's first delivery seeds both bounds with its own latency
(:func:`~mailpulse.hdl.reference.route_seed`) and has no interval yet; a route that finds the table full
is not tracked (like a route id outside ``0..R-1`` in a core) and is counted.

The tracker sits behind :class:`IntervalModel` (``interval(route)``, ``update(route, v)``).  A node
whose core has route intervals feeds it with the same rules (:mod:`mailpulse.routes`,
:mod:`mailpulse.pi_firmware.routefeed`) and sends the core's ``below``/``above`` flags with each
delivery: :class:`IntervalBook` then counts the node's flags (what the core on the mail path saw) and
compares them with its own tracker's side - the two agree bit for bit unless one of them restarted
or lost deliveries; each disagreement is counted (``disagreements``, a metric) and the first one of
each route logged in one sentence.  The dashboard's bands stay the tracker's.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from mailpulse.hdl.reference import ADAPT_FRAC, RouteConfig, route_intervals, route_seed

from mailpulse.features import LATENCY_FLOOR_S, route_latency, route_latency_seconds
from mailpulse.routes import ROUTE_CONFIG, RelayNames, RouteTable, route_name

__all__ = ["ROUTE_CONFIG", "SIDES", "IntervalBook", "IntervalModel", "Observed", "RouteIntervals", "coverage",
           "delivery_route", "interval_input", "node_side", "nominal_coverage", "side_of"]

log = logging.getLogger(__name__)



def nominal_coverage(cfg: RouteConfig) -> float:
    """``1 - 2 / (ratio + 1)``: the share of deliveries the intervals aim to cover
    (:func:`mailpulse.hdl.reference.nominal_coverage`; 0.9 for ``ratio`` 19)."""
    return cfg.nominal_coverage


class IntervalModel(Protocol):
    """What :class:`IntervalBook` and :func:`coverage` need of a per-route interval model: the Q8.8
    bounds in force on a route (``L >> ADAPT_FRAC``, ``U >> ADAPT_FRAC``), the update after a delivery
    of Q8.8 latency ``v``, and the nominal coverage."""

    level: float

    def interval(self, route: str) -> tuple[int, int] | None: ...

    def update(self, route: str, v: int) -> None: ...


class RouteIntervals:
    """The reference model's route intervals for routes named by strings, ids from a bounded table.

    Parameters
    ----------
    cfg : RouteConfig
        The tracker's registers (:data:`ROUTE_CONFIG`).
    max_routes : int
        Size of the route table; routes past it are not tracked (counted in ``table.untracked``).

    Attributes
    ----------
    table : the route ids (:class:`~mailpulse.routes.RouteTable`: name -> id in the order of first
        delivery, and the deliveries it could not track)
    lower, upper : per route id, the bound accumulators (units of ``2**-ADAPT_FRAC`` of a Q8.8 value)
    """

    def __init__(self, cfg: RouteConfig = ROUTE_CONFIG, max_routes: int = 10000) -> None:
        if not cfg.enable:
            raise ValueError("the route intervals need a RouteConfig with enable=1")
        self.table = RouteTable(max_routes)
        self.cfg, self.max_routes = cfg, max_routes
        self.level = nominal_coverage(cfg)
        self.lower: list[int] = []
        self.upper: list[int] = []

    def interval(self, route: str) -> tuple[int, int] | None:
        rid = self.table.get(route)
        return None if rid is None else (self.lower[rid] >> ADAPT_FRAC, self.upper[rid] >> ADAPT_FRAC)

    def update(self, route: str, v: int) -> None:
        rid = self.table.get(route)
        if rid is None:
            if self.table.add(route) is None:
                return
            seed = route_seed(v << ADAPT_FRAC)
            self.lower.append(seed)
            self.upper.append(seed)
            return
        # one route at a time: the reference updates each route on its own events only
        r = route_intervals([0], [v], [self.lower[rid]], [self.upper[rid]], self.cfg)
        self.lower[rid], self.upper[rid] = int(r.lower[0]), int(r.upper[0])

    def entry(self, route: str) -> tuple[int, int, int] | None:
        """A tracked route's ``(id, lower, upper)`` (accumulators): what a store keeps per route."""
        rid = self.table.get(route)
        return None if rid is None else (rid, self.lower[rid], self.upper[rid])

    def restore(self, entries: Iterable[tuple[str, tuple[int, int, int]]]) -> None:
        """Take back routes saved with :meth:`entry` (any order; the ids as they were)."""
        for route, (rid, lo, up) in sorted(entries, key=lambda e: e[1][0]):
            self.table.restore(route, rid)
            self.lower.append(lo)
            self.upper.append(up)


def delivery_route(ev: dict[str, Any], names: RelayNames) -> str | None:
    """A delivery event's route (``site/node|relay``), None for other events."""
    f = ev.get("fields") or {}
    if ev.get("kind") != "delivery" or not isinstance(f.get("delay"), int | float):
        return None
    return route_name(ev.get("site"), ev.get("node"), names.name(f.get("relay")))


def interval_input(ev: dict[str, Any], names: RelayNames) -> tuple[str, int, str | None] | None:
    """A delivery's ``(route, Q8.8 latency, side by its node's core flags or None)`` as the tracker takes
    it (:func:`node_side`); None for other events and for a delay that is not a number."""
    route = delivery_route(ev, names)
    if route is None:
        return None
    try:
        return route, route_latency(ev["fields"]["delay"]), node_side(ev)
    except ValueError:
        return None


def coverage(events: Iterable[dict[str, Any]], model: IntervalModel, names: RelayNames | None = None,
             count: Any = None) -> tuple[int, int]:
    """Feed deliveries (in order) through ``model``; returns (deliveries with a prediction, of which
    inside it).  ``count(ev)`` decides which events are counted (all by default); every delivery
    updates the model.  A delay that is not a number is skipped."""
    names = names or RelayNames()
    n = inside = 0
    for ev in events:
        route = delivery_route(ev, names)
        if route is None:
            continue
        try:
            v = route_latency(ev["fields"]["delay"])
        except ValueError:
            continue
        iv = model.interval(route)
        if iv is not None and (count is None or count(ev)):
            n += 1
            inside += int(side_of(v, iv) == "inside")
        model.update(route, v)
    return n, inside


#: How a delivery fell against the interval in force when it arrived.
SIDES = ("inside", "above", "below")


def side_of(v: int, iv: tuple[int, int]) -> str:
    """The core's flags as a word: ``above`` for ``v > upper``, ``below`` for ``v < lower`` (above wins
    should the bounds ever cross), else ``inside``."""
    return "above" if v > iv[1] else ("below" if v < iv[0] else "inside")


def node_side(ev: dict[str, Any]) -> str | None:
    """The side a node's core flagged a delivery on (its payload's ``below``/``above``, both booleans;
    above wins like :func:`side_of`), None when the event carries no flags."""
    below, above = ev.get("below"), ev.get("above")
    if type(below) is not bool or type(above) is not bool:
        return None
    return "above" if above else ("below" if below else "inside")


class Observed(NamedTuple):
    """A delivery through :meth:`IntervalBook.observe`: its route, the side counted (the node's flags
    when it sent them, else the tracker's), the tracker's bounds in seconds before it, and both sides."""

    route: str
    side: str | None
    lower_s: float | None
    upper_s: float | None
    tracker: str | None = None
    node: str | None = None

    @property
    def disagrees(self) -> bool:
        """The node's flags and the tracker's side differ (both present)."""
        return self.node is not None and self.tracker is not None and self.node != self.tracker


class IntervalBook:
    """The collector's intervals: every delivery it ingests goes through ``model`` on its route
    (:func:`delivery_route`), and each route keeps its last ``points`` deliveries as
    ``(time, latency_s, lower_s, upper_s, side)`` (the latency floored at 10 ms like its Q8.8 value;
    bounds in seconds, :func:`~mailpulse.features.route_latency_seconds`; the interval in force when the
    delivery arrived, None for a route's first delivery) and its counts by side.

    Bounded: at most ``max_routes`` routes are tracked (the first ones seen); deliveries on further
    routes update nothing and are counted in ``folded``; a delay that is not a number in ``rejected``.

    A delivery that carries its node's core flags (:func:`node_side`) is counted by them (``node_flags``);
    where the tracker has a side too and it differs, ``disagreements`` counts it and the route's first
    one is logged (one sentence; at most one per tracked route).
    """

    def __init__(self, names: RelayNames | None = None, model: IntervalModel | None = None,
                 cfg: RouteConfig = ROUTE_CONFIG, max_routes: int = 50, points: int = 240) -> None:
        self.names = names or RelayNames()
        self.model: IntervalModel = model or RouteIntervals(cfg, max_routes=max_routes)
        self.max_routes, self.max_points = max_routes, points
        self.points: dict[str, deque[tuple[float, float, float | None, float | None, str | None]]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.folded = self.rejected = 0
        self.node_flags = self.disagreements = 0
        self._disagreed: set[str] = set()

    @property
    def level(self) -> float:
        """The nominal coverage (0.9 for ``ratio`` 19)."""
        return self.model.level

    def observe(self, ev: dict[str, Any], t: float) -> Observed | None:
        """Run one event (at time ``t``) through the tracker: an :class:`Observed` for a delivery on a
        tracked route (side and bounds None for its first one, unless its node sent flags), and for a
        folded route whose node sent flags (no bounds); else None."""
        route = delivery_route(ev, self.names)
        if route is None:
            return None
        try:
            v = route_latency(ev["fields"]["delay"])
        except ValueError:
            self.rejected += 1
            return None
        ns = node_side(ev)
        if ns is not None:
            self.node_flags += 1
        if route not in self.points:
            if len(self.points) >= self.max_routes:
                self.folded += 1
                return None if ns is None else Observed(route, ns, None, None, None, ns)
            self.points[route] = deque(maxlen=self.max_points)
            self.counts[route] = dict.fromkeys(SIDES, 0)
        iv = self.model.interval(route)
        own = lo = hi = None
        if iv is not None:
            own = side_of(v, iv)
            lo, hi = route_latency_seconds(iv[0]), route_latency_seconds(iv[1])
        got = Observed(route, ns if ns is not None else own, lo, hi, own, ns)
        if got.disagrees:
            self.disagreements += 1
            if route not in self._disagreed:
                self._disagreed.add(route)
                log.warning("route %s: delivery %s is %s its interval by the node's core but %s it by the "
                            "collector's tracker (further disagreements on this route are only counted)",
                            route[:200], str(ev.get("id"))[:64], ns, own)
        if got.side is not None:
            self.counts[route][got.side] += 1
        self.model.update(route, v)
        self.points[route].append((t, max(float(ev["fields"]["delay"]), LATENCY_FLOOR_S),
                                   lo, hi, got.side))
        return got

    def bounds(self, route: str) -> tuple[float, float] | None:
        """The route's current interval in seconds."""
        iv = self.model.interval(route)
        return None if iv is None else (route_latency_seconds(iv[0]), route_latency_seconds(iv[1]))

    def view(self, most: int = 12, points: int = 120) -> dict[str, Any]:
        """The dashboard's ``intervals``: up to ``most`` routes (most recently active first), each with
        its last ``points`` points and counts."""
        recent = sorted(self.points, key=lambda r: -(self.points[r][-1][0] if self.points[r] else 0.0))
        routes = []
        for r in recent[:most]:
            pts = list(self.points[r])[-points:]
            routes.append({"route": r[:200], "counts": dict(self.counts[r]),
                           "points": [[round(t, 3), round(y, 4), None if lo is None else round(lo, 4),
                                       None if hi is None else round(hi, 4), s] for t, y, lo, hi, s in pts]})
        return {"level": self.level, "routes": routes, "tracked": len(self.points), "folded": self.folded}
