"""The payload declaration's cost, on one core, as ratios in one run.

1. Collector ingest (:meth:`IngestProcessor.process`: parse, validate every event against
   :mod:`mailpulse.payload`, judge its time, de-duplicate, encode and write the archive; fsync off,
   the CPU cost only) on batches of realistic delivery and message events, against the same path
   with the validation replaced by a no-op - the alternative being "trust the nodes".
2. Validation alone (:func:`mailpulse.payload.check_event`) in events/s.
3. The node's publishing encoder: :meth:`DeliveryEvent.payload_json` (the hot path, hand-written,
   checked against the declaration by ``tests/test_payload.py``) against encoding
   :meth:`Event.payload` with ``json`` - the node does not validate (it builds what it declares).

Prints events/s (process CPU time, the machine may be shared) and the ratios.
Usage: ``python bench/bench_payload.py [--events 200000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailpulse.collector import ingest as I
from mailpulse.collector.archive import ArchiveWriter
from mailpulse.pi_firmware.events import DeliveryEvent, dumps

from mailpulse import payload as P
from mailpulse import topics as T


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def delivery(i: int, t: float) -> dict[str, Any]:
    return {"schema": 1, "kind": "delivery", "id": f"{i:032x}", "node": "n1", "ts": _iso(t),
            "fields": {"host": "edge1", "queue_id": f"4Q{i:08X}", "agent": "smtp", "to": f"user{i % 997}@example.net",
                       "status": "sent" if i % 20 else "deferred", "relay": "mx.example.net[192.0.2.7]:25",
                       "delay": 0.42, "delays": [0.01, 0.0, 0.2, 0.21], "dsn": "2.0.0",
                       "from": "alerts@example.org", "size": 10240 + i % 5000, "nrcpt": 1,
                       "message_id": f"<{i}@example.org>"},
            "x": [9000, 1200, 7000, 7100, 13600, 0, 1024, -32768], "score": 120, "anomaly": i % 100 == 0, "argmax": 2,
            "argmax_feature": "delay_connect_ms"}


def message(i: int, t: float) -> dict[str, Any]:
    return {"schema": 1, "kind": "message", "id": f"m{i:031x}", "node": "n1", "ts": _iso(t),
            "fields": {"key": f"{int(t)}.M{i}P1.host", "message_id": f"<{i}@example.org>", "size": 5_000_123,
                       "recipients": 1,
                       "hops": [{"from": "a.example.org", "by": "relay1.example.net", "with": "ESMTPS", "id": "abc",
                                 "for": "u@example.net", "ip": "192.0.2.1", "timestamp": _iso(t - 2), "delay_s": 1.0},
                                {"from": "relay1.example.net", "by": "mx.example.net", "with": "ESMTPS", "id": "def",
                                 "for": None, "ip": "192.0.2.2", "timestamp": _iso(t - 1), "delay_s": None}],
                       "mime": {"depth": 2, "parts": 4, "leaf_parts": 3, "multiparts": 1, "messages": 0,
                                "attachments": 1, "total_size": 5_000_123, "body_bytes": 4_900_000, "defects": 0,
                                "content_types": {"image/jpeg": 1, "text/html": 1, "text/plain": 1},
                                "images": [{"path": "1.3", "content_type": "image/jpeg", "bytes": 4_800_000,
                                            "format": "JPEG", "width": 3840, "height": 2160, "pixels": 8_294_400,
                                            "decoded": True, "error": None}], "limits": []},
                       "mailbox_delay_s": 0.3},
            "x": [11000, 10000, -32768, -32768, 22000, 0, 1024, 23000], "score": 80, "anomaly": False}


def cpu_rate(n: int, fn: Callable[[], None]) -> float:
    t = time.process_time()
    fn()
    return n / max(time.process_time() - t, 1e-9)


def ingest_rate(events: list[dict[str, Any]], validate: bool, folder: Path) -> float:
    topic = T.NodeTopics("lab", "n1").events
    now = time.time()
    msgs = [I.Message(topic, json.dumps({"schema": 1, "site": "lab", "node": "n1",
                                         "events": events[i:i + 200]}).encode(), now, qos=1)
            for i in range(0, len(events), 200)]
    proc = I.IngestProcessor(ArchiveWriter(folder, fsync=False, max_bytes=1 << 30), I.Dedup(len(events) + 1))
    saved = I.P.check_event
    if not validate:
        I.P.check_event = lambda ev: None if isinstance(ev, dict) else P.Problem("not_object", "")  # type: ignore
    try:
        def run() -> None:
            for k in range(0, len(msgs), 16):
                proc.process(msgs[k:k + 16])
        rate = cpu_rate(len(events), run)
    finally:
        I.P.check_event = saved
        proc.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    n = args.events
    t0 = time.time() - 3600
    for name, make in (("delivery", delivery), ("message", message)):
        evs = [make(i, t0 + i * 0.01) for i in range(n)]
        check = cpu_rate(n, lambda evs=evs: [P.check_event(e) for e in evs] and None)  # type: ignore[misc]
        with tempfile.TemporaryDirectory() as d:
            on = ingest_rate([dict(e) for e in evs], True, Path(d) / "on")
            off = ingest_rate([dict(e) for e in evs], False, Path(d) / "off")
        print(f"{name:8s}: validation alone {check:9.0f} events/s; ingest with validation {on:8.0f} events/s, "
              f"without {off:8.0f} events/s (ratio {on / off:.2f})")
    # the node's encoder: hand-written fast path vs json of the payload dict
    evs2 = [DeliveryEvent(t0 + i, "n1", "edge1", f"4Q{i:08X}", "smtp", f"user{i % 997}@example.net",
                          "sent", "mx.example.net[192.0.2.7]:25", 0.42, (0.01, 0.0, 0.2, 0.21), "2.0.0",
                          "alerts@example.org", 10240, 1, f"<{i}@example.org>", "Nov 26 10:00:00",
                          f"line {i}") for i in range(n)]
    for e in evs2:
        e.vector()
    fast = cpu_rate(n, lambda: [e.payload_json() for e in evs2] and None)  # type: ignore[func-returns-value]
    slow = cpu_rate(n, lambda: [dumps(e.payload()) for e in evs2] and None)  # type: ignore[func-returns-value]
    print(f"node encoder: payload_json {fast:9.0f} events/s, json of payload() {slow:9.0f} events/s "
          f"(ratio {fast / slow:.2f})")


if __name__ == "__main__":
    main()
