"""The payload declaration (:mod:`mailpulse.payload`) against what the node really sends: the fast
delivery encoder, message and probe events, the batch envelope and the status document validate,
and carry no key the declaration does not name; ``docs/mqtt.md`` shows the current tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mailpulse.pi_firmware.events import DeliveryEvent, Scored, dumps
from mailpulse.pi_firmware.maildir import analyse
from mailpulse.pi_firmware.mqtt import MqttSink, batch_payload
from mailpulse.pi_firmware.pipeline import ListSink
from mailpulse.pi_firmware.probe import ProbeEvent
from mailpulse.pi_firmware.replay import replay
from mailpulse.pi_firmware.spool import Spool
from mailpulse.pi_firmware.synthlog import generate
from pydantic import BaseModel

from mailpulse import payload as P
from mailpulse.config.node import MqttSettings

ROOT = Path(__file__).resolve().parent.parent


def undeclared(m: Any, where: str = "") -> list[str]:
    """Keys a model accepted as open extras (a node must not send any the declaration lacks)."""
    out: list[str] = []
    if isinstance(m, BaseModel):
        out += [f"{where}.{k}" for k in (m.model_extra or {})]
        for name in type(m).model_fields:
            out += undeclared(getattr(m, name), f"{where}.{name}")
    elif isinstance(m, list):
        for i, x in enumerate(m):
            out += undeclared(x, f"{where}[{i}]")
    return out


def validate_node_event(data: bytes) -> None:
    doc = json.loads(data.decode("utf-8"))
    assert P.check_event(doc) is None, (P.check_event(doc), doc)
    model = P.event_model(doc["kind"]).model_validate(doc)
    assert not undeclared(model), undeclared(model)


def test_the_nodes_delivery_encoder_matches_the_declaration(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(generate(4000, seed=5, rfc3339=True)))
    sink = ListSink()
    replay(log, sink, year=2026)
    odd = [
        DeliveryEvent(1.5, "n-1", "h\u00e9", "4ABC", "smtp", 'q"uo\\te@x', "sent", "r\u2028[1]", 0.25,
                      (0.0, 1e-7, 3.0, 12345.678), "2.0.0", "s\udcff@x", 10, 1, "<m\tid>", "Nov  1 00:00:00",
                      "line \udcfe text", 2),
        DeliveryEvent(math.inf, "n", "h", "Q", "error", "", "bounced", None, math.inf, (math.nan, 0.0, 0.0, 0.0),
                      None),
        DeliveryEvent(0.0, "n", "h", "Q", "virtual", "v@x", "deferred"),
    ]
    odd[0].scored = Scored(7, True, 3)
    odd[1].scored = Scored(0, False, 99)
    assert len(sink.items) > 400
    for e in [*sink.items, *odd]:
        validate_node_event(e.payload_json())


def test_message_and_probe_events_match_the_declaration() -> None:
    for f in sorted((ROOT / "data" / "mail").glob("*.eml")):
        ev, _ = analyse(f.read_bytes(), key=f.name, node="node-a", ts=1_790_000_000.0)
        validate_node_event(dumps(ev.payload()))
    hops: list[dict[str, Any]] = [{"from": "node-a.lan", "by": "edge.mailpulse.test", "with": "ESMTP", "id": "ABC", "for": "p@x",
             "ip": "10.0.0.1", "timestamp": "2026-11-26T10:00:00.000Z", "delay_s": 0.4,
             "postfix": {"delay": 0.4, "delays": [0.1, 0, 0.1, 0.2]}},
            {"from": "edge.mailpulse.test", "by": "mx.mailpulse.test", "with": "ESMTP", "id": "DEF", "for": None,
             "ip": None, "timestamp": None, "delay_s": None}]
    for outcome in ("ok", "damaged", "lost", "late"):
        p = ProbeEvent(1_790_000_000.0, "node-a", route="lossy", probe_id="p1", outcome=outcome, sent_ms=1,
                       arrived_ms=None if outcome == "lost" else 812, latency_ms=None if outcome == "lost" else 811.0,
                       poll_interval_ms=200.0, size=5_000_000, image_pixels=8_294_400, hops=hops,
                       integrity={"structure_ok": True, "psnr_db": None, "intact": True, "structure": []},
                       supersedes="a" * 32 if outcome == "late" else None,
                       error="timeout" if outcome == "lost" else None)
        p.vector()
        validate_node_event(dumps(p.payload()))


def test_envelope_and_status_match_the_declaration(tmp_path: Path) -> None:
    e = DeliveryEvent(1.5, "node-a", "h", "Q", "smtp", "r@x", "sent")
    env = json.loads(batch_payload("lab", "node-a", [e.payload_json(), e.payload_json()]))
    assert P.check_envelope(env) is None and len(env["events"]) == 2
    extras: dict[str, Any] = {"heartbeat_s": 10.0, "model_version": "m-1", "fleet": {"node-b": {"alive": True}},
                              "routes": ["lossy"], "probe": None, "probes": {}, "probe_counts": {"ok": 3},
                              "errors": {}}
    spool = Spool(tmp_path / "spool.db")
    try:
        sink = MqttSink("lab", "node-a", MqttSettings(host="127.0.0.1"), spool, status=lambda: extras)
        status = json.loads(dumps(sink.status_payload()))
        offline = json.loads(sink._offline_payload())
    finally:
        spool.close()
    for doc in (status, offline):
        assert P.check_status(doc) is None, P.check_status(doc)
    assert P.check_status(dict(status, ts="yesterday")).reason == "status"   # type: ignore[union-attr]


def test_docs_mqtt_md_shows_the_current_tables() -> None:
    text = (ROOT / "docs" / "mqtt.md").read_text()
    start, end = "<!-- payload-tables: python -m mailpulse.payload -->\n", "<!-- /payload-tables -->"
    assert start in text and end in text, "docs/mqtt.md lacks the payload-tables markers"
    block = text.split(start, 1)[1].split(end, 1)[0]
    assert block == P.markdown(), "docs/mqtt.md is stale: paste `python -m mailpulse.payload` between the markers"
