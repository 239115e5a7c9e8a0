"""Fuzzing the ingest path: structurally valid and invalid payloads, straight into
:meth:`IngestProcessor.process` (what the MQTT worker calls).  No crash, no stall (a per-message
deadline), every event either archived or quarantined (or a counted duplicate), and the outcome
agrees with the declaration (:func:`mailpulse.payload.check_event`).

A few hundred messages by default; ``MAILPULSE_SOAK=1`` runs at least a million events and prints
the count and the time.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import SOAK
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailpulse.collector.archive import ArchiveWriter, closed_segments, read_segment, read_valid_events
from mailpulse.collector.ingest import Dedup, IngestProcessor, Message

from mailpulse import payload as P
from mailpulse import topics as T

EVENTS_PER_MESSAGE = 20
EXAMPLES = 2_000 if SOAK else 150            # per round; the soak runs rounds until a million events
#: Each generated message is also sent this many times with fresh event ids (every copy is
#: validated, judged, de-duplicated and archived or quarantined like the original): the soak's
#: million events without a million hypothesis draws, which cost far more than the ingest.
COPIES = 60 if SOAK else 2
TOPIC = T.NodeTopics("lab", "node-a")

# -- structurally valid events -------------------------------------------------------------------

text = st.text(max_size=24)
code = st.text(st.characters(codec="utf-8"), max_size=8)
seconds = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
count = st.integers(0, 1 << 40)
iso = st.integers(0, (1 << 32) - 1).map(lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))
hop = st.fixed_dictionaries({}, optional={"from": st.none() | text, "by": st.none() | text,
                                          "delay_s": st.none() | seconds, "timestamp": st.none() | iso})
json_leaf = st.none() | st.booleans() | st.integers(-(1 << 62), 1 << 62) | seconds | text
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(code, c, max_size=3),
                          max_leaves=6)
fields = {
    "delivery": st.fixed_dictionaries({}, optional={
        "host": text, "to": text, "status": code, "relay": st.none() | text, "delay": st.none() | seconds,
        "delays": st.none() | st.lists(st.none() | seconds, min_size=4, max_size=4), "dsn": st.none() | code,
        "size": st.none() | count}),
    "message": st.fixed_dictionaries({}, optional={
        "key": text, "size": count, "hops": st.lists(hop, max_size=3), "mime": json_value,
        "mailbox_delay_s": st.none() | seconds}),
    "probe": st.fixed_dictionaries({}, optional={
        "route": code, "outcome": code, "sent_ms": count, "latency_ms": st.none() | seconds,
        "hops": st.lists(hop, max_size=3), "integrity": json_value, "error": st.none() | text}),
}


@st.composite
def valid_event(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(fields)))
    ev = {"schema": 1, "kind": kind, "id": f"{draw(st.integers(0, 1 << 64)):x}", "node": "node-a",
          "ts": draw(st.none() | iso), "fields": draw(fields[kind]),
          "x": draw(st.lists(st.integers(-32768, 32767), min_size=1, max_size=8))}
    ev.update(draw(st.fixed_dictionaries({}, optional={"score": st.integers(0, 1 << 30), "anomaly": st.booleans(),
                                                       "argmax": st.integers(0, 7)})))
    return ev


# -- structurally invalid ones: a valid event with one thing broken ------------------------------

hostile: st.SearchStrategy[Any] = (st.sampled_from([float("nan"), float("inf"), -float("inf"), "yesterday", "",
                            "x" * (P.MAX_TEXT + 1), 1 << 70, -1, True, [], {}, [[[[[[[[[[]]]]]]]]]], None, "NaN",
                            1e308, "\udc80",
                            "2026-11-26T10:00:00", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59+00:00"])
           | json_value)


@st.composite
def mutated_event(draw: Any) -> Any:
    ev = draw(valid_event())
    how = draw(st.sampled_from(["set", "drop", "add", "field", "replace"]))
    if how == "set":
        ev[draw(st.sampled_from(sorted(ev)))] = draw(hostile)
    elif how == "drop":
        ev.pop(draw(st.sampled_from(sorted(ev))))
    elif how == "add":
        ev[draw(code)] = draw(hostile)
    elif how == "field":
        f = ev["fields"] if isinstance(ev["fields"], dict) else {}
        f[draw(st.sampled_from(["host", "status", "size", "delay", "delays", "hops", "mime", "route", "latency_ms",
                                "integrity", "extra"]))] = draw(hostile)
        ev["fields"] = f
    else:
        return draw(hostile)
    return ev


def encode(events: list[Any]) -> bytes:
    return json.dumps({"schema": 1, "site": "lab", "node": "node-a", "events": events}).encode()


class Tally:
    def __init__(self) -> None:
        self.events = self.messages = self.accepted = self.quarantined = self.duplicates = self.copies = 0
        self.started = time.monotonic()
        self.slowest = 0.0


def check_message(proc: IngestProcessor, tally: Tally, events: list[Any], raw: bytes | None = None) -> None:
    payload = raw if raw is not None else encode(events)
    t = time.monotonic()
    batch = proc.process([Message(TOPIC.events, payload, time.time(), qos=1)])
    took = time.monotonic() - t
    tally.slowest = max(tally.slowest, took)
    assert took < 5.0, f"one message took {took:.1f} s"
    assert "internal" not in {r for *_, r in batch.quarantined}, batch.quarantined
    tally.messages += 1
    tally.accepted += len(batch.events)
    tally.duplicates += batch.duplicates
    tally.quarantined += len(batch.quarantined)
    if raw is not None:                              # bytes that are (almost surely) not a batch: one record
        assert batch.events or len(batch.quarantined) == 1
        return
    tally.events += len(events)
    decoded = json.loads(payload)["events"]          # what the collector parsed (NaN, -0.0, ... as JSON gives them)
    expect_ok = [P.check_event(e) is None and e["node"] == "node-a" for e in decoded]
    assert len(batch.events) + len(batch.quarantined) + batch.duplicates == len(events)
    assert len(batch.events) + batch.duplicates == sum(expect_ok)
    for ev in batch.events:
        assert P.check_event(ev) is None and math.isfinite(ev["t"]) and ev["clock"] in ("ok", "future", "skewed",
                                                                                       "missing", "corrected")


def run_fuzz(tmp_path: Path, examples: int) -> Tally:
    arch = ArchiveWriter(tmp_path / "archive", fsync=False, max_bytes=256 << 20)
    proc = IngestProcessor(arch, Dedup(5_000_000))
    tally = Tally()

    @settings(max_examples=examples, deadline=timedelta(seconds=10), database=None, derandomize=not SOAK,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(valid_event() | mutated_event(), min_size=1, max_size=EVENTS_PER_MESSAGE),
           st.binary(max_size=64) | st.none())
    def one(events: list[Any], junk: bytes | None) -> None:
        check_message(proc, tally, events)             # as generated: the same ids recur (duplicates)
        for _ in range(COPIES):
            tally.copies += 1
            check_message(proc, tally, [dict(e, id=f"{e['id']}-{tally.copies}") if isinstance(e, dict) and
                                        isinstance(e.get("id"), str) else e for e in events])
        if junk is not None:
            check_message(proc, tally, [], raw=junk + encode(events)[: len(junk)])

    one()
    while SOAK and tally.events < 1_000_000:
        one()
    proc.close()
    archived = sum(1 for seg in closed_segments(arch.folder) for _ in read_segment(seg))
    quarantined = sum(1 for seg in closed_segments(arch.folder / "quarantine") for _ in read_segment(seg))
    assert archived == tally.accepted and quarantined == tally.quarantined
    skipped: Any = __import__("collections").Counter()
    assert sum(1 for _ in read_valid_events(arch.folder, skipped)) == archived and not skipped
    return tally


def test_ingest_fuzz(tmp_path: Path) -> None:
    tally = run_fuzz(tmp_path, EXAMPLES)
    took = time.monotonic() - tally.started
    print(f"fuzz: {tally.events} events in {tally.messages} messages, {took:.0f} s: {tally.accepted} archived, "
          f"{tally.quarantined} quarantined, {tally.duplicates} duplicates, slowest message {tally.slowest:.3f} s")
    assert tally.accepted and tally.quarantined
    if SOAK:
        assert tally.events >= 1_000_000, tally.events
