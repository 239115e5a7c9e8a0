"""Per-route adaptive-conformal intervals (:mod:`mailpulse.collector.intervals`): the interval covers
about 1 - alpha of the deliveries of each route, also when a route's latency level shifts."""

from __future__ import annotations

import random

from mailpulse.collector.intervals import RouteIntervals, coverage, delivery_route, log2_latency
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
