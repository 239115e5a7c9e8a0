"""The dashboard's SSE hub: a subscriber that falls behind loses no state (its queue is replaced by
one resync, which the writer turns into a fresh ``state`` snapshot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailpulse.collector.metrics import Metrics
from mailpulse.collector.web import RESYNC, DashboardServer, DashboardState, Hub
from server_fixtures import secure_web

from mailpulse.lab.webclient import WebClient


def _incident(i: int) -> dict[str, Any]:
    return {"id": f"inc-{i}", "state": "open", "updated": float(i), "severity": "major",
            "root_cause": "relay2.example.net", "path": ["relay2.example.net"]}


def test_full_queue_becomes_one_resync() -> None:
    hub = Hub(per_client=3)
    q = hub.subscribe()
    for i in range(3):
        hub.publish("anomaly", {"id": i})
    assert q.qsize() == 3 and hub.sent == 3
    hub.publish("incident", _incident(1))      # finds the queue full
    assert [q.get_nowait()] == [RESYNC] and q.empty()
    assert (hub.dropped, hub.resyncs) == (4, 1)
    hub.publish("anomaly", {"id": 9})          # later messages queue behind the resync
    assert json.loads(q.get_nowait()[1]) == {"id": 9}
    hub.unsubscribe(q)
    hub.publish("anomaly", {"id": 10})
    assert hub.clients == 0 and hub.sent == 4


def test_other_subscribers_keep_their_messages() -> None:
    hub = Hub(per_client=2)
    slow, fast = hub.subscribe(), hub.subscribe()
    hub.publish("stats", {"events": 1})
    fast.get_nowait()
    hub.publish("stats", {"events": 2})
    hub.publish("stats", {"events": 3})          # slow overflows, fast has room
    assert slow.get_nowait() == RESYNC
    assert [json.loads(fast.get_nowait()[1])["events"] for _ in range(2)] == [2, 3]


def _read_event(resp: Any) -> tuple[str, str]:
    event = data = ""
    while True:
        line = resp.readline().decode()
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: "):
            data = line[6:].strip()
        elif line == "\n" and event:
            return event, data


def test_writer_sends_a_fresh_snapshot_for_a_resync(tmp_path: Path) -> None:
    state, hub = DashboardState(), Hub(per_client=8)
    web, ca = secure_web(tmp_path)
    server = DashboardServer(state, hub, Metrics(), web)
    server.start()
    try:
        with WebClient.dashboard(server.url, web, ca).open("events", timeout=10) as resp:
            assert _read_event(resp)[0] == "state"
            assert hub.clients == 1
            # a change whose message was lost with the queue: the snapshot carries it
            state.set_incident(_incident(7))
            (q,) = list(hub._clients)
            q.put_nowait(RESYNC)
            event, data = _read_event(resp)
            assert event == "state"
            snap = json.loads(data)
            assert [i["id"] for i in snap["incidents"]] == ["inc-7"]
            assert snap["incidents"][0]["root_cause"] == "relay2.example.net"
            hub.publish("anomaly", {"id": "a-1"})
            assert _read_event(resp) == ("anomaly", '{"id":"a-1"}')
    finally:
        server.stop()
