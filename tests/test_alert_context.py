"""Alerts with context: the relay by its configured name, the evidence in words, example deliveries
with their hops, a link built from the dashboard's public URL, and an incident id the dashboard
serves (``/api/incidents/<id>``)."""

from __future__ import annotations

import json
import re
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from collector_synth import stream
from mailpulse.collector.alertctx import AlertContext, duration, seconds
from mailpulse.collector.alerts import compose_alert
from mailpulse.collector.delivery import alertmanager_payload
from mailpulse.collector.ingest import Message
from mailpulse.collector.relays import RelayNames
from mailpulse.collector.service import Collector

from mailpulse import topics as T
from mailpulse.config.collector import AlertSettings, WebSettings, parse_config
from mailpulse.lab.webclient import WebClient


def delivery(i: int, relay: str = "127.0.0.1[127.0.0.1]:47627", delay: float = 41.0) -> dict[str, Any]:
    return {"id": f"d{i}", "kind": "delivery", "site": "lab", "node": "node-a", "t": 1_796_400_000.0 + i,
            "fields": {"host": "edge", "relay": relay, "to": f"user{i}@Example.COM", "status": "deferred",
                       "dsn": "4.4.2", "delay": delay}}


def incident(**evidence: Any) -> dict[str, Any]:
    e = {"window_s": 300.0, "events": 29, "anomalies": 23, "anomaly_rate": 0.7931, "history_rate": 0.02,
         "latency_p90_s": 41.2, "history_latency_p90_s": 0.4, "example_event_ids": ["d1", "d2", "gone"]}
    e.update(evidence)
    return {"id": "3fa2c9e01b7d", "root_cause": "127.0.0.1:47627", "path": ["*", "127.0.0.1:47627"],
            "severity": "critical", "state": "open", "opened": 1_796_400_100.0, "updated": 1_796_400_100.0,
            "resolved": None, "affected_nodes": ["lab/node-a"], "affected_routes": [], "evidence": e}


def test_words_for_numbers() -> None:
    assert [seconds(v) for v in (0.35, 0.4, 4.24, 41.2, 250.0)] == ["0.35 s", "0.4 s", "4.2 s", "41 s", "250 s"]
    assert [duration(v) for v in (45, 60, 300, 3600, 7200, 90)] == ["45 s", "1 min", "5 min", "hour", "2 h", "90 s"]


def test_delivery_incident_in_words_with_examples_and_link() -> None:
    ctx = AlertContext(RelayNames({"127.0.0.1:47627": "relay2"}), "https://mailpulse.example.net/ops", 3600.0)
    for i in (1, 2, 3):
        ctx.remember(delivery(i))
    c = ctx.describe(incident())
    assert c["evidence"] == ("deliveries through relay2 took p90 41 s in the last 5 min against 0.4 s in the "
                             "previous hour; 23 of 29 anomalous (79%, against 2% before)")
    assert c["relay"] == "relay2" and c["path"] == "relay2" and c["incident"] == "3fa2c9e01b7d"
    assert c["link"] == "https://mailpulse.example.net/ops/#incident=3fa2c9e01b7d"
    # the example still remembered are shown, the forgotten one is left out
    assert [x["id"] for x in c["examples"]] == ["d1", "d2"]
    assert c["example_lines"][0] == ("2026-12-04 16:00:01 UTC lab/node-a delivery to example.com deferred (4.4.2) "
                                     "took 41 s: edge -> relay2 [d1]")
    # the mail: relay and id in the subject, the sentence, the examples and the link in both parts
    msg = compose_alert("opened", {**incident(), "context": c}, "c@example.net", ["ops@example.net"], [0.1, 0.9])
    assert msg["Subject"] == "[mailpulse] OPEN: critical incident at relay2 (incident 3fa2c9e01b7d)"
    text, html = _bodies(msg)
    for part in (text, html):
        assert "deliveries through relay2 took p90 41 s" in part
        assert "edge -&gt; relay2" in part or "edge -> relay2" in part
        assert "https://mailpulse.example.net/ops/#incident=3fa2c9e01b7d" in part
    # the webhook: relay label, the sentence as description, the link as generator URL
    hook = alertmanager_payload("opened", {**incident(), "context": c}, external_url="http://127.0.0.1:1/")
    [alert] = hook["alerts"]
    assert alert["labels"]["relay"] == "relay2" and alert["labels"]["incident"] == "3fa2c9e01b7d"
    assert alert["annotations"]["description"] == c["evidence"]
    assert alert["generatorURL"] == c["link"] and "edge -> relay2" in alert["annotations"]["examples"]


def test_other_evidence_shapes() -> None:
    ctx = AlertContext(RelayNames({"mx.example.net:25": "mx"}), "", 1800.0)
    hop = incident(latency_p90_s=None, history_latency_p90_s=None, hop_delay_p50_s=7.2, history_hop_delay_p90_s=0.3,
                   window_s=60.0)
    hop["path"] = ["*", "mx.example.net"]
    c = ctx.describe(hop)
    assert c["evidence"] == ("mails through mx waited a median 7.2 s at mx in the last 1 min (p90 0.3 s in the "
                             "previous 30 min); 23 of 29 anomalous (79%, against 2% before)")
    assert c["link"] == "" and c["examples"] == []
    bare = incident(latency_p90_s=None, history_latency_p90_s=None)
    bare["path"] = ["*"]
    assert ctx.describe(bare)["evidence"] == ("23 of 29 mails at the whole site in the last 5 min were anomalous "
                                              "(79%, against 2% in the previous 30 min)")


def test_hostile_events_give_bounded_examples() -> None:
    ctx = AlertContext(RelayNames(), "http://x/", capacity=3)
    big = {"id": "h1", "kind": "probe", "site": "lab", "node": "n" * 5000, "t": "soon",
           "fields": {"hops": [{"by": "b" * 9000, "from": None, "delay_s": "NaN"}] * 500 + ["junk", 5],
                      "latency_ms": True, "outcome": ["x"]}}
    ctx.remember(big)
    ctx.remember({"id": "h2", "kind": "delivery", "fields": "oops"})
    for i in range(10):
        ctx.remember(delivery(i))
    assert len(ctx._events) == 3                 # bounded
    ctx2 = AlertContext(RelayNames(), "http://x/")
    ctx2.remember(big)
    [x] = ctx2.describe(incident(example_event_ids=["h1"]))["examples"]
    assert len(x["hops"]) <= 12 and all(len(h) <= 220 for h in x["hops"]) and len(x["node"]) <= 200
    assert x["delay_s"] is None and x["t"] is None


def _bodies(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_collector_alert_from_events_names_the_relay_and_the_dashboard_finds_the_incident(tmp_path: Path) -> None:
    cfg, errors = parse_config({"archive": {"dir": str(tmp_path / "archive"), "fsync": False},
                                "correlate": {"history_s": 600.0}, "web": {"enabled": False},
                                "relays": {"names": {"relay2.example.net": "relay2", "mx.example.net:25": "mx"}}},
                               "test")
    assert cfg is not None, errors
    cfg.web = WebSettings(port=0, tls=False, password="pw-dash")      # behind a TLS proxy: plain HTTP, auth on
    cfg.alerts = AlertSettings(to=["ops@example.net"], dashboard_url="https://mailpulse.example.net/")
    sent: list[EmailMessage] = []
    col = Collector(cfg, send=sent.append)
    assert col.web is not None
    col.web.start()
    try:
        evs = list(stream(900, seed=7, t0=time.time() - 900, fault="relay2.example.net", fault_from=600,
                          nodes=("node-a",)))
        topic = T.NodeTopics("lab", "node-a").events
        for i in range(0, len(evs), 500):
            body = json.dumps({"schema": 1, "site": "lab", "node": "node-a", "events": evs[i:i + 500]}).encode()
            col.on_batch(col.processor.process([Message(topic, body, time.time(), qos=1)]))
        for _ in range(20):
            if col.correlator.open_by_path:
                break
            col.evaluate()
        assert col.correlator.open_by_path and sent, "no incident / no alert"
        msg = sent[0]
        [iid] = list(col.correlator.open_by_path.values())
        assert msg["Subject"] == f"[mailpulse] OPEN: {col.correlator.incidents[iid].severity} incident at relay2 " \
                                 f"(incident {iid})"
        text, html = _bodies(msg)
        assert re.search(r"What: messages through relay2 took p90 [\d.]+ s in the last 1 min against [\d.]+ s in the "
                         r"previous 10 min; \d+ of \d+ anomalous \(\d+%, against \d+% before\)", text), text
        assert re.search(r"UTC lab/node-a message: [a-z.]+ -> relay2 \([\d.]+ s\) -> mx \[ev\d+\]", text), text
        link = f"https://mailpulse.example.net/#incident={iid}"
        assert link in text and link in html
        # the id in the link is what the dashboard serves
        web = WebClient(col.web.url, None, "mailpulse", "pw-dash")
        served = json.loads(web.get(f"api/incidents/{iid}"))
        assert served["id"] == iid and served["context"]["relay"] == "relay2"
        assert served["context"]["link"] == link
        assert web.request("api/incidents/no-such-id")[0] == 404
        assert WebClient(col.web.url).request(f"api/incidents/{iid}")[0] == 401     # not without the credential
    finally:
        col.web.stop()
