"""Constructed event streams for the collector tests and benchmarks (a small relay topology)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

#: receiving relay -> intermediate relay -> sending hosts
TOPOLOGY = {
    "mx.example.net": {
        "relay1.example.net": ["a.example.org", "b.example.org"],
        "relay2.example.net": ["c.example.org", "d.example.org"],
        "relay3.example.net": ["e.example.org"],
    },
}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def routes() -> list[tuple[str, str, str]]:
    return [(mx, r, s) for mx, rs in TOPOLOGY.items() for r, ss in rs.items() for s in ss]


def message_event(i: int, t: float, route: tuple[str, str, str], anomalous: bool, delay: float,
                  node: str = "node-a", site: str = "lab") -> dict[str, Any]:
    mx, relay, sender = route
    return {
        "schema": 1, "kind": "message", "id": f"ev{i:08d}", "node": node, "site": site, "ts": _iso(t),
        "fields": {"hops": [{"from": sender, "by": relay, "delay_s": delay},
                            {"from": relay, "by": mx, "delay_s": None}]},
        "x": [int(delay * 100), 1, 2, 3, 4, 5, 6, 7], "score": 900 if anomalous else 10, "anomaly": anomalous,
    }


def stream(seconds: float, rate: float = 20.0, seed: int = 1, t0: float = 1_790_000_000.0,
           fault: str | None = None, fault_from: float = 0.0, fault_rate: float = 0.7,
           base_rate: float = 0.01, fault_until: float = float("inf"),
           nodes: tuple[str, ...] = ("node-b", "node-a")) -> Iterator[dict[str, Any]]:
    """``rate`` events/s over all routes; after ``fault_from`` s, mail through relay ``fault`` is slow.

    Event ``i`` is observed by ``nodes[i % len(nodes)]`` (give one node for events published on
    one node's topic: the collector refuses an event that names another node)."""
    rng = random.Random(seed)
    rs = routes()
    n = int(seconds * rate)
    for i in range(n):
        t = t0 + i / rate
        route = rs[rng.randrange(len(rs))]
        faulty = fault is not None and fault_from <= t - t0 < fault_until and fault in route
        anomalous = rng.random() < (fault_rate if faulty else base_rate)
        delay = rng.uniform(5, 9) if faulty and anomalous else rng.uniform(0.05, 0.3)
        yield message_event(i, t, route, anomalous, delay, node=nodes[i % len(nodes)])
