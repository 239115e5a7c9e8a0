"""Per-route adaptive-conformal intervals (:mod:`mailpulse.collector.intervals`): the interval covers
about 1 - alpha of the deliveries of each route, also when a route's latency level shifts."""

from __future__ import annotations

import random

from mailpulse.collector.intervals import IntervalBook, RouteIntervals, coverage, delivery_route, log2_latency
from mailpulse.collector.relays import RelayNames


def _deliveries(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        port = 2525 if i % 3 else 2626
        level = 0.05 if port == 2525 else (0.5 if i < n // 2 else 2.0)     # route 2626 slows down half-way
        out.append({"kind": "delivery", "site": "lab", "node": "edge",
                    "fields": {"relay": f"127.0.0.1[127.0.0.1]:{port}", "delay": level * rng.lognormvariate(0, 0.6)}})
    return out


def test_coverage_is_near_the_target_per_route_and_after_a_shift() -> None:
    names = RelayNames({"127.0.0.1:2525": "fast", "127.0.0.1:2626": "slow"})
    evs = _deliveries(6000, 3)
    assert delivery_route(evs[1], names) == "lab/edge|fast"
    model = RouteIntervals(alpha=0.1)
    n, inside = coverage(evs, model, names)
    assert n == 5998                 # the first delivery of each route has no prediction yet
    assert 0.87 <= inside / n <= 0.93
    lo, hi = model.interval("lab/edge|slow") or (0.0, 0.0)
    assert lo < log2_latency(2.0) < hi      # the slow route's interval followed the shift
    # only the counted ones count; every delivery still updates the model
    n2, _ = coverage(_deliveries(600, 4), RouteIntervals(), names, count=lambda e: e["fields"]["delay"] > 0.1)
    assert 0 < n2 < 598


def test_no_route_for_other_events_and_bounded_routes() -> None:
    assert delivery_route({"kind": "probe", "fields": {}}, RelayNames()) is None
    m = RouteIntervals(max_routes=3)
    for r in "abcd":
        m.update(r, 1.0)
    assert m.interval("a") is None and m.interval("d") == (1.0, 1.0)
    assert log2_latency(0.0) == log2_latency(0.01)


def test_interval_book_points_counts_and_bounds() -> None:
    """The collector's book: per route the interval in force when each delivery arrived, its side and the
    counts; at most ``max_routes`` routes (further ones counted, not tracked), at most ``points`` points."""
    names = RelayNames({"127.0.0.1:2525": "fast", "127.0.0.1:2626": "slow"})
    book = IntervalBook(names, max_routes=2, points=50)
    evs = _deliveries(300, 5)
    for i, ev in enumerate(evs):
        got = book.observe(ev, 1000.0 + i)
        assert got is not None and got[0] in ("lab/edge|fast", "lab/edge|slow")
    assert book.observe({"kind": "probe", "fields": {"delay": 1.0}}, 0.0) is None
    other = dict(evs[0], fields={**evs[0]["fields"], "relay": "10.9.9.9[10.9.9.9]:25"})
    assert book.observe(other, 2000.0) is None and book.folded == 1
    pts = book.points["lab/edge|slow"]
    assert len(pts) == 50
    model = RouteIntervals()
    expected: dict[str, int] = {"inside": 0, "above": 0, "below": 0}
    for ev in evs:                          # the same tracker by hand: the sides agree
        route = delivery_route(ev, names)
        assert route is not None
        y = log2_latency(ev["fields"]["delay"])
        iv = model.interval(route)
        if iv is not None and route == "lab/edge|slow":
            expected["above" if y > iv[1] else ("below" if y < iv[0] else "inside")] += 1
        model.update(route, y)
    assert book.counts["lab/edge|slow"] == expected and expected["above"] > 0 and expected["below"] > 0
    _t, lat, lo, hi, side = pts[-1]
    assert lo is not None and hi is not None and lo <= hi
    assert side == ("above" if lat > hi else ("below" if lat < lo else "inside"))
    v = book.view(most=1, points=10)
    assert v["level"] == 0.9 and len(v["routes"]) == 1 and len(v["routes"][0]["points"]) == 10
    assert v["routes"][0]["route"] == "lab/edge|fast"          # the most recently active route first
