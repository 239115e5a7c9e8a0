"""Topics, Home Assistant discovery, rendezvous route sharing and the fleet's liveness (no broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from mailpulse.pi_firmware.fleet import Fleet, ModelUpdater, assign_routes, route_owner

from mailpulse import topics as T


def test_topic_layout_and_parse() -> None:
    t = T.NodeTopics("lab", "node-a")
    assert t.events == "mailpulse/v1/lab/node-a/events"
    assert t.status == "mailpulse/v1/lab/node-a/status"
    assert t.model == "mailpulse/v1/lab/model"
    assert T.parse_topic(t.anomalies) == T.ParsedTopic("lab", "node-a", "anomalies")
    assert T.parse_topic(t.model) == T.ParsedTopic("lab", None, "model")
    for bad in ("mailpulse/v1/lab/node-a/other", "x/v1/lab/n/events", "mailpulse/v1/lab"):
        with pytest.raises(ValueError):
            T.parse_topic(bad)
    for bad_id in ("a/b", "+", "#", "", "x" * 65):
        with pytest.raises(ValueError):
            T.NodeTopics("lab", bad_id)


def test_acl_lines_confine_a_node_to_its_own_topics() -> None:
    lines = T.node_acl("lab", "node-a")
    assert lines[0] == "user lab.node-a" == f"user {T.node_user('lab', 'node-a')}"
    writes = [ln.split()[-1] for ln in lines if ln.startswith("topic write")]
    assert "mailpulse/v1/lab/node-a/#" in writes
    assert not any("node-b" in w or w.startswith("mailpulse/v1/lab/+") for w in writes)


def test_ha_discovery_configs() -> None:
    d = T.ha_discovery("lab", "node-a", "0.1")
    assert len(d) == len(T.HA_SENSORS)
    for topic, cfg in d.items():
        assert topic.startswith("homeassistant/sensor/mailpulse_lab_node-a/") and topic.endswith("/config")
        assert cfg["state_topic"] == cfg["availability_topic"] == "mailpulse/v1/lab/node-a/status"
        assert cfg["unique_id"].startswith("mailpulse_lab_node-a_")
        json.dumps(cfg)
    assert d["homeassistant/sensor/mailpulse_lab_node-a/probe_latency/config"]["unit_of_measurement"] == "ms"


def test_rendezvous_is_balanced_and_moves_only_a_dead_nodes_routes() -> None:
    routes = [f"r{i}" for i in range(300)]
    nodes = ["a", "b", "c"]
    before = assign_routes(routes, nodes)
    assert sorted(r for v in before.values() for r in v) == sorted(routes)
    assert all(60 <= len(v) <= 140 for v in before.values()), {k: len(v) for k, v in before.items()}
    after = assign_routes(routes, ["a", "c"])
    for n in ("a", "c"):
        assert set(before[n]) <= set(after[n])          # survivors keep their routes
    assert set(after["a"]) | set(after["c"]) == set(routes)
    assert route_owner("r1", []) is None
    assert route_owner("r1", ["b", "a"]) == route_owner("r1", ["a", "b"])


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool = False


def status(node: str, state: str, ts: float) -> Msg:
    return Msg(T.NodeTopics("lab", node).status, json.dumps({"state": state, "ts": ts}).encode())


def test_dead_node_routes_move_within_one_heartbeat_timeout() -> None:
    clock = Clock()
    routes = [f"r{i}" for i in range(40)]
    fa = Fleet("lab", "a", heartbeat_s=5, clock=clock)
    fb = Fleet("lab", "b", heartbeat_s=5, clock=clock)
    for f in (fa, fb):
        f.on_message(status("a", "online", clock.t))
        f.on_message(status("b", "online", clock.t))
    mine_a, mine_b = fa.my_routes(routes), fb.my_routes(routes)
    assert set(mine_a).isdisjoint(mine_b) and set(mine_a) | set(mine_b) == set(routes) and mine_a and mine_b
    # b stops sending heartbeats: still owner until the timeout (3 heartbeats), then a owns all
    clock.t += fa.timeout_s - 0.5
    fa.on_message(status("a", "online", clock.t))
    assert fa.my_routes(routes) == mine_a
    clock.t += 1.0
    assert fa.my_routes(routes) == routes
    # b comes back: its routes return to it
    fa.on_message(status("b", "online", clock.t))
    assert fa.my_routes(routes) == mine_a
    # the broker's last will: offline at once
    fa.on_message(status("b", "offline", clock.t))
    assert fa.my_routes(routes) == routes


def test_retained_status_counts_from_its_own_timestamp() -> None:
    clock = Clock()
    f = Fleet("lab", "a", heartbeat_s=5, clock=clock)
    old = status("b", "online", clock.t - 60)
    old.retain = True
    f.on_message(old)
    assert f.live_nodes() == ["a"]
    fresh = status("b", "online", clock.t - 1)
    fresh.retain = True
    f.on_message(fresh)
    assert f.live_nodes() == ["a", "b"]
    f.on_message(Msg("mailpulse/v1/other/b/status", b"{}"))   # another site: ignored
    f.on_message(Msg(T.NodeTopics("lab", "c").status, b"not json"))
    assert f.live_nodes() == ["a", "b"]


def test_model_updater_keeps_running_model_on_bad_file() -> None:
    installed: list[bytes] = []

    def install(data: bytes) -> str:
        if not data.startswith(b"{"):
            raise ValueError("not a model")
        installed.append(data)
        return "v7"

    u = ModelUpdater(install)
    assert u.apply(b"{good}") and u.version == "v7"
    assert not u.apply(b"junk") and u.version == "v7" and u.refused == 1 and "not a model" in (u.error or "")
    assert u.apply(b"{good}") and len(installed) == 1     # the same retained file again: no reload
