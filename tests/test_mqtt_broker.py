"""The node's publishing path against a real Mosquitto as ``collector init`` configures it (TLS
with client certificates, per-node passwords, the per-node ACL).

Cases: TLS + login + status/discovery; the broker's ACL refuses a node that publishes under
another node's topic; the broker stopped and restarted: every event arrives (once after
de-duplication by id, in order); the node daemon killed with SIGKILL mid-stream and restarted:
nothing lost, and the last will marks it offline meanwhile; SIGTERM flushes and exits 0.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mailpulse.pi_firmware import pubproc
from mailpulse.pi_firmware import replay as replay_mod
from mailpulse.pi_firmware.events import DeliveryEvent
from mailpulse.pi_firmware.mqtt import MqttSettings, MqttSink
from mailpulse.pi_firmware.node import Node, build_node
from mailpulse.pi_firmware.pipeline import load_scoring_model, untrained_model
from mailpulse.pi_firmware.postfix import parse_lines
from mailpulse.pi_firmware.spool import Spool
from mailpulse.pi_firmware.synthlog import generate
from server_fixtures import SITE, Broker

from mailpulse import features as F
from mailpulse import topics as T
from mailpulse.cli import main
from mailpulse.config.base import SecretSource
from mailpulse.config.node import NodeConfig, load_config, validate_node
from mailpulse.lab.recorder import Recorder
from mailpulse.modelfile import InputScaling, TrainedModel

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.xdist_group("servers")


def node_doc(broker: Broker, state: Path, node: str = "node-a") -> dict[str, Any]:
    return {
        "node": {"id": node, "site": SITE, "state_dir": str(state)},
        "mqtt": {**broker.mqtt_doc(node), "keepalive_s": 2, "batch_max_events": 200},
        "fleet": {"heartbeat_s": 1.0},
        "probe": {"enabled": False},
    }


def node_config(broker: Broker, state: Path, node: str = "node-a") -> NodeConfig:
    doc = node_doc(broker, state, node)
    cfg, errors = validate_node(doc, SecretSource({"mqtt_password": broker.users[node]}), local=True)
    assert cfg is not None, errors
    return cfg


def sink_settings(broker: Broker, name: str, **kw: Any) -> MqttSettings:
    """The node's MQTT settings connecting as ``name`` (a node or a consumer user)."""
    return MqttSettings(**broker.mqtt_doc(name), password=broker.users[name], **kw)


def mqtt_toml(broker: Broker, name: str) -> list[str]:
    """The ``[mqtt]`` lines of a node config file connecting as ``name``."""
    return ["[mqtt]", *(f'{k} = "{v}"' for k, v in broker.mqtt_doc(name).items())]


def log_lines(n: int, seed: int) -> list[str]:
    return list(itertools.islice(generate(n, seed), n))


def deliveries(n_lines: int, seed: int, node: str = "node-a") -> list[DeliveryEvent]:
    """Delivery events of a synthetic log, one per id."""
    events, _ = parse_lines(log_lines(n_lines, seed), node)
    first: dict[str, DeliveryEvent] = {}
    for e in events:
        first.setdefault(e.id, e)
    return list(first.values())


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    r = Recorder(broker.host, broker.port, broker.identity("viewer"),
                 topics=[f"{T.PREFIX}/#", f"{T.HA_PREFIX}/#"], client_id=f"rec-{os.getpid()}-{time.monotonic_ns()}")
    assert r.connected.wait(5)
    yield r
    r.close()


def dedup(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def test_tls_publish_status_discovery_and_clean_stop(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    node = Node(node_config(broker, tmp_path / "a"))
    node.start()
    try:
        assert node.sink.wait_connected(10), node.sink.stats.last_error
        events = deliveries(3000, seed=1)
        for i in range(0, len(events), 250):
            node.emit(events[i:i + 250])
        want = [e.id for e in events]
        assert recorder.wait_for(lambda r: len(set(r.event_ids())) >= len(want), 20)
        assert dedup(recorder.event_ids()) == want
        got = recorder.events()[0]
        assert got["kind"] == "delivery" and got["schema"] == F.SCHEMA_VERSION and "score" in got and len(got["x"]) == 8
        st = recorder.last_status("node-a")
        assert st is not None and st["state"] == "online" and st["spool"]["max"] == 1_000_000
        assert st["model_version"] == "untrained"
        assert len(recorder.on("config")) == 0  # discovery topics are not mailpulse topics
        ha = [m for m in recorder.messages if m.topic.startswith("homeassistant/sensor/mailpulse_lab_node-a/")]
        assert len({m.topic for m in ha}) == len(T.HA_SENSORS) and all(m.json()["state_topic"] for m in ha)
    finally:
        flushed = node.stop()
    assert flushed
    assert recorder.wait_for(lambda r: (r.last_status("node-a") or {}).get("state") == "offline", 5)


def test_acl_refuses_publishing_under_another_nodes_topic(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    codes: list[int] = []
    c = broker.paho("node-b", "intruder")
    c.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(rc.value)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        c.publish(T.NodeTopics(SITE, "node-a").events, b'{"events":[{"id":"forged"}]}', qos=1).wait_for_publish(5)
        c.publish(T.NodeTopics(SITE, "node-b").events, b'{"events":[{"id":"own"}]}', qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
    assert codes == [0x87, 0x00]      # MQTT v5 PUBACK "Not authorized", then success
    # the spool-backed sink: refused rows are dropped and counted, not retried forever
    spool = Spool(tmp_path / "s.db")
    sink = MqttSink(SITE, "node-a", sink_settings(broker, "node-b", client_id="node-b-as-a", ha_discovery=False), spool)
    sink.start()
    try:
        assert sink.wait_connected(5)
        sink.emit_many(deliveries(200, seed=2, node="node-a")[:20])
        assert sink.flush(10)
        assert sink.stats.rejected == 20 and sink.stats.published == 0 and len(spool) == 0
    finally:
        sink.close(2)
        spool.close()
    time.sleep(0.2)
    assert "forged" not in recorder.event_ids() and "own" in recorder.event_ids()
    assert recorder.last_status("node-a") is None    # its status was refused too


def test_broker_outage_every_event_arrives_once(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    node = Node(node_config(broker, tmp_path / "a", ))
    node.start()
    events = deliveries(6000, seed=3)
    third = len(events) // 3
    try:
        assert node.sink.wait_connected(10)
        node.emit(events[:third])
        assert recorder.wait_for(lambda r: len(set(r.event_ids())) >= third, 15)
        broker.server.stop()
        for i in range(third, 2 * third, 100):
            node.emit(events[i:i + 100])
            time.sleep(0.002)
        assert len(node.spool) >= third          # queued on disk while the broker is away
        broker.server.start()
        node.emit(events[2 * third:])
        want = [e.id for e in events]
        assert recorder.wait_for(lambda r: len(set(r.event_ids())) >= len(want), 30), \
            (len(set(recorder.event_ids())), len(want), node.sink.stats)
        ids = recorder.event_ids()
        assert dedup(ids) == want                # every event, in order
        dups = len(ids) - len(want)
        # only messages in flight when the broker went down may come twice (at-least-once, de-duplicated by id)
        assert dups <= node.cfg.mqtt.inflight_max * node.cfg.mqtt.batch_max_events
        assert node.sink.stats.connects >= 2
    finally:
        assert node.stop()


def _write_config(path: Path, broker: Broker, state: Path, log: Path) -> None:
    doc = node_doc(broker, state)
    lines = [
        "[node]", f'id = "{doc["node"]["id"]}"', f'site = "{SITE}"', f'state_dir = "{state}"',
        f'secrets_file = "{path.parent / "secrets.toml"}"',
        *mqtt_toml(broker, "node-a"), "keepalive_s = 2", "batch_max_events = 200",
        "[fleet]", "heartbeat_s = 1.0",
        "[probe]", "enabled = false",
        "[postfix]", f'log = "{log}"', "from_start = true",
    ]
    path.write_text("\n".join(lines) + "\n")
    sec = path.parent / "secrets.toml"
    sec.write_text(f'mqtt_password = "{broker.users["node-a"]}"\n')
    sec.chmod(0o600)


def _start_node(cfg: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "mailpulse", "node", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def test_node_sigkill_mid_stream_nothing_lost_then_sigterm(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    lines = log_lines(40000, seed=4)
    want, _ = parse_lines(lines, "node-a")
    want_ids = {e.id for e in want}
    cfg = tmp_path / "node.toml"
    _write_config(cfg, broker, tmp_path / "state", log)
    out = tmp_path / "node.out"
    half = len(lines) // 2
    proc = _start_node(cfg, out)
    try:
        with open(log, "w") as f:
            for i in range(0, half, 2000):
                f.writelines(lines[i:i + 2000])
                f.flush()
                time.sleep(0.02)
        assert recorder.wait_for(lambda r: len(r.event_ids()) > 500, 20), out.read_text()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)                 # mid-stream: lines still being read and published
        proc.wait(5)
        assert len(set(recorder.event_ids())) < len(want_ids)
        # the broker's last will marks the node offline (keepalive 2 s -> within 3 s)
        assert recorder.wait_for(lambda r: (r.last_status("node-a") or {}).get("state") == "offline", 8)
        with open(log, "a") as f:
            f.writelines(lines[half:])
        proc = _start_node(cfg, out)
        assert recorder.wait_for(lambda r: len(set(r.event_ids())) >= len(want_ids), 60), \
            (len(set(recorder.event_ids())), len(want_ids), recorder.last_status("node-a"), out.read_text()[-2000:])
        assert set(recorder.event_ids()) == want_ids
        assert recorder.wait_for(lambda r: (r.last_status("node-a") or {}).get("state") == "online", 5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, out.read_text()[-2000:]
        assert (recorder.last_status("node-a") or {}).get("state") == "offline"
        spool = Spool(tmp_path / "state" / "spool.db")
        assert len(spool) == 0                             # SIGTERM flushed everything
        spool.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _model_bytes(threshold: int, version: str) -> bytes:
    base = untrained_model()
    c = base.config
    m = TrainedModel(params=base.params, feature_schema=str(F.SCHEMA_VERSION),
                     scaling=InputScaling.identity(base.params.d), weights=c.weights, offsets=c.offsets,
                     shifts=c.shifts, tables=c.tables + 1, threshold=threshold,
                     reference_tables=np.zeros(c.tables.shape), table_scale=1.0, provenance={"version": version})
    return m.to_bytes()


def _publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    c = broker.paho("collector", "trainer")
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        info = c.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_model_update_from_the_retained_model_topic(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    node = Node(node_config(broker, tmp_path / "a", ))
    node.start()
    events = deliveries(2000, seed=5)
    try:
        assert node.sink.wait_connected(10)
        node.emit(events[:50])
        assert recorder.wait_for(lambda r: len(set(r.event_ids())) >= 50, 10)
        assert recorder.events("anomalies") == []          # the untrained model flags nothing
        topic = T.model_topic(SITE)
        _publish_retained(broker, topic, b'{"format": "something else"}')
        assert recorder.wait_for(lambda r: (r.last_status("node-a") or {}).get("models_refused") == 1, 10)
        st = recorder.last_status("node-a") or {}
        assert st["model_version"] == "untrained" and "not a mailpulse model" in st["model_error"]
        _publish_retained(broker, topic, _model_bytes(threshold=0, version="test-7"))
        assert recorder.wait_for(lambda r: (r.last_status("node-a") or {}).get("model_version") == "test-7", 10)
        assert (recorder.last_status("node-a") or {})["model_error"] is None
        node.emit(events[50:80])                        # every score is K > threshold 0: all anomalies now
        want = [e.id for e in events[50:80]]
        assert recorder.wait_for(lambda r: set(want) <= set(r.event_ids("anomalies")), 10)
        assert all(e["anomaly"] for e in recorder.events("anomalies"))
    finally:
        assert node.stop()
    # the model is kept for the next start
    again = Node(node_config(broker, tmp_path / "a", ))
    assert again.model.version == "test-7"
    again.spool.close()


def test_fleet_nodes_see_each_other_and_share_routes(broker: Broker, tmp_path: Path) -> None:
    routes = [f"route-{i}" for i in range(12)]
    a = Node(node_config(broker, tmp_path / "a", "node-a", ))
    b = Node(node_config(broker, tmp_path / "b", "node-b", ))
    a.start()
    b.start()
    try:
        deadline = time.monotonic() + 10
        while (time.monotonic() < deadline
               and not (a.fleet.live_nodes() == b.fleet.live_nodes() == ["node-a", "node-b"])):
            time.sleep(0.05)
        assert a.fleet.live_nodes() == b.fleet.live_nodes() == ["node-a", "node-b"]
        ra, rb = a.fleet.my_routes(routes), b.fleet.my_routes(routes)
        assert ra and rb and set(ra).isdisjoint(rb) and set(ra) | set(rb) == set(routes)
    finally:
        assert b.stop()
    # node-b said "offline" (its will says the same if it dies): node-a takes all routes at once
    deadline = time.monotonic() + a.fleet.timeout_s
    while time.monotonic() < deadline and a.fleet.my_routes(routes) != routes:
        time.sleep(0.05)
    try:
        assert a.fleet.my_routes(routes) == routes
    finally:
        assert a.stop()


def test_spool_bound_drops_ordinary_events_first_and_says_so(broker: Broker, recorder: Recorder,
                                                             tmp_path: Path) -> None:
    broker.server.stop()                                   # the broker is away from the start
    spool = Spool(tmp_path / "s.db", max_rows=100)
    sink = MqttSink(SITE, "node-a", sink_settings(broker, "node-a", ha_discovery=False), spool)
    sink.start()
    try:
        # 300 events, every 10th anomalous (it takes two rows: events + anomalies)
        rows = [(f"ev{i:03d}", {"id": f"ev{i:03d}", "anomaly": i % 10 == 0}, i % 10 == 0) for i in range(300)]
        sink.emit_payloads(rows)
        st = spool.stats()
        assert st.full and st.depth == 100 and st.dropped_anomalies == 0
        assert st.dropped_events == 300 + 30 - 100
        broker.server.start()
        assert sink.flush(20)
        status = sink.status_payload()
        assert status["spool"]["dropped_events"] == 230
        assert recorder.wait_for(
            lambda r: (r.last_status("node-a") or {}).get("spool", {}).get("dropped_events") == 230, 10)
        anomalies = sorted(e["id"] for e in recorder.events("anomalies"))
        assert anomalies == [f"ev{i:03d}" for i in range(0, 300, 10)]      # every anomaly survived
        kept = recorder.event_ids()
        assert kept == [f"ev{i:03d}" for i in range(230, 300)]              # the newest ordinary events
    finally:
        sink.close(2)
        spool.close()


def test_daemon_scores_and_publishes_a_message_delivered_into_the_maildir(broker: Broker, recorder: Recorder,
                                                                          tmp_path: Path, repo_data: Path) -> None:
    """``node run``'s wiring (config -> build_node -> Maildir watcher source -> score -> spool -> MQTT)."""
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    model = tmp_path / "model.json"
    model.write_bytes(_model_bytes(threshold=0, version="flag-all"))      # every event is an anomaly
    cfg = tmp_path / "node.toml"
    (tmp_path / "secrets.toml").write_text(f'mqtt_password = "{broker.users["node-a"]}"\n')
    (tmp_path / "secrets.toml").chmod(0o600)
    cfg.write_text("\n".join([
        "[node]", 'id = "node-a"', f'site = "{SITE}"', f'state_dir = "{tmp_path / "state"}"',
        f'secrets_file = "{tmp_path / "secrets.toml"}"',
        *mqtt_toml(broker, "node-a"), "ha_discovery = false",
        "[fleet]", "heartbeat_s = 1.0", "[probe]", "enabled = false",
        "[scorer]", f'model = "{model}"',
        "[maildir]", f'path = "{md}"', "poll_s = 0.05",
    ]) + "\n")
    node = build_node(load_config(cfg))
    node.start()
    try:
        assert node.sink.wait_connected(10), node.sink.stats.last_error
        # delivered the Maildir way: written in tmp/, renamed into new/
        (md / "tmp" / "1700000000.M1P1.host").write_bytes((repo_data / "mail" / "sa_001.eml").read_bytes())
        (md / "tmp" / "1700000000.M1P1.host").rename(md / "new" / "1700000000.M1P1.host")
        assert recorder.wait_for(lambda r: len(r.events("anomalies")) >= 1, 15), node.errors
        (ev,) = recorder.events("events")
        assert recorder.events("anomalies") == [ev]
        assert ev["kind"] == "message" and ev["node"] == "node-a" and ev["fields"]["key"] == "1700000000.M1P1.host"
        assert len(ev["fields"]["hops"]) == 6 and ev["fields"]["hops"][0]["by"] == "milkplus"
        # the score is the reference model's, bit for bit, on the vector that was published
        ref = load_scoring_model(model).scorer()(np.array([ev["x"]], dtype=np.int64), np.zeros(1, dtype=np.int64))
        assert (ev["score"], ev["anomaly"], ev["argmax"]) == (int(ref.score[0]), True, int(ref.argmax[0]))
        # seen once: a later poll (and the move new/ -> cur/ by a reader) publishes nothing more
        (md / "new" / "1700000000.M1P1.host").rename(md / "cur" / "1700000000.M1P1.host:2,S")
        time.sleep(0.3)
        assert len(recorder.events("events")) == 1
    finally:
        assert node.stop()


@pytest.mark.parametrize("where", ["in-process", "second-process"])
def test_replay_publishes_every_event_once_in_order(broker: Broker, recorder: Recorder, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                    where: str) -> None:
    """``mailpulse node replay`` (publishing, from this process or from a second one): the summary
    line comes after the broker acknowledged every event; every event arrives, in log order, in
    multi-event messages."""
    monkeypatch.setattr(replay_mod, "publisher", pubproc.InProcessPublisher if where == "in-process"
                        else pubproc.PublisherProcess)

    lines = log_lines(6000, seed=6)
    log = tmp_path / "mail.log"
    log.write_text("".join(lines))
    want, _ = parse_lines(lines, "node-a", year=2026)
    cfg = tmp_path / "node.toml"
    (tmp_path / "secrets.toml").write_text(f'mqtt_password = "{broker.users["node-a"]}"\n')
    (tmp_path / "secrets.toml").chmod(0o600)
    cfg.write_text("\n".join([
        "[node]", 'id = "node-a"', f'site = "{SITE}"', f'state_dir = "{tmp_path / "state"}"',
        f'secrets_file = "{tmp_path / "secrets.toml"}"',
        *mqtt_toml(broker, "node-a"), "ha_discovery = false",
        "batch_max_events = 100", "[postfix]", "year = 2026",
    ]) + "\n")
    assert main(["node", "replay", "--config", str(cfg), "--log", str(log)]) == 0
    (summary,) = capsys.readouterr().out.strip().splitlines()
    assert summary.startswith(f"lines {len(lines)} events {len(want)} ")
    assert recorder.wait_for(lambda r: len(r.event_ids()) >= len(want), 10)
    assert recorder.event_ids() == [e.id for e in want]
    batches = recorder.on("events")
    assert len(batches) == -(-len(want) // 100) and all(len(m.json()["events"]) <= 100 for m in batches)
    assert recorder.events()[0]["fields"]["status"] == want[0].status
