"""Archives for the Flink job's tests: several concurrent faults, and a two-shard fleet.

Both are written with the collector's own :class:`ArchiveWriter` (segments rotated by size, named
by a clock that follows the events), with events a little out of order (as batches from many
nodes arrive), probe routes, and more than 64 anomalous nodes per relay and bucket (the bounded
node lists of the correlator's buckets).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector_synth import message_event
from mailpulse.collector.archive import ArchiveWriter

T0 = 1_790_000_000.0

#: receiving relay -> intermediate relays -> senders (two MX, shared senders)
TOPOLOGY = {
    "mx1.example.net": {"r1.example.net": ["a.example.org", "b.example.org"], "r2.example.net": ["c.example.org"],
                        "r3.example.net": ["d.example.org", "e.example.org"]},
    "mx2.example.net": {"r4.example.net": ["a.example.org", "f.example.org"], "r5.example.net": ["g.example.org"]},
}
ROUTES = [(mx, r, s) for mx, rs in TOPOLOGY.items() for r, ss in rs.items() for s in ss]


def _events(seconds: float, rate: float, nodes: list[tuple[str, str]], faults: list[tuple[str, float, float]],
            seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(int(seconds * rate)):
        t = T0 + i / rate
        route = ROUTES[rng.randrange(len(ROUTES))]
        faulty = any(f in route and a <= t - T0 < b for f, a, b in faults)
        anomalous = rng.random() < (0.7 if faulty else 0.01)
        delay = rng.uniform(5, 9) if faulty and anomalous else rng.uniform(0.05, 0.3)
        site, node = nodes[rng.randrange(len(nodes))]
        ev = message_event(i, t, route, anomalous, delay, node=node, site=site)
        if i % 5 == 0:   # a probe, with its route
            ev["kind"] = "probe"
            ev["fields"]["route"] = f"{site}-to-{route[2]}"
            ev["fields"]["latency_ms"] = round(delay * 1000)
        ev["received"] = round(t + rng.uniform(0.1, 2.0), 3)
        yield ev


def _shuffle_locally(evs: list[dict[str, Any]], seed: int, span: int = 40) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(0, len(evs) - span, 3):
        j = i + rng.randrange(span)
        evs[i], evs[j] = evs[j], evs[i]
    return evs


def _write(folder: Path, evs: list[dict[str, Any]], batch: int = 60, max_bytes: int = 96 << 10) -> None:
    clock = {"t": T0}
    with ArchiveWriter(folder, max_bytes=max_bytes, fsync=False, clock=lambda: clock["t"]) as w:
        for i in range(0, len(evs), batch):
            clock["t"] = max(e["received"] for e in evs[i:i + batch])
            w.write(evs[i:i + batch])


def concurrent_faults(folder: Path, seconds: float = 1500.0) -> int:
    """Three overlapping faults (a relay, a sender, a whole MX) in one archive; returns the event count."""
    nodes = [("lab", f"n{i:03d}") for i in range(90)]
    faults: list[tuple[str, float, float]] = [
        ("r1.example.net", 600, 900), ("g.example.org", 700, 1100), ("mx1.example.net", 1200, 1400)]
    evs = _shuffle_locally(list(_events(seconds, 24.0, nodes, faults, seed=11)), seed=12)
    _write(folder, evs)
    return len(evs)


def two_shards(folders: tuple[Path, Path], seconds: float = 900.0) -> int:
    """A fleet of 2 x 64 nodes in two data centres, each with its own collector shard, sharing the
    relays; a relay fault seen from both.  Returns the event count."""
    nodes = [(f"dc{d}", f"n{i:03d}") for d in (1, 2) for i in range(64)]
    evs = list(_events(seconds, 30.0, nodes, [("r4.example.net", 500, 800)], seed=21))
    for d, folder in zip((1, 2), folders):
        _write(folder, _shuffle_locally([e for e in evs if e["site"] == f"dc{d}"], seed=d), max_bytes=64 << 10)
    return len(evs)


#: ``[relays] names`` of :func:`slow_relay_deliveries`: the relays Postfix knows by address
DELIVERY_RELAYS = {"10.0.0.1:2525": "fast.example.net", "10.0.0.2:2526": "slow.example.net",
                   "10.0.0.3:25": "mx.example.net"}


def slow_relay_deliveries(folder: Path, seconds: float = 900.0, rate: float = 8.0,
                          node_flags: bool = False) -> dict[str, str]:
    """Postfix deliveries of 3 nodes through three relays known by address (:data:`DELIVERY_RELAYS`
    names them); the relay ``10.0.0.2:2526`` holds its mail (5-9 s, most of it anomalous) from 500 s to
    700 s.  Latencies at Postfix's 10 ms resolution, a little out of order.  Returns the names.

    ``node_flags``: every delivery also carries a node core's ``below``/``above`` flags (above for a
    held delivery, else now and then either), not the collector's tracker's sides."""
    rng = random.Random(31)
    flags = random.Random(33)
    relays = sorted(DELIVERY_RELAYS)
    evs = []
    for i in range(int(seconds * rate)):
        t = T0 + i / rate
        relay = relays[rng.randrange(len(relays))]
        host, port = relay.split(":")
        faulty = relay.startswith("10.0.0.2:") and 500 <= t - T0 < 700
        anomalous = rng.random() < (0.7 if faulty else 0.01)
        delay = rng.uniform(5, 9) if faulty and anomalous else 0.2 * rng.lognormvariate(0, 0.4)
        ev = message_event(i, t, ("", "", ""), anomalous, round(delay, 2), node=f"n{rng.randrange(3):02d}")
        ev["kind"] = "delivery"
        ev["fields"] = {"host": "edge", "relay": f"{host}[{host}]:{port}", "status": "sent", "delay": round(delay, 2)}
        ev["received"] = round(t + rng.uniform(0.1, 2.0), 3)
        if node_flags:
            ev["above"] = delay > 4 or flags.random() < 0.05
            ev["below"] = not ev["above"] and flags.random() < 0.05
        evs.append(ev)
    _write(folder, _shuffle_locally(evs, seed=32))
    return dict(DELIVERY_RELAYS)
