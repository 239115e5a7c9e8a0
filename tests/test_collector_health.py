"""Self-health against a real Mosquitto: the collector is back within 2 s of
the broker returning from an outage, and the outage shows on ``/metrics``, the dashboard and as an
incident of its own; a node whose last status is old, or that stopped sending without its last
will, goes offline after three missed heartbeats."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mailpulse.collector.health import INGEST_CAUSE
from mailpulse.collector.service import Collector
from prometheus_client.parser import text_string_to_metric_families
from test_collector_ingest import _wait, collector_cfg, node_client, publish, web_client

from mailpulse import topics as T
from mailpulse.config.collector import HealthSettings
from mailpulse.lab.webclient import WebClient

pytestmark = pytest.mark.xdist_group("collector-mqtt")


def metrics(col: Collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` read with the read-only metrics credential (HTTPS)."""
    assert col.web is not None
    text = WebClient.metrics(col.web.url, col.cfg.web, Path(col.cfg.mqtt.ca_file or "")).metrics_text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def ticking(col: Collector, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(0.1):
            col.tick()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_broker_outage_reconnects_within_2_s_and_is_reported(broker: Any, tmp_path: Path) -> None:
    cfg = collector_cfg(broker, tmp_path)
    cfg.health = HealthSettings(ingest_stall_s=5.0)
    col = Collector(cfg)
    col.start()
    stop = threading.Event()
    ticker = ticking(col, stop)
    node = node_client(broker, "node-a")
    try:
        assert col.ingest.wait_connected()
        time.sleep(0.3)
        publish(node, T.NodeTopics("lab", "node-a").status, json.dumps(
            {"schema": 1, "site": "lab", "node": "node-a", "state": "online", "ts": time.time()}).encode())
        assert _wait(lambda: col.ingest.link.last_message is not None)
        m = metrics(col)
        assert m[("mailpulse_broker_connected", ())] == 1 and m[("mailpulse_broker_connection_losses_total", ())] == 0
        node.loop_stop()
        node.disconnect()
        broker.server.stop()
        down_at = time.monotonic()
        assert _wait(lambda: not col.ingest.link.connected, 10)
        # the outage is an incident of the collector's own, shown on the page and in /metrics
        assert _wait(lambda: col.health.incident is not None, 15)
        inc = col.health.incident
        assert inc is not None and inc["root_cause"] == INGEST_CAUSE and inc["severity"] == "critical"
        assert any(c.incident["root_cause"] == INGEST_CAUSE for c in col.changes if c.kind == "opened")
        status, snap = web_client(col).request("api/state")
        assert status == 200
        state = json.loads(snap)
        assert state["link"]["connected"] is False
        assert any(i["root_cause"] == INGEST_CAUSE and i["state"] == "open" for i in state["incidents"])
        m = metrics(col)
        assert m[("mailpulse_broker_connected", ())] == 0 and m[("mailpulse_incident_ingest_open", ())] == 1
        time.sleep(max(0.0, 20.0 - (time.monotonic() - down_at)))   # a 20 s outage: paho alone would wait ~30 s
        broker.server.start()
        back = time.monotonic()
        assert _wait(lambda: col.ingest.link.connected, 10), "the collector did not reconnect"
        gap = time.monotonic() - back
        print(f"reconnected {gap:.2f} s after the broker returned")
        assert gap <= 2.0, f"reconnected {gap:.2f} s after the broker returned"
        m = metrics(col)
        assert m[("mailpulse_broker_connected", ())] == 1
        assert m[("mailpulse_broker_connection_losses_total", ())] == 1
        assert m[("mailpulse_broker_reconnect_attempts_total", ())] >= 1
        assert m[("mailpulse_broker_connect_failures_total", ())] >= 1
        assert m[("mailpulse_ingest_last_message_timestamp_seconds", ())] > 0
        # messages flow again: the ingest incident resolves
        node = node_client(broker, "node-a")
        publish(node, T.NodeTopics("lab", "node-a").status, json.dumps(
            {"schema": 1, "site": "lab", "node": "node-a", "state": "online", "ts": time.time()}).encode())
        assert _wait(lambda: col.health.incident is None, 10)
        assert any(c.incident["root_cause"] == INGEST_CAUSE for c in col.changes if c.kind == "resolved")
    finally:
        stop.set()
        ticker.join(5)
        col.stop()
        node.loop_stop()
        node.disconnect()


def test_silent_nodes_go_offline_without_a_last_will(broker: Any, tmp_path: Path) -> None:
    node = node_client(broker, "node-a")
    other = node_client(broker, "node-b")
    # node-b's retained status says online, but it is 23 minutes old (the node died, its will was lost)
    publish(other, T.NodeTopics("lab", "node-b").status, json.dumps(
        {"schema": 1, "site": "lab", "node": "node-b", "state": "online", "ts": time.time() - 1380}).encode(),
        retain=True)
    cfg = collector_cfg(broker, tmp_path)
    col = Collector(cfg)
    col.start()
    stop = threading.Event()
    ticker = ticking(col, stop)
    try:
        assert col.ingest.wait_connected()
        assert _wait(lambda: "lab/node-b" in col.state.fleet)
        assert _wait(lambda: metrics(col).get(("mailpulse_node_online", (("node", "node-b"), ("site", "lab")))) == 0)
        # node-a: online, heartbeat 1 s, then silent (no will: the connection stays up)
        publish(node, T.NodeTopics("lab", "node-a").status, json.dumps(
            {"schema": 1, "site": "lab", "node": "node-a", "state": "online", "ts": time.time(),
             "heartbeat_s": 1.0}).encode(), retain=True)
        key = ("mailpulse_node_online", (("node", "node-a"), ("site", "lab")))
        assert _wait(lambda: metrics(col).get(key) == 1, 5)
        t0 = time.monotonic()
        assert _wait(lambda: metrics(col).get(key) == 0, 10), "node-a stayed online"
        silent = time.monotonic() - t0
        assert 2.0 <= silent <= 5.0, silent
        row = col.state.fleet["lab/node-a"]
        assert row["online"] is False and row["state"] == "silent" and row["last_seen"]
        seen = metrics(col)[("mailpulse_node_last_seen_timestamp_seconds", (("node", "node-a"), ("site", "lab")))]
        assert time.time() - 10 < seen < time.time()
    finally:
        stop.set()
        ticker.join(5)
        col.stop()
        for c in (node, other):
            c.loop_stop()
            c.disconnect()
