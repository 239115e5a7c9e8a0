"""Per-route latency intervals (:mod:`mailpulse.collector.intervals`): the reference model's integer
tracker on Q8.8 log2 latencies, bit for bit what :func:`mailpulse.hdl.reference.route_intervals` computes
on the same deliveries; the interval covers about its nominal share of each route's deliveries, also
when a route's latency level shifts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from mailpulse.collector.intervals import (
    ROUTE_CONFIG,
    IntervalBook,
    RouteIntervals,
    coverage,
    delivery_route,
    nominal_coverage,
    side_of,
)
from mailpulse.collector.relays import RelayNames
from mailpulse.hdl.reference import ADAPT_FRAC, RouteConfig, route_intervals, route_seed

from mailpulse.features import LATENCY_MAX, route_latency, route_latency_seconds

NAMES = RelayNames({"127.0.0.1:2525": "fast", "127.0.0.1:2626": "slow"})


def _deliveries(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        port = 2525 if i % 3 else 2626
        level = 0.05 if port == 2525 else (0.5 if i < n // 2 else 2.0)     # route 2626 slows down half-way
        out.append({"kind": "delivery", "site": "lab", "node": "edge",
                    "fields": {"relay": f"127.0.0.1[127.0.0.1]:{port}",
                               "delay": round(level * rng.lognormvariate(0, 0.6), 2)}})   # Postfix's 10 ms
    return out


def test_route_latency_is_q8_8_log2_microseconds_and_clamps_hostile_values() -> None:
    assert route_latency(1.0) == round(256 * math.log2(1e6)) == 5102
    assert route_latency(2.0) - route_latency(1.0) == 256                      # a factor of two: 256 counts
    assert route_latency(0.35) == 4715
    floor = route_latency(0.01)
    assert floor == 3402 and route_latency(0) == route_latency(-3.0) == route_latency(-math.inf) == floor
    assert route_latency(1e9) == 12756                                          # the payload's largest delay
    assert route_latency(1e308) == route_latency(math.inf) == LATENCY_MAX       # no overflow on the way
    with pytest.raises(ValueError, match="not a number"):
        route_latency(math.nan)
    assert route_latency_seconds(5102) == pytest.approx(1.0, rel=2e-3)


def test_tracker_is_bit_exact_with_the_reference_model() -> None:
    """The collector's tracker, one delivery at a time with route ids from its table, gives the flags and
    bounds of one batch call of the reference model on the same route ids and Q8.8 latencies."""
    evs = _deliveries(3000, 7)
    book = IntervalBook(NAMES, max_routes=2)
    ids: dict[str, int] = {}
    seeds: list[int] = []
    rids, vs, sides = [], [], []
    for i, ev in enumerate(evs):
        got = book.observe(ev, float(i))
        assert got is not None
        route, side = got[0], got[1]
        v = route_latency(ev["fields"]["delay"])
        if route not in ids:                   # the first delivery seeds both bounds, no flag
            ids[route] = len(ids)
            seeds.append(route_seed(v << ADAPT_FRAC))
            assert side is None
            continue
        rids.append(ids[route])
        vs.append(v)
        sides.append(side)
    ref = route_intervals(rids, vs, seeds, seeds, ROUTE_CONFIG)
    want = ["above" if a else ("below" if b else "inside") for a, b in zip(ref.above, ref.below, strict=True)]
    assert sides == want and ref.above.sum() > 0 and ref.below.sum() > 0
    model = book.model
    assert isinstance(model, RouteIntervals) and model.table.ids == ids
    assert model.lower == ref.lower.tolist() and model.upper == ref.upper.tolist()
    lo, hi = book.bounds("lab/edge|slow") or (0.0, 0.0)
    assert lo == route_latency_seconds(int(ref.lower[ids["lab/edge|slow"]]) >> ADAPT_FRAC)
    assert hi == route_latency_seconds(int(ref.upper[ids["lab/edge|slow"]]) >> ADAPT_FRAC)
    assert np.all(ref.upper >= 0) and np.all(ref.upper <= LATENCY_MAX << ADAPT_FRAC)


def test_coverage_is_near_the_nominal_per_route_and_after_a_shift() -> None:
    assert nominal_coverage(ROUTE_CONFIG) == pytest.approx(0.9) and nominal_coverage(RouteConfig(1, 31, 9)) == 0.9375
    assert nominal_coverage(RouteConfig(1, 0, 9)) == 0.0
    evs = _deliveries(6000, 3)
    assert delivery_route(evs[1], NAMES) == "lab/edge|fast"
    model = RouteIntervals()
    n, inside = coverage(evs, model, NAMES)
    assert n == 5998                 # the first delivery of each route has no prediction yet
    assert 0.88 <= inside / n <= 0.92
    lo, hi = model.interval("lab/edge|slow") or (0, 0)
    assert lo < route_latency(2.0) < hi      # the slow route's interval followed the shift
    # only the counted ones count; every delivery still updates the model
    n2, _ = coverage(_deliveries(600, 4), RouteIntervals(), NAMES, count=lambda e: e["fields"]["delay"] > 0.1)
    assert 0 < n2 < 598


def test_no_route_for_other_events_and_a_bounded_route_table() -> None:
    assert delivery_route({"kind": "probe", "fields": {}}, RelayNames()) is None
    m = RouteIntervals(max_routes=3)
    for r in "abcd":
        m.update(r, 4000)
    assert m.table.ids == {"a": 0, "b": 1, "c": 2} and m.table.untracked == 1
    assert m.interval("d") is None and m.interval("a") == (4000, 4000)
    with pytest.raises(ValueError, match="enable=1"):
        RouteIntervals(RouteConfig())


def test_interval_book_points_counts_bounds_and_hostile_delays() -> None:
    """The collector's book: per route the interval in force when each delivery arrived, its side and the
    counts; at most ``max_routes`` routes (further ones counted, not tracked), at most ``points`` points;
    a delay that is not a number is counted, not tracked; extra fields a node may add are ignored."""
    book = IntervalBook(NAMES, max_routes=2, points=50)
    evs = _deliveries(300, 5)
    for i, ev in enumerate(evs):
        got = book.observe(ev, 1000.0 + i)
        assert got is not None and got[0] in ("lab/edge|fast", "lab/edge|slow")
    assert book.observe({"kind": "probe", "fields": {"delay": 1.0}}, 0.0) is None
    other = dict(evs[0], fields={**evs[0]["fields"], "relay": "10.9.9.9[10.9.9.9]:25"})
    assert book.observe(other, 2000.0) is None and book.folded == 1
    nan = dict(evs[0], fields={**evs[0]["fields"], "delay": math.nan})
    assert book.observe(nan, 2001.0) is None and book.rejected == 1
    flagged = dict(evs[1], fields={**evs[1]["fields"], "interval": {"above": True}, "delay": 0.0})
    got = book.observe(flagged, 2002.0)
    assert got is not None and got[1] in ("inside", "below")       # its own tracker decides, 0 s is 10 ms
    pts = book.points["lab/edge|slow"]
    assert len(pts) == 50
    counts = book.counts["lab/edge|slow"]
    assert sum(counts.values()) == 99 and counts["above"] > 0 and counts["below"] > 0
    _t, lat, lo, hi, side = pts[-1]
    assert lo is not None and hi is not None and lo <= hi
    assert side == side_of(route_latency(lat), (route_latency(lo), route_latency(hi)))   # seconds round-trip
    v = book.view(most=1, points=10)
    assert v["level"] == pytest.approx(0.9) and len(v["routes"]) == 1 and len(v["routes"][0]["points"]) == 10
    assert v["routes"][0]["route"] == "lab/edge|fast"          # the most recently active route first
    assert v["routes"][0]["points"][-1][1] == 0.01             # a latency of 0 is drawn at the floor
