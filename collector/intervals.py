"""Per-route prediction intervals of delivery latency: an adaptive-conformal quantile tracker.

For each route (the observing node and the delivery's relay, by its ``[relays] names`` name) the
tracker keeps a lower and an upper bound of ``log2(latency)`` and updates them after every
delivery with the *quantile tracker* of adaptive conformal prediction (Gibbs & Candes 2021;
Angelopoulos, Candes & Tibshirani 2023): ``hi += lr * (miss_hi - alpha/2)``,
``lo -= lr * (miss_lo - alpha/2)``.  Whatever the latencies do, the long-run share of deliveries
above ``hi`` (below ``lo``) tends to ``alpha/2``: the interval covers ``1 - alpha`` of them.

This is the collector's stand-in until the reference model (``hdl/reference.py``) has its own
per-route adaptive-conformal intervals: anything with ``interval(route)`` and ``update(route, y)``
(:class:`IntervalModel`) can take its place in :func:`coverage`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from .relays import RelayNames

__all__ = ["SIDES", "IntervalBook", "IntervalModel", "RouteIntervals", "coverage", "delivery_route", "log2_latency",
           "side_of"]

#: Postfix's ``delay=`` resolution: latencies below it count as this much
MIN_LATENCY_S = 0.01


class IntervalModel(Protocol):
    """What :func:`coverage` needs of a per-route interval model."""

    def interval(self, route: str) -> tuple[float, float] | None: ...

    def update(self, route: str, y: float) -> None: ...


class RouteIntervals:
    """One quantile tracker per route (bounded: at most ``max_routes``, the oldest forgotten).

    Parameters
    ----------
    alpha : float
        Miss rate the interval aims at (0.1: a 90 % interval).
    lr : float
        Step of the bounds per delivery, in log2 units (0.2: 15 % of the latency per miss; on a recorded
        80 s compressed day 0.1 had not settled, 0.868 coverage, while 0.2 - 0.5 gave 0.898 - 0.904).
    """

    def __init__(self, alpha: float = 0.1, lr: float = 0.2, max_routes: int = 10000) -> None:
        self.alpha, self.lr, self.max_routes = alpha, lr, max_routes
        self.bounds: dict[str, list[float]] = {}

    def interval(self, route: str) -> tuple[float, float] | None:
        b = self.bounds.get(route)
        return None if b is None else (b[0], b[1])

    def update(self, route: str, y: float) -> None:
        b = self.bounds.get(route)
        if b is None:
            if len(self.bounds) >= self.max_routes:
                self.bounds.pop(next(iter(self.bounds)))
            self.bounds[route] = [y, y]
            return
        half = self.alpha / 2.0
        b[1] += self.lr * (float(y > b[1]) - half)
        b[0] -= self.lr * (float(y < b[0]) - half)


def log2_latency(seconds: float) -> float:
    return math.log2(max(float(seconds), MIN_LATENCY_S))


def delivery_route(ev: dict[str, Any], names: RelayNames) -> str | None:
    """A delivery event's route (``site/node|relay``), None for other events."""
    f = ev.get("fields") or {}
    if ev.get("kind") != "delivery" or not isinstance(f.get("delay"), int | float):
        return None
    return f"{ev.get('site')}/{ev.get('node')}|{names.name(f.get('relay'))}"


def coverage(events: Iterable[dict[str, Any]], model: IntervalModel, names: RelayNames | None = None,
             count: Any = None) -> tuple[int, int]:
    """Feed deliveries (in order) through ``model``; returns (deliveries with a prediction, of which
    inside it).  ``count(ev)`` decides which events are counted (all by default); every delivery
    updates the model."""
    names = names or RelayNames()
    n = inside = 0
    for ev in events:
        route = delivery_route(ev, names)
        if route is None:
            continue
        y = log2_latency(float(ev["fields"]["delay"]))
        iv = model.interval(route)
        if iv is not None and (count is None or count(ev)):
            n += 1
            inside += int(iv[0] <= y <= iv[1])
        model.update(route, y)
    return n, inside


#: How a delivery fell against the interval in force when it arrived.
SIDES = ("inside", "above", "below")


def side_of(y: float, iv: tuple[float, float]) -> str:
    return "above" if y > iv[1] else ("below" if y < iv[0] else "inside")


class IntervalBook:
    """The collector's intervals: every delivery it ingests goes through ``model`` on its route
    (:func:`delivery_route`), and each route keeps its last ``points`` deliveries as
    ``(time, latency_s, lower_s, upper_s, side)`` (bounds in seconds: ``2 ** bound``; the interval
    in force when the delivery arrived, None for a route's first delivery) and its counts by side.

    Bounded: at most ``max_routes`` routes are tracked (the first ones seen); deliveries on further
    routes update nothing and are counted in ``folded``.
    """

    def __init__(self, names: RelayNames | None = None, model: IntervalModel | None = None, alpha: float = 0.1,
                 max_routes: int = 50, points: int = 240) -> None:
        self.names = names or RelayNames()
        self.alpha = alpha
        self.model: IntervalModel = model or RouteIntervals(alpha=alpha, max_routes=max_routes)
        self.max_routes, self.max_points = max_routes, points
        self.points: dict[str, deque[tuple[float, float, float | None, float | None, str | None]]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.folded = 0

    @property
    def level(self) -> float:
        """The nominal coverage (0.9 for ``alpha`` 0.1)."""
        return 1.0 - self.alpha

    def observe(self, ev: dict[str, Any], t: float) -> tuple[str, str | None, float | None, float | None] | None:
        """Run one event (at time ``t``) through the tracker: ``(route, side, lower_s, upper_s)`` for a
        delivery on a tracked route (side and bounds None for its first one), else None."""
        route = delivery_route(ev, self.names)
        if route is None:
            return None
        if route not in self.points:
            if len(self.points) >= self.max_routes:
                self.folded += 1
                return None
            self.points[route] = deque(maxlen=self.max_points)
            self.counts[route] = dict.fromkeys(SIDES, 0)
        delay = float(ev["fields"]["delay"])
        if not math.isfinite(delay):
            return None
        y = log2_latency(delay)
        iv = self.model.interval(route)
        side = lo = hi = None
        if iv is not None:
            side = side_of(y, iv)
            lo, hi = 2.0 ** iv[0], 2.0 ** iv[1]
            self.counts[route][side] += 1
        self.model.update(route, y)
        self.points[route].append((t, max(delay, MIN_LATENCY_S), lo, hi, side))
        return route, side, lo, hi

    def bounds(self, route: str) -> tuple[float, float] | None:
        """The route's current interval in seconds."""
        iv = self.model.interval(route)
        return None if iv is None else (2.0 ** iv[0], 2.0 ** iv[1])

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
