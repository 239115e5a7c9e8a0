"""Time you can trust: one event from the future cannot resolve an open
incident, a node whose clock runs minutes fast is flagged skewed and kept out of the correlation,
and the watermark cannot be pushed forward by one node.

A simulated timeline: messages carry the collector's receive time (what paho's callback stamps),
so twenty minutes of a fleet run in seconds through :class:`IngestProcessor` and
:meth:`Collector.on_batch`, with :meth:`Collector.evaluate` once per simulated second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector_synth import stream
from mailpulse.collector.clock import ClockBook, Watermark
from mailpulse.collector.correlate import Change
from mailpulse.collector.ingest import Message
from mailpulse.collector.service import Collector
from test_collector_hostile import collector, samples

from mailpulse import topics as T

T0 = 1_790_000_000.0
FAULT = "relay2.example.net"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def batches(seconds: float, fault_from: float) -> Iterator[tuple[float, dict[str, list[dict[str, Any]]]]]:
    """(receive time, node -> events) once per simulated second; events are 0.5 s old when they arrive."""
    evs = stream(seconds, seed=7, t0=T0, fault=FAULT, fault_from=fault_from)
    cur: dict[str, list[dict[str, Any]]] = {}
    sec = 0
    for e in evs:
        t = T0 + int(e["id"][2:]) / 20.0
        while t >= T0 + sec + 1:
            yield T0 + sec + 1.5, cur
            cur, sec = {}, sec + 1
        e.pop("site", None)
        cur.setdefault(e["node"], []).append(e)
    yield T0 + sec + 1.5, cur


def msg(node: str, events: list[dict[str, Any]], received: float) -> Message:
    body = json.dumps({"schema": 1, "site": "lab", "node": node, "events": events}).encode()
    return Message(T.NodeTopics("lab", node).events, body, received, qos=1)


def status(node: str, ts: float, received: float) -> Message:
    body = json.dumps({"schema": 1, "site": "lab", "node": node, "state": "online", "ts": ts, "heartbeat_s": 10.0})
    return Message(T.NodeTopics("lab", node).status, body.encode(), received, qos=1)


def run(col: Collector, seconds: float, fault_from: float, extra: Any = None) -> list[Change]:
    changes: list[Change] = []
    for r, per_node in batches(seconds, fault_from):
        msgs = [msg(n, evs, r) for n, evs in per_node.items()]
        if extra is not None:
            msgs += extra(r)
        col.on_batch(col.processor.process(msgs))
        changes += col.evaluate()
    return changes


def test_an_event_from_the_future_does_not_resolve_an_open_incident(tmp_path: Path) -> None:
    col = collector(tmp_path)
    rogue_at = T0 + 700.0

    def rogue(r: float) -> list[Message]:
        if rogue_at <= r < rogue_at + 1:     # one event stamped now + 280 s, once
            ev = next(iter(stream(1, seed=99, t0=r + 280, nodes=("node-b",))))
            ev.update(id="rogue", ts=iso(r + 280))
            return [msg("node-b", [ev], r)]
        return []

    changes = run(col, 1200, fault_from=600, extra=rogue)
    opened = [c for c in changes if c.kind == "opened"]
    assert len(opened) == 1 and FAULT in opened[0].incident["root_cause"], [c.incident["root_cause"] for c in opened]
    assert not [c for c in changes if c.kind == "resolved"], "the incident resolved while the relay kept failing"
    assert opened[0].incident["opened"] < rogue_at
    # the rogue event is archived, judged "skewed" (no delay explains 280 s ahead) and not correlated;
    # node-b itself is not skewed: one value does not make a clock
    v = col.clocks.view("lab", "node-b")
    assert v["skewed_events"] == 1 and not v["clock_skewed"]
    assert col.correlator.skipped_skewed == 1
    assert col.correlator.now <= T0 + 1201.5
    m = samples(col)
    assert m[("mailpulse_event_time_total", (("clock", "skewed"), ("node", "node-b"), ("site", "lab")))] == 1


def test_a_node_with_a_fast_clock_is_flagged_and_cannot_open_incidents(tmp_path: Path) -> None:
    col = collector(tmp_path)
    fast = 180.0        # node-c's clock runs three minutes ahead

    def node_c(r: float) -> list[Message]:
        # every second node-c reports anomalies through a relay nobody else uses, stamped with its clock
        evs = list(stream(1, seed=int(r), t0=r + fast - 0.5, fault="relay3.example.net", fault_rate=1.0,
                          nodes=("node-c",)))
        for i, e in enumerate(evs):
            e.update(id=f"c-{r}-{i}", anomaly=True)
            e["fields"]["hops"][0]["by"] = "relay9.example.net"
        out = [msg("node-c", evs, r)]
        if int(r) % 10 == 0:
            out.append(status("node-c", r + fast, r))
        return out

    changes = run(col, 400, fault_from=10_000, extra=node_c)   # no fault anywhere else
    assert not [c for c in changes if c.kind == "opened"], [c.incident["root_cause"] for c in changes]
    v = col.clocks.view("lab", "node-c")
    assert v["clock_skewed"] and abs(v["clock_offset_s"] - fast) < 1.0, v
    assert not col.clocks.is_skewed("lab", "node-a") and not col.clocks.is_skewed("lab", "node-b")
    assert col.correlator.skipped_skewed > 7000
    assert col.correlator.now <= T0 + 401.5, "node-c pushed correlation time forward"
    m = samples(col)
    assert m[("mailpulse_node_clock_skewed", (("node", "node-c"), ("site", "lab")))] == 1
    assert m[("mailpulse_node_clock_skewed", (("node", "node-a"), ("site", "lab")))] == 0
    assert abs(m[("mailpulse_node_clock_offset_seconds", (("node", "node-c"), ("site", "lab")))] - fast) < 1.0
    row = next(f for f in col.state.snapshot()["fleet"] if f["node"] == "node-c")
    assert row["clock_skewed"] is True and abs(row["clock_offset_s"] - fast) < 1.0


def test_events_alone_reveal_a_fast_clock_and_one_value_does_not() -> None:
    book = ClockBook(max_offset_s=30.0, max_future_s=10.0)
    for i in range(40):
        r = T0 + i
        book.judge("lab", "a", iso(r - 0.2 + (280.0 if i == 5 else 0.0)), r)   # one absurd value
        book.judge("lab", "b", iso(r + 120.0), r)                                # always 2 minutes ahead
    assert not book.is_skewed("lab", "a") and book.view("lab", "a")["skewed_events"] == 1
    assert book.is_skewed("lab", "b")
    # with heartbeats the offset is corrected: a node 20 s fast (not skewed) gets its times shifted back
    for i in range(5):
        book.heartbeat("lab", "c", T0 + i * 10 + 20.0, T0 + i * 10 + 0.01)
    t, how = book.judge("lab", "c", iso(T0 + 100.0), T0 + 80.5)
    assert how == "corrected" and abs(t - (T0 + 80.0)) < 0.05


def test_no_single_node_pushes_the_watermark() -> None:
    wm = Watermark(idle_s=30.0, max_lag_s=120.0)
    for i in range(10):
        wm.observe("a", T0 + i, T0 + i + 0.5)
        wm.observe("b", T0 + i, T0 + i + 0.5)
    assert wm.advance() == T0 + 9
    wm.observe("b", T0 + 500, T0 + 10)        # b claims a time far ahead
    assert wm.advance() == T0 + 9             # a has not got there
    for i in range(10, 60):                   # b goes silent: a alone moves it (b idles out after 30 s)
        wm.observe("a", T0 + i, T0 + i + 0.5)
    assert wm.advance() == T0 + 59
    wm.observe("c", T0 - 3600, T0 + 60)       # c replays an hour-old backlog: not held back beyond max_lag
    assert wm.advance() == T0 + 59
