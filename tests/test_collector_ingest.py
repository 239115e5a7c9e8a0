"""Ingest through real Mosquitto: de-duplication of republished and replayed events, persistent
session across a collector restart, /metrics parsed by prometheus_client, and the retraining loop
(guard + retained model reaching a node's model-update handler)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import tomli_w
from mailpulse.collector.archive import ArchiveWriter, read_events
from mailpulse.collector.ingest import Batch
from mailpulse.collector.retrain import publish_model, retrain_guard
from mailpulse.collector.service import Collector
from mailpulse.collector.trainer import train
from mailpulse.hdl.params import get_params
from mailpulse.pi_firmware.fleet import ModelUpdater
from mailpulse.pi_firmware.pipeline import load_scoring_model
from prometheus_client.parser import text_string_to_metric_families

from mailpulse import features as F
from mailpulse import topics as T
from mailpulse.config.collector import CollectorConfig, RetrainSettings, WebSettings, parse_config
from mailpulse.datasets import Dataset
from mailpulse.errors import UserError
from mailpulse.lab.webclient import WebClient
from mailpulse.modelfile import load_model

pytestmark = pytest.mark.xdist_group("collector-mqtt")


def _wait(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def node_client(broker: Any, node: str) -> mqtt.Client:
    c = broker.paho(node, f"test-{node}")
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    return c


def publish(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    info = c.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(10)
    assert info.is_published()


def delivery(i: int, node: str = "node-a", anomaly: bool = False) -> dict[str, Any]:
    return {"schema": F.SCHEMA_VERSION, "kind": "delivery", "id": f"{node}-{i:06d}", "node": node,
            "ts": "2026-11-26T10:00:00.000Z",
            "fields": {"host": "edge", "relay": "mx.example.net[10.0.0.1]:25", "status": "sent", "delay": 1.5,
                       "delays": [0.1, 0.2, 0.3, 0.9]},
            "x": [i % 100, 1, 2, 3, 4, 5, 6, 7], "score": 5, "anomaly": anomaly, "argmax": 0}


def envelope(node: str, events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schema": 1, "site": "lab", "node": node, "events": events}).encode()


def collector_doc(broker: Any, tmp_path: Path, user: str = "collector") -> dict[str, Any]:
    """The collector config ``collector init`` wrote, with the archive in ``tmp_path``, any free web
    port and the MQTT identity of the consumer ``user``."""
    doc = tomllib.loads(broker.deployment.collector_config.read_text())
    doc["archive"] = {"dir": str(tmp_path / "archive"), "max_age_s": 3600.0}
    doc["web"]["port"] = 0
    doc["mqtt"] = {**broker.mqtt_doc(user), "client_id": f"{user}-test", "session_expiry_s": 600}
    return doc


def collector_cfg(broker: Any, tmp_path: Path, user: str = "collector") -> CollectorConfig:
    cfg, errors = parse_config(collector_doc(broker, tmp_path, user), "test")
    assert cfg is not None, errors
    cfg.mqtt.password = broker.users[user]
    return cfg


def web_client(col: Collector) -> WebClient:
    """An HTTPS client of the collector's dashboard with its dashboard credential."""
    assert col.web is not None
    return WebClient.dashboard(col.web.url, col.cfg.web, Path(col.cfg.mqtt.ca_file or ""))


def test_duplicates_and_replays_are_archived_once(broker: Any, tmp_path: Path) -> None:
    cfg = collector_cfg(broker, tmp_path)
    col = Collector(cfg)
    col.start()
    node = node_client(broker, "node-a")
    try:
        assert col.ingest.wait_connected()
        time.sleep(0.3)  # subscription in place
        topic = T.NodeTopics("lab", "node-a")
        publish(node, topic.status, json.dumps({"schema": 1, "site": "lab", "node": "node-a", "state": "online",
                                                "ts": time.time(),
                                                "model_version": "m1", "spool": {"depth": 7}}).encode(), retain=True)
        batch = [delivery(i, anomaly=(i % 10 == 0)) for i in range(50)]
        publish(node, topic.events, envelope("node-a", batch))
        publish(node, topic.events, envelope("node-a", batch))           # the same batch again
        publish(node, topic.events, envelope("node-a", [*batch[:5], delivery(50)]))  # overlap
        assert _wait(lambda: col.processor.total_events == 51 and col.processor.total_duplicates == 55), \
            (col.processor.total_events, col.processor.total_duplicates)
        assert _wait(lambda: "lab/node-a" in col.state.fleet)
        assert col.state.fleet["lab/node-a"]["state"] == "online"
        assert col.state.fleet["lab/node-a"]["spool_depth"] == 7

        # /metrics, parsed by prometheus_client's own parser
        assert col.web is not None
        assert WebClient(col.web.url, Path(cfg.mqtt.ca_file or "")).request("metrics")[0] == 401
        text = WebClient.metrics(col.web.url, cfg.web, Path(cfg.mqtt.ca_file or "")).metrics_text()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        ev = {tuple(sorted(s.labels.items())): s.value for s in fams["mailpulse_events"].samples
              if s.name == "mailpulse_events_total"}
        assert ev[(("kind", "delivery"), ("node", "node-a"), ("site", "lab"))] == 51
        delay = [s for s in fams["postfix_smtp_delivery_delay_seconds"].samples
                 if s.name.endswith("_count")]
        assert {s.labels["stage"] for s in delay} == {"before_queue_manager", "queue_manager", "connection_setup",
                                                     "transmission"}
        assert all(s.value == 51 for s in delay)
        anomalies = [s for s in fams["mailpulse_anomalies"].samples if s.name == "mailpulse_anomalies_total"]
        assert sum(s.value for s in anomalies) == 5
        online = [s for s in fams["mailpulse_node_online"].samples]
        assert online and online[0].value == 1
        dup = [s for s in fams["mailpulse_ingest_duplicates"].samples if s.name.endswith("_total")]
        assert dup[0].value == 55
    finally:
        col.stop()

    # while the collector is away the node replays old events and sends new ones; the broker keeps
    # them in the collector's persistent session
    publish(node, T.NodeTopics("lab", "node-a").events,
            envelope("node-a", [delivery(i) for i in range(40, 70)]))
    col2 = Collector(cfg)
    assert col2.indexed == 51  # the archive index seeds the de-duplication
    col2.start()
    try:
        assert _wait(lambda: col2.processor.total_events == 19 and col2.processor.total_duplicates == 11), \
            (col2.processor.total_events, col2.processor.total_duplicates)
    finally:
        col2.stop()
        node.loop_stop()
        node.disconnect()
    ids = [e["id"] for e in read_events(cfg.archive.dir)]
    assert len(ids) == 70 and len(set(ids)) == 70
    assert sorted(ids) == [f"node-a-{i:06d}" for i in range(70)]


def _tiny_model(tmp_path: Path, shift: float = 0.0, rate: float = 0.01) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2000, size=(600, 8)).astype(np.float64) + shift
    res = train(Dataset(x, None, "t", "0"), get_params("small"), seed=0, false_alarm_rate=rate,
                feature_schema=str(F.SCHEMA_VERSION))
    return res.model.save(tmp_path / f"model-{shift}-{rate}.json")


def test_guard_rejects_a_model_that_raises_false_alarms(tmp_path: Path) -> None:
    current = load_model(_tiny_model(tmp_path))
    worse = load_model(_tiny_model(tmp_path, rate=0.2))   # flags 20 % of normal data
    recent = np.random.default_rng(1).integers(0, 2000, size=(800, 8)).astype(np.float64)
    g = retrain_guard(worse, current, recent)
    assert g.far_current is not None
    assert not g.accept and g.far_candidate > g.far_current + 0.05, g
    g2 = retrain_guard(current, current, recent)
    assert g2.accept and g2.far_candidate == g2.far_current
    assert not retrain_guard(worse, None, recent, target_rate=0.01).accept


class NodeModelSide:
    """A node's model topic subscription with the node's own ModelUpdater and model validation."""

    def __init__(self, broker: Any, tmp_path: Path, node: str = "node-b") -> None:
        self.installed: list[str] = []

        def install(data: bytes) -> str:
            p = tmp_path / f"{node}-model.json"
            p.write_bytes(data)
            m = load_scoring_model(p, "small")   # the node's own validation
            self.installed.append(m.version)
            return m.version

        self.updater = ModelUpdater(install)
        self.got = threading.Event()
        self.client = broker.paho(node, f"test-{node}-model")

        def on_message(c: Any, u: Any, msg: Any) -> None:
            self.updater.on_message(msg)
            self.got.set()

        self.client.on_message = on_message
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(T.model_topic("lab"), qos=1)
        self.broker = broker

    def connect(self) -> None:
        self.client.connect(self.broker.host, self.broker.port, 30)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_published_model_reaches_a_node(broker: Any, tmp_path: Path) -> None:
    node = NodeModelSide(broker, tmp_path)
    model_file = _tiny_model(tmp_path)
    ident = broker.identity("viewer")

    def publish(path: Path) -> str:
        return publish_model(path, "lab", broker.host, broker.port, username=ident.user, password=ident.password,
                             ca_file=str(ident.ca_file), cert_file=str(ident.cert_file), key_file=str(ident.key_file))

    topic = publish(model_file)
    assert topic == T.model_topic("lab")
    node.connect()   # connects after the publish: gets the retained model
    try:
        assert node.got.wait(10), "the node did not receive the retained model"
        assert node.updater.error is None and len(node.installed) == 1
        assert node.updater.version == node.installed[0]
    finally:
        node.close()
    # a file that is not a model is refused before anything is published
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UserError):
        publish(bad)


def test_scheduled_retraining_publishes_a_guarded_model_to_the_nodes(broker: Any, tmp_path: Path) -> None:

    rng = np.random.default_rng(0)
    with ArchiveWriter(tmp_path / "archive") as w:
        evs = [dict(delivery(i), x=[int(v) for v in rng.integers(0, 3000, size=8)]) for i in range(4000)]
        w.write(evs)
    cfg = collector_cfg(broker, tmp_path)
    cfg.web = WebSettings(enabled=False)
    cfg.retrain = RetrainSettings(enabled=True, sites=["lab"])
    col = Collector(cfg)
    node = NodeModelSide(broker, tmp_path)
    node.connect()
    try:
        (entry,) = col.retrain_once()
        assert entry["accept"] and entry["published_to"] == ["lab"], entry
        assert node.got.wait(10), "the retrained model did not reach the node"
        assert node.updater.error is None and len(node.installed) == 1
        # the next round is guarded against the model now running
        (entry2,) = col.retrain_once()
        assert "running" in entry2["reason"], entry2
    finally:
        node.close()
        col.stop()


def test_collector_run_command(broker: Any, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    conf = tmp_path / "collector.toml"
    doc = collector_doc(broker, tmp_path)
    doc["mqtt"]["password_env"] = "TEST_COLLECTOR_PW"     # an env variable wins over a missing key
    conf.write_text(tomli_w.dumps(doc))
    env = dict(os.environ, TEST_COLLECTOR_PW=broker.users["collector"])
    chk = subprocess.run([sys.executable, "-m", "mailpulse", "collector", "check-config", str(conf)],
                         capture_output=True, text=True, cwd=root, env=env, timeout=60)
    assert chk.returncode == 0, chk.stderr
    p = subprocess.Popen([sys.executable, "-m", "mailpulse", "collector", "run", "--config", str(conf)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root, env=env)
    node = node_client(broker, "node-b")
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert "dashboard at https://" in line, line
        url = line.split("dashboard at ")[1].split(",")[0]
        cfg = collector_cfg(broker, tmp_path)
        web = WebClient.dashboard(url, cfg.web, broker.deployment.ca_file)
        assert WebClient(url, broker.deployment.ca_file).request("api/state")[0] == 401
        time.sleep(0.5)
        publish(node, T.NodeTopics("lab", "node-b").events, envelope("node-b", [delivery(1, "node-b")]))

        def seen() -> bool:
            return bool(web.state()["stats"]["events"] == 1)

        assert _wait(seen)
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(20)
        node.loop_stop()
        node.disconnect()
    assert rc == 0
    assert [e["id"] for e in read_events(tmp_path / "archive")] == ["node-b-000001"]


def test_shared_subscription_splits_the_load(broker: Any, tmp_path: Path) -> None:
    cols = []
    for i, user in enumerate(("collector", "collector-2")):
        cfg = collector_cfg(broker, tmp_path / f"c{i}", user)
        cfg.mqtt.client_id = f"collector-shared-{i}"
        cfg.mqtt.share_group = "ops"
        cfg.web = WebSettings(enabled=False)
        cols.append(Collector(cfg))
    for c in cols:
        c.start()
    node = node_client(broker, "node-a")
    try:
        assert all(c.ingest.wait_connected() for c in cols)
        time.sleep(0.5)
        topic = T.NodeTopics("lab", "node-a").events
        for b in range(40):
            publish(node, topic, envelope("node-a", [delivery(b * 5 + k) for k in range(5)]))
        assert _wait(lambda: sum(c.processor.total_events for c in cols) == 200)
        counts = [c.processor.total_events for c in cols]
        assert all(n > 0 for n in counts), counts
    finally:
        for c in cols:
            c.stop()
        node.loop_stop()
        node.disconnect()
    ids = [e["id"] for c in cols for e in read_events(c.cfg.archive.dir)]
    assert sorted(ids) == [f"node-a-{i:06d}" for i in range(200)]


def test_a_nodes_new_model_restarts_the_correlations_score_baselines(broker: Any, tmp_path: Path) -> None:
    """A node's status naming another model than its last status did (the untrained bring-up model's is
    ``None``) tells the correlation that verdicts from then on are another model's; the first status
    heard and an unchanged version do not."""
    col = Collector(collector_cfg(broker, tmp_path))

    def status(version: str | None, received: float) -> None:
        doc = {"schema": 1, "site": "lab", "node": "node-a", "state": "online", "ts": received,
               "model_version": version}
        col.on_batch(Batch(statuses=[("lab", "node-a", doc, False, received)]))

    status(None, 1000.0)
    assert col.correlator.scores_since is None
    status("sha256:aaa", 1010.0)
    assert col.correlator.scores_since == 1010.0
    status("sha256:aaa", 1020.0)
    assert col.correlator.scores_since == 1010.0
    status("sha256:bbb", 1030.0)
    assert col.correlator.scores_since == 1030.0   # within a window of the restart: a roll-out, extended
    assert col.model_restarts_refused == 0


def test_a_node_that_keeps_changing_models_cannot_keep_the_correlation_blind(broker: Any, tmp_path: Path) -> None:
    """A restart of the score baselines blinds the anomaly walk for a window, so a node whose status
    names a new model every few seconds restarts them once per history (changes within a window of the
    restart extend it); the others are counted."""
    cfg = collector_cfg(broker, tmp_path)
    col = Collector(cfg)
    window, history = cfg.correlate.window_s, cfg.correlate.history_s
    assert history > 2 * window

    def status(version: str, received: float) -> None:
        doc = {"schema": 1, "site": "lab", "node": "node-x", "state": "online", "ts": received,
               "model_version": version}
        col.on_batch(Batch(statuses=[("lab", "node-x", doc, False, received)]))

    t0 = 5000.0
    status("v0", t0)
    times = [t0 + 10.0 * i for i in range(1, int(history // 10) + 2)]
    assert times[-1] - times[0] >= history > times[-2] - times[0]
    for i, t in enumerate(times[:-1]):
        status(f"v{i + 1}", t)
    restarted = [t for t in times if t - times[0] <= window]
    assert col.correlator.scores_since == restarted[-1]
    assert col.model_restarts_refused == sum(1 for t in times if window < t - times[0] < history) > 0
    # a history after the first restart, a change restarts them again
    status("v-last", times[-1])
    assert col.correlator.scores_since == times[-1]
