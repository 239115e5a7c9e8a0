"""The node feeds each delivery's route and latency to a core with route intervals (``small-r4``) and
publishes the core's ``below``/``above`` flags (:mod:`mailpulse.pi_firmware.routefeed`): the flags are
:func:`mailpulse.hdl.reference.route_intervals` on the same inputs, and the collector's own tracker
(:class:`mailpulse.collector.intervals.IntervalBook`) agrees with every one of them."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mailpulse.collector.ingest import Message
from mailpulse.collector.intervals import ROUTE_CONFIG, IntervalBook
from mailpulse.collector.metrics import Metrics
from mailpulse.collector.service import Collector
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import ADAPT_FRAC, route_intervals, route_seed
from mailpulse.host_bridge.scorer import Scorer
from mailpulse.pi_firmware.events import DeliveryEvent, Event, MessageEvent
from mailpulse.pi_firmware.node import Node, build_node
from mailpulse.pi_firmware.pipeline import ListSink, untrained_model
from mailpulse.pi_firmware.replay import replay
from mailpulse.pi_firmware.synthlog import generate
from mailpulse.sim.tools import have_simulator
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailpulse import features as F
from mailpulse import payload as P
from mailpulse import topics as T
from mailpulse.config.base import SecretSource
from mailpulse.config.collector import parse_config
from mailpulse.config.node import NodeConfig, validate_node
from mailpulse.errors import UserError
from mailpulse.features import route_latency
from mailpulse.modelfile import InputScaling, TrainedModel
from mailpulse.routes import RelayNames

R4 = get_params("small-r4")
NAMES = {"10.0.0.1:25": "relay-a", "mx-a.example.net": "relay-a", "10.0.0.3:25": "relay-c"}
#: Six relays, five routes: the first and the fourth are one route (``relay-a``) by ``[relays] names``;
#: on a core of R = 4 the sixth relay (the fifth route) finds the table full.
RELAYS = ["mx-a.example.net[10.0.0.1]:25", "mx-b.example.net[10.0.0.2]:25", "10.0.0.3[10.0.0.3]:25",
          "mx-a.example.net[10.0.0.9]:2525", "mx-d.example.net[10.0.0.4]:25", "mx-e.example.net[10.0.0.5]:25"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cfg(state: Path, params: str = "small-r4") -> NodeConfig:
    cfg, errors = validate_node({
        "node": {"id": "n1", "site": "lab", "state_dir": str(state)},
        "mqtt": {"host": "127.0.0.1", "port": _free_port(), "username": "n1", "tls": False},
        "probe": {"enabled": False}, "scorer": {"params": params}, "relays": {"names": NAMES},
    }, SecretSource({"mqtt_password": "x"}), local=True)
    assert cfg is not None, errors
    return cfg


def _events(n: int, seed: int, relays: int = 4, t0: float = 1.7e9) -> list[Event]:
    """Deliveries over ``relays`` relays (one slows down half-way), with messages, ``relay=none``
    deferrals and hostile delays (NaN, negative, infinite, beyond the payload's bound) among them."""
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    for i in range(n):
        k = i % relays
        relay: str | None = RELAYS[k]
        level = 0.05 * (k + 1) * (8.0 if k == 1 and i > n // 2 else 1.0)
        delay = round(level * float(rng.lognormal(0, 0.6)), 2)
        if i % 17 == 5:
            delay = [math.nan, -3.0, math.inf, 1e300, 0.0][(i // 17) % 5]
        if i % 23 == 7:
            relay = None if i % 2 else "none"
        out.append(DeliveryEvent(t0 + i, "n1", "h1", f"Q{i}", "smtp", f"u{i}@x.example", "sent", relay, delay,
                                 None, "2.0.0", text=f"line {i}"))
        if i % 29 == 3:
            out.append(MessageEvent(t0 + i, "n1", key=f"m{i}", size=100 + i))
    return out


def _feed(node: Node, events: list[Event], sizes: tuple[int, ...] = (1, 37, 200)) -> list[dict[str, Any]]:
    """Emit in batches of varying size; the published payloads in order."""
    i = k = 0
    while i < len(events):
        n = sizes[k % len(sizes)]
        node.emit(events[i:i + n])
        i, k = i + n, k + 1
    return [json.loads(r.payload) for r in node.spool.peek(1 << 20, channel="events")]


def _reference(payloads: list[dict[str, Any]], names: RelayNames) -> tuple[list[int], Any, dict[str, int]]:
    """What ``route_intervals`` flags on the deliveries the collector can track (payloads it accepts),
    computed here from the payloads alone: indices of the flagged ones, the result, route ids."""
    ids: dict[str, int] = {}
    seeds: list[int] = []
    idx, rids, vs = [], [], []
    for i, p in enumerate(payloads):
        f = p["fields"]
        if p["kind"] != "delivery" or f["relay"] in (None, "none") or f["delay"] is None or P.check_event(p):
            continue
        route, v = names.name(f["relay"]), route_latency(f["delay"])
        if route not in ids:
            if len(ids) == R4.r:
                continue
            ids[route] = len(ids)
            seeds.append(route_seed(v << ADAPT_FRAC))
            continue
        idx.append(i)
        rids.append(ids[route])
        vs.append(v)
    return idx, route_intervals(rids, vs, seeds, seeds, ROUTE_CONFIG), ids


def _check_against_reference(node: Node, payloads: list[dict[str, Any]], least: int = 100) -> None:
    idx, ref, ids = _reference(payloads, RelayNames(NAMES))
    flagged = [i for i, p in enumerate(payloads) if "below" in p]
    assert flagged == idx and len(idx) > least
    assert [payloads[i]["below"] for i in idx] == [bool(b) for b in ref.below]
    assert [payloads[i]["above"] for i in idx] == [bool(a) for a in ref.above]
    assert ref.below.sum() > 0 and ref.above.sum() > 0
    assert node.scorer is not None
    lower, upper = node.scorer.route_bounds()
    n = len(ids)
    assert lower[:n].tolist() == ref.lower.tolist() and upper[:n].tolist() == ref.upper.tolist()
    assert lower[n:].tolist() == upper[n:].tolist() == [0] * (R4.r - n)     # never seeded, never fed
    assert node.routes is not None and set(node.routes.table.ids) == {f"lab/n1|{r}" for r in ids}
    for p in payloads:
        assert P.check_event(p) is None or p["fields"]["delay"] is None or abs(p["fields"]["delay"]) > 1e9


def _collector(tmp_path: Path, payloads: list[dict[str, Any]], doctor: int | None = None) -> Collector:
    """A collector (no MQTT: its ingest driven directly) that receives the node's payloads in envelopes of
    200 (``doctor``: that payload's flags flipped first)."""
    cfg, errors = parse_config({"archive": {"dir": str(tmp_path / "archive"), "max_age_s": 3600.0, "fsync": False},
                                "web": {"enabled": False}, "relays": {"names": NAMES}}, "test")
    assert cfg is not None, errors
    col = Collector(cfg)
    sent = [dict(p) for p in payloads]
    if doctor is not None:
        sent[doctor].update(above=not sent[doctor]["above"], below=False)
    for i in range(0, len(sent), 200):
        body = json.dumps({"schema": 1, "site": "lab", "node": "n1", "events": sent[i:i + 200]}).encode()
        col.on_batch(col.processor.process([Message(T.NodeTopics("lab", "n1").events, body, time.time(), qos=1)]))
    return col


def _evidence(col: Collector) -> dict[str, list[int]]:
    """The correlation's interval counts per route at the root, summed over its buckets:
    ``[deliveries with a side, above, below]``."""
    iv: dict[str, list[int]] = {}
    for bk in col.correlator.buckets[("*",)].values():
        for route, c in bk.iv.items():
            iv[route] = [a + b for a, b in zip(iv.get(route, [0, 0, 0]), c, strict=True)]
    return iv


def _metric(metrics: Metrics, name: str, side: str | None = None) -> float:
    text = generate_latest(metrics.registry).decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and (side is None or s.labels.get("side") == side))


def test_model_backend_node_publishes_the_reference_flags(tmp_path: Path) -> None:
    node = build_node(_cfg(tmp_path / "state"), routes=ROUTE_CONFIG)
    try:
        assert node.scorer is not None and node.scorer.identify().params.r == 4
        payloads = _feed(node, _events(900, 1, relays=6))
        _check_against_reference(node, payloads)
        status = node.sink.status_payload()
        assert P.check_status(status) is None, P.check_status(status)
        st = status["route_intervals"]
        assert st["tracked"] == st["capacity"] == 4 and st["seeded"] == 4
        # the fifth relay found the table full: untracked, counted, its deliveries carry no flags
        fifth = [p for p in payloads if p["fields"].get("relay") == RELAYS[5] and p["fields"]["delay"] is not None
                 and abs(p["fields"]["delay"]) <= 1e9]
        assert fifth and st["untracked"] == len(fifth) and not any("below" in p for p in fifth)
        assert st["fed"] == sum("below" in p for p in payloads)
        # hostile delays: NaN and infinity are null in the payload and not fed; negative is the floor
        hostile = {p["fields"]["queue_id"]: p for p in payloads if p["kind"] == "delivery"}
        for i in range(5, 900, 17):
            p = hostile[f"Q{i}"]
            if p["fields"]["delay"] is None or abs(p["fields"]["delay"]) > 1e9:
                assert "below" not in p
        assert P.check_event(hostile["Q56"]) is not None        # 1e300 s: the collector quarantines it
        assert hostile["Q5"]["fields"]["delay"] is None and hostile["Q39"]["fields"]["delay"] is None   # NaN, inf
        assert hostile["Q22"]["fields"]["delay"] == -3.0 and "below" in hostile["Q22"]   # fed as the 10 ms floor
        assert hostile["Q73"]["fields"]["delay"] == 0.0 and "below" in hostile["Q73"]
        assert not any("below" in p for p in payloads if p["kind"] != "delivery")
    finally:
        node.stop()


def test_collector_counts_the_node_flags_and_their_disagreements(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The collector's ingest (validation, de-duplication, archive) and service path on the node's
    payloads: its own tracker agrees with every flag, /metrics counts the node's misses by side."""
    node = build_node(_cfg(tmp_path / "state"), routes=ROUTE_CONFIG)
    try:      # the last 700 s: within the correlation's history
        payloads = _feed(node, _events(700, 2, relays=6, t0=time.time() - 700))
    finally:
        node.stop()
    col = _collector(tmp_path / "c1", payloads)
    try:
        book, metrics = col.intervals, col.metrics
        flagged = sum("below" in p for p in payloads)
        assert book.node_flags == flagged and book.disagreements == 0
        assert _metric(metrics, "mailpulse_route_interval_disagreements_total") == 0
        assert _metric(metrics, "mailpulse_route_interval_node_flags_total") == flagged
        for side in ("above", "below"):      # the node's misses, counted by side as the tracker's are
            misses = sum(p.get(side) is True and not (side == "below" and p.get("above")) for p in payloads)
            assert misses > 0 and _metric(metrics, "mailpulse_route_interval_node_flags_total", side) == misses
        assert col.state.stats["quarantined"] == sum(P.check_event(p) is not None for p in payloads) > 0
        # the correlation's evidence (interval misses per route, every tree node) counts the node's flags
        iv = _evidence(col)
        assert node.routes is not None
        for route in node.routes.table.ids:
            on = [p for p in payloads if "below" in p and f"lab/n1|{RelayNames(NAMES).name(p['fields']['relay'])}"
                  == route]
            assert iv[route] == [len(on), sum(p["above"] for p in on),
                                 sum(p["below"] and not p["above"] for p in on)], route
    finally:
        col.stop()
    # one doctored flag: one disagreement, counted and said in one sentence
    doctored = next(i for i, p in enumerate(payloads) if p.get("below") is False and p.get("above") is False)
    with caplog.at_level(logging.WARNING, logger="mailpulse.collector.intervals"):
        col = _collector(tmp_path / "c2", payloads, doctor=doctored)
    try:
        assert col.intervals.disagreements == 1
        assert _metric(col.metrics, "mailpulse_route_interval_disagreements_total") == 1
        route = f"lab/n1|{RelayNames(NAMES).name(payloads[doctored]['fields']['relay'])}"
        assert _evidence(col)[route][1] == iv[route][1] + 1      # the node's (doctored) flag, not the tracker's
    finally:
        col.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "mailpulse.collector.intervals"]
    assert len(said) == 1 and "above its interval by the node's core but inside it" in said[0]
    assert "\n" not in said[0]


def test_a_model_reload_keeps_the_bounds_and_the_flags_stay_exact(tmp_path: Path) -> None:
    """A model from the model topic (trained for ``small``: R is no part of a model) is loaded with the
    route registers and committed; the bounds and the route table carry on (a COMMIT leaves
    ``ROUTE_BOUND`` alone), so the flags after it are still the reference's."""
    node = build_node(_cfg(tmp_path / "state"), routes=ROUTE_CONFIG)
    try:
        events = _events(600, 3)
        _feed(node, events[:250])
        assert node.scorer is not None
        before = [b.tolist() for b in node.scorer.route_bounds()]
        base = untrained_model("small")
        cfg = base.config
        model = TrainedModel(base.params, str(F.SCHEMA_VERSION), InputScaling.identity(base.params.d), cfg.weights,
                             cfg.offsets, cfg.shifts, cfg.tables + 1, 4242, cfg.tables.astype(float), 1.0,
                             {"version": "reload-1"})
        version = node._install_model(model.save(tmp_path / "m.json").read_bytes())
        assert version == "reload-1" and node.scoring.config.threshold == 4242
        assert [b.tolist() for b in node.scorer.route_bounds()] == before
        payloads = _feed(node, events[250:])
        assert {p["score"] for p in payloads[-300:]} == {base.params.k}        # the new tables score
        _check_against_reference(node, payloads)
    finally:
        node.stop()


def test_a_clean_restart_restores_the_routes_and_no_flag_changes(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A clean stop saves the table and the bounds; the next start (a fresh core, bounds 0) seeds them
    back, so the flags over both runs are those of one uninterrupted run.  A saved file that is not
    usable is one sentence, and the routes are seeded afresh."""
    cfg = _cfg(tmp_path / "state")
    events = _events(500, 8, relays=6)
    node = build_node(cfg, routes=ROUTE_CONFIG)
    try:
        _feed(node, events[:200])
    finally:
        node.stop()
    saved = json.loads(node.routes_file.read_text())
    assert node.routes is not None and [r[0] for r in saved["routes"]] == list(node.routes.table.ids)
    node = build_node(cfg, routes=ROUTE_CONFIG)
    try:
        assert node.routes is not None and node.routes.status()["restored"] == 4
        assert not node.routes_file.exists()                 # a crash from here on must not restore it
        payloads = _feed(node, events[200:])                 # the spool holds both runs' events
        assert len(payloads) == len(events)
        _check_against_reference(node, payloads)
    finally:
        node.stop()
    node.routes_file.write_text('{"format": "mailpulse-route-intervals-1", "capacity": 4, "routes": [["r", -1, 0]]}')
    with caplog.at_level(logging.ERROR, logger="mailpulse.pi_firmware.routefeed"):
        node = build_node(cfg, routes=ROUTE_CONFIG)
    try:
        said = [r.getMessage() for r in caplog.records if r.name == "mailpulse.pi_firmware.routefeed"]
        assert len(said) == 1 and "seeded afresh" in said[0] and "\n" not in said[0]
        assert node.routes is not None and len(node.routes.table) == 0 and not node.routes_file.exists()
    finally:
        node.stop()


def test_a_core_without_routes_changes_nothing(tmp_path: Path) -> None:
    node = build_node(_cfg(tmp_path / "state", "small"), routes=ROUTE_CONFIG)
    try:
        assert node.scorer is None and node.routes is None
        payloads = _feed(node, _events(60, 4))
        assert payloads and not any("below" in p or "above" in p for p in payloads)
        assert "route_intervals" not in node._status()
    finally:
        node.stop()


def test_a_core_with_routes_but_no_registers_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        node = build_node(_cfg(tmp_path / "state"))
    try:
        assert node.routes is None and "no route registers" in node.errors["routes"]
        assert not any("below" in p for p in _feed(node, _events(40, 5)))
    finally:
        node.stop()


def test_replay_feeds_routes_like_the_live_node(tmp_path: Path) -> None:
    """``node replay`` of a Postfix log on a ``small-r4`` model backend: the deliveries carry the flags
    ``route_intervals`` gives on them (nine relays, four routes tracked, the rest untracked), and the live
    node fed the same deliveries publishes the same flags."""
    log = tmp_path / "maillog"
    log.write_text("".join(generate(6000, seed=5)))
    sink = ListSink()
    s = replay(log, sink, node="n1", site="lab", params="small-r4", year=2026, batch_size=300, routes=ROUTE_CONFIG,
               relay_names=NAMES)
    payloads = [json.loads(e.payload_json()) for e in sink.items]
    idx, ref, ids = _reference(payloads, RelayNames(NAMES))
    assert [i for i, p in enumerate(payloads) if "below" in p] == idx and len(idx) > 300
    assert [payloads[i]["below"] for i in idx] == [bool(b) for b in ref.below]
    assert [payloads[i]["above"] for i in idx] == [bool(a) for a in ref.above]
    assert ref.below.sum() > 0 and ref.above.sum() > 0 and len(ids) == R4.r
    ri = s.route_intervals
    assert ri is not None and ri["fed"] == len(idx) and ri["tracked"] == ri["seeded"] == R4.r and ri["untracked"] > 0
    assert s.line().endswith(f" route_fed {len(idx)} route_tracked 4 route_untracked {ri['untracked']}")
    node = build_node(_cfg(tmp_path / "state"), routes=ROUTE_CONFIG)
    try:
        live = _feed(node, list(sink.items), sizes=(300,))
    finally:
        node.stop()
    assert [(p.get("below"), p.get("above")) for p in live] == [(p.get("below"), p.get("above")) for p in payloads]
    with pytest.raises(UserError, match="no route registers"):
        replay(log, ListSink(), params="small-r4", year=2026)


def test_hostile_flags_are_quarantined_with_one_sentence() -> None:
    good = {"schema": 1, "kind": "delivery", "id": "e1", "node": "n1", "ts": "2026-01-01T00:00:00Z", "x": [0],
            "fields": {"relay": "mx[1.2.3.4]:25", "delay": 1.0}, "below": False, "above": True}
    assert P.check_event(good) is None
    for bad in ({"below": "yes"}, {"above": 1}, {"below": None, "above": [True]}):
        problem = P.check_event(dict(good, **bad))
        assert problem is not None and problem.reason == "verdict" and "\n" not in problem.detail
    # a flag without its partner is no node flag: the collector keeps its own tracker's side
    book = IntervalBook()
    for i in range(3):
        book.observe(dict(good, site="lab", below=None, id=f"e{i}"), float(i))
    assert book.node_flags == 0 and book.disagreements == 0


@pytest.mark.xdist_group("rtl_identity")
@pytest.mark.parametrize(("top", "n"), [("axi", 160)])
def test_sim_backend_node_publishes_the_same_flags(tmp_path: Path, top: str, n: int) -> None:
    """The simulated RTL behind the node: the AXI top carries the route events in its stream beats; the
    flags equal the model backend's.  (The SPI top's ``ROUTE`` writes before each push are checked
    bit-exact in ``test_bridge_routes.py``; behind the node it would add 25 s of simulator start.)"""
    pytest.importorskip("cocotb", reason="cocotb is not installed")
    if not have_simulator("icarus"):
        pytest.skip("icarus is not installed")
    from mailpulse.host_bridge.backends.sim import SimScorer

    scorer: Scorer = SimScorer(R4, simulator="icarus", top=top)
    node = Node(_cfg(tmp_path / "sim"), model=untrained_model("small-r4"), scorer=scorer, routes=ROUTE_CONFIG)
    try:
        sim = _feed(node, _events(n, 6), sizes=(1, 60))
        _check_against_reference(node, sim, least=n // 3)
    finally:
        node.stop()
        scorer.close()
    ref = build_node(_cfg(tmp_path / "model"), routes=ROUTE_CONFIG)
    try:
        model = _feed(ref, _events(n, 6), sizes=(1, 60))
    finally:
        ref.stop()
    assert [(p.get("below"), p.get("above")) for p in sim] == [(p.get("below"), p.get("above")) for p in model]
