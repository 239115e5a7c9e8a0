"""Hostile payloads against the collector: validation and quarantine,
archive readers that skip and count, bounded metrics, ``/api/state`` and memory, and identity
(de-duplication per node, Home Assistant topics that cannot collide).

The ingest is driven through :class:`IngestProcessor` and :meth:`Collector.on_batch` directly
(what :class:`MqttIngest` does with every MQTT batch), so each test needs no broker.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from collector_synth import stream
from hypothesis import given, settings
from hypothesis import strategies as st
from mailpulse.collector.archive import ArchiveWriter, closed_segments, read_segment
from mailpulse.collector.ingest import Message
from mailpulse.collector.retrain import retrain_from_archive
from mailpulse.collector.service import Collector
from prometheus_client.parser import text_string_to_metric_families
from server_fixtures import secure_web

from mailpulse import features as F
from mailpulse import topics as T
from mailpulse.config.collector import parse_config
from mailpulse.lab.webclient import WebClient

ROOT = Path(__file__).resolve().parent.parent


def delivery(i: int, node: str = "node-a", anomaly: bool = False, **over: Any) -> dict[str, Any]:
    ev = {"schema": 1, "kind": "delivery", "id": f"{node}-{i:06d}", "node": node,
          "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
          "fields": {"host": "edge", "relay": "mx.example.net[10.0.0.1]:25", "status": "sent", "delay": 1.5,
                     "delays": [0.1, 0.2, 0.3, 0.9]},
          "x": [i % 100, 1, 2, 3, 4, 5, 6, 7], "score": 900 if anomaly else 5, "anomaly": anomaly, "argmax": 0}
    ev.update(over)
    return ev


def envelope(node: str, events: list[Any], site: str = "lab") -> bytes:
    return json.dumps({"schema": 1, "site": site, "node": node, "events": events}).encode()


def message(node: str, events: list[Any], site: str = "lab", channel: str = "events") -> Message:
    return Message(T.NodeTopics(site, node).channel(channel), envelope(node, events, site), time.time(), qos=1)


def collector(tmp_path: Path, web: bool = False) -> Collector:
    """A collector without MQTT; with ``web`` its dashboard as ``collector init`` sets it up (HTTPS,
    passwords; the CA in ``tmp_path/web/ca.crt``, see :func:`dashboard`)."""
    cfg, errors = parse_config({"archive": {"dir": str(tmp_path / "archive"), "max_age_s": 3600.0, "fsync": False},
                                "metrics": {"label_values": 20}, "web": {"enabled": False}}, "test")
    assert cfg is not None, errors
    if web:
        (tmp_path / "web").mkdir(exist_ok=True)
        cfg.web, _ = secure_web(tmp_path / "web")
    return Collector(cfg)


def dashboard(col: Collector, tmp_path: Path) -> WebClient:
    """An HTTPS client of :func:`collector`'s dashboard with the dashboard credential."""
    assert col.web is not None
    return WebClient.dashboard(col.web.url, col.cfg.web, tmp_path / "web" / "ca.crt")


def feed(col: Collector, *msgs: Message) -> Any:
    batch = col.processor.process(msgs)
    col.on_batch(batch)
    return batch


def samples(col: Collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = col.metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def quarantine_records(col: Collector) -> list[dict[str, Any]]:
    col.processor.close()
    return [r for seg in closed_segments(col.archive.folder / "quarantine") for r in read_segment(seg)]


def test_one_bad_event_never_blinds_the_others(tmp_path: Path) -> None:
    """Finding 1: ``"fields": "oops"`` and ``"ts": NaN`` before 20 anomalous events."""
    col = collector(tmp_path)
    good = [delivery(i, anomaly=True) for i in range(20)]
    raw = envelope("node-a", [delivery(900, fields="oops"), delivery(901, ts=float("nan")), *good])
    assert b'"ts": NaN' in raw
    batch = feed(col, Message(T.NodeTopics("lab", "node-a").events, raw, time.time(), qos=1))
    assert len(batch.events) == 20
    assert sorted(r for _, _, r in batch.quarantined) == ["fields", "ts"]
    # counters, metrics, dashboard and correlation all saw the 20
    m = samples(col)
    assert m[("mailpulse_events_total", (("kind", "delivery"), ("node", "node-a"), ("site", "lab")))] == 20
    assert sum(v for (n, _), v in m.items() if n == "mailpulse_anomalies_total") == 20
    assert m[("mailpulse_ingest_quarantined_total", (("node", "node-a"), ("reason", "fields"), ("site", "lab")))] == 1
    assert m[("mailpulse_ingest_quarantined_total", (("node", "node-a"), ("reason", "ts"), ("site", "lab")))] == 1
    snap = col.state.snapshot()
    assert snap["stats"]["events"] == 20 and snap["stats"]["anomalies"] == 20 and len(snap["anomalies"]) == 20
    assert {(q["reason"], q["count"]) for q in snap["quarantine"]} == {("fields", 1), ("ts", 1)}
    assert col.correlator.observed == 20
    # the quarantine keeps both with reason and sentence; the archive holds the 20 only
    recs = quarantine_records(col)
    assert sorted(r["reason"] for r in recs) == ["fields", "ts"]
    assert all(r["detail"] and r["site"] == "lab" and r["node"] == "node-a" for r in recs)
    assert next(r for r in recs if r["reason"] == "fields")["payload"]["fields"] == "oops"


def _old_archive(folder: Path, n: int = 80) -> None:
    """An archive as the collector wrote it before validating: bad lines between good ones."""
    evs = [dict(e, schema=F.SCHEMA_VERSION, received=e.get("received", 1_790_000_000.0 + i * 0.05))
           for i, e in enumerate(stream(n / 20, seed=3, nodes=("node-a",)))]
    lines = [json.dumps(e).encode() for e in evs]
    lines.insert(3, json.dumps(dict(evs[0], id="bad-1", fields="oops")).encode())
    lines.insert(7, json.dumps(dict(evs[0], id="bad-2", x=None)).encode())
    lines.insert(9, b'{"id": "bad-3", "ts": NaN}')
    lines.insert(11, b'{"truncated')
    with ArchiveWriter(folder, fsync=False) as w:
        w.write_lines(lines)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailpulse", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def test_correlate_and_train_skip_and_count_bad_archive_entries(tmp_path: Path) -> None:
    """Finding 1, afterwards: ``correlate --archive`` and ``train --archive`` on such an archive, and retraining."""
    arch = tmp_path / "archive"
    _old_archive(arch)
    r = _cli("correlate", "--archive", str(arch))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith("80 events"), r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "skipped 4 entries" in lines[0], r.stderr
    assert "fields 1" in lines[0] and "x 1" in lines[0] and "not_json 1" in lines[0]
    r = _cli("train", "--archive", str(arch), "--config", "small", "--feature-schema", str(F.SCHEMA_VERSION), "--quiet",
             "--out", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "skipped 4 entries" in r.stderr
    assert "trained on 80 samples" in r.stdout
    skipped: collections.Counter[str] = collections.Counter()
    _, guard = retrain_from_archive(arch, None, skipped=skipped)
    assert sum(skipped.values()) == 4 and guard.samples > 0


def test_label_cardinality_is_capped(tmp_path: Path) -> None:
    """Finding 3: 3,000 distinct status and route strings in one message."""
    col = collector(tmp_path)
    feed(col, message("node-a", [delivery(0)]))
    base = len(samples(col))
    ts = delivery(0)["ts"]
    evs = [{"schema": 1, "kind": "delivery", "id": f"d{i}", "node": "node-a", "ts": ts, "x": [1],
            "fields": {"status": f"st-{i}"}} for i in range(3000)]
    probes = [{"schema": 1, "kind": "probe", "id": f"p{i}", "node": "node-a", "ts": ts, "x": [1], "anomaly": True,
               "fields": {"route": f"r{i}", "outcome": f"o{i}", "latency_ms": 10.0}} for i in range(3000)]
    batch = feed(col, message("node-a", evs), message("node-a", probes))
    assert len(batch.events) == 6000, batch.quarantined[:3]
    m = samples(col)
    assert len(m) - base < 1000, f"{len(m) - base} new series"   # bounded (the issue: 28,000)
    folded = {dict(k)["label"]: v for (n, k), v in m.items() if n == "mailpulse_metrics_labels_folded_total"}
    assert folded["status"] >= 3000 - 20 and folded["route"] >= 3000 - 20 and folded["outcome"] >= 3000 - 20
    other = ("postfix_smtp_messages_processed_total", (("node", "node-a"), ("site", "lab"), ("status", "other")))
    assert m[other] > 2900


def test_a_10_mb_event_costs_bounded_memory_and_state(tmp_path: Path) -> None:
    """Finding 3: a 10 MB event (a valid shape with one huge string) and /api/state after hostile input."""
    col = collector(tmp_path, web=True)
    assert col.web is not None
    col.web.start()
    try:
        huge = delivery(1, fields={"host": "h" * (10 << 20), "status": "sent"})
        msg = message("node-a", [huge])
        many = message("node-a", [delivery(i, anomaly=True, fields={"host": "x" * 8000, "relay": "r" * 8000,
                                                                    "status": "sent"}) for i in range(2, 40)])
        tracemalloc.start()
        try:
            batch = feed(col, msg)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert batch.events == [] and [r for *_, r in batch.quarantined] == ["too_large"]
        assert peak < 4 << 20, f"peak {peak / 1e6:.1f} MB while refusing a 10 MB message"
        feed(col, many)
        # node-sent probe routes, statuses and nodes fill every table to its limit
        for n in range(120):
            node = f"n{n:03d}"
            feed(col, message(node, [{"schema": 1, "kind": "probe", "id": f"p{n}-{k}", "node": node, "ts": None,
                                      "x": [1] * 8, "anomaly": True, "fields": {"route": f"{'r' * 60}{k}"}}
                                     for k in range(50)]),
                 Message(T.NodeTopics("lab", node).status, json.dumps(
                     {"schema": 1, "site": "lab", "node": node, "state": "online", "ts": time.time(),
                      "version": "v" * 250, "model_version": "m" * 250, "extra": ["x" * 8000] * 10}).encode(),
                     time.time()))
        status, body = dashboard(col, tmp_path).request("api/state")
        assert status == 200
        assert len(body) < 1 << 20, f"/api/state is {len(body)} bytes"
        state = json.loads(body)
        assert len(state["probes"]) <= 200 and len(state["anomalies"]) <= 50
        assert all(len(str(v)) <= 200 for a in state["anomalies"] for v in a.values())
    finally:
        col.web.stop()
    rec = quarantine_records(col)[0]
    assert rec["reason"] == "too_large" and len(rec["head"]) <= 4096 and rec["bytes"] > 10 << 20


def test_dedup_is_per_node(tmp_path: Path) -> None:
    """Finding 4: node A publishing an id first must not make node B's event with that id vanish."""
    col = collector(tmp_path)
    a = delivery(1, node="node-a", id="same-id")
    b = delivery(1, node="node-b", id="same-id", anomaly=True)
    feed(col, message("node-a", [a]))
    batch = feed(col, message("node-b", [b]))
    assert [e["node"] for e in batch.events] == ["node-b"] and batch.duplicates == 0
    assert col.state.snapshot()["anomalies"][0]["node"] == "node-b"
    # the same id from the same node is still a duplicate, also after a restart (the archive index)
    assert feed(col, message("node-b", [b])).duplicates == 1
    col.stop()
    col2 = collector(tmp_path)
    assert col2.indexed == 2
    assert feed(col2, message("node-a", [a]), message("node-b", [b])).duplicates == 2
    col2.stop()


def test_events_must_name_the_topics_node(tmp_path: Path) -> None:
    col = collector(tmp_path)
    batch = feed(col, message("node-a", [delivery(1, node="node-b")]),
                 Message(T.NodeTopics("lab", "node-a").events, envelope("node-b", [delivery(2, node="node-b")]),
                         time.time()))
    assert batch.events == [] and [r for *_, r in batch.quarantined] == ["node_mismatch", "node_mismatch"]


def test_home_assistant_topics_cannot_collide() -> None:
    """Finding 4: site ``lab_x``/node ``y`` and site ``lab``/node ``x_y`` had one discovery topic."""
    a, b = T.NodeTopics("lab_x", "y"), T.NodeTopics("lab", "x_y")
    assert a.ha_object() != b.ha_object()
    assert not set(T.ha_discovery("lab_x", "y")) & set(T.ha_discovery("lab", "x_y"))
    assert T.NodeTopics("lab", "node-a").ha_object() == "mailpulse_lab_node-a"   # ids without "_": unchanged
    # every pair of ids of up to 3 characters over an alphabet with the separator
    ids = ["".join(p) for n in (1, 2, 3) for p in itertools.product("a_1", repeat=n)]
    objs = {T.NodeTopics(s, n).ha_object() for s in ids for n in ids}
    assert len(objs) == len(ids) ** 2


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
       st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True))
def test_home_assistant_objects_are_injective(s1: str, n1: str, s2: str, n2: str) -> None:
    if (s1, n1) != (s2, n2):
        assert T.NodeTopics(s1, n1).ha_object() != T.NodeTopics(s2, n2).ha_object()


def test_quarantine_survives_messages_that_are_not_json_or_too_deep(tmp_path: Path) -> None:
    col = collector(tmp_path)
    t = T.NodeTopics("lab", "node-a").events
    msgs = [Message(t, b"\xff\xfe not json", time.time()), Message(t, b"[" * 100_000 + b"]" * 100_000, time.time()),
            Message(t, b'{"schema": 1, "site": "lab", "node": "node-a", "events": {"a": 1}}', time.time()),
            Message(t, envelope("node-a", [1, "two", None, [3]]), time.time()),
            Message(t, envelope("node-a", [delivery(1, fields={"host": "\udc80"})]), time.time()),
            Message("mailpulse/v1/lab/bad id/events", b"{}", time.time()),
            Message(T.NodeTopics("lab", "node-a").status, b'{"schema": 1, "state": "online"}', time.time())]
    batch = feed(col, *msgs)
    assert [r for *_, r in batch.quarantined] == ["not_json", "not_json", "envelope", "not_object", "not_object",
                                                  "not_object", "not_object", "topic", "status"]
    assert len(batch.events) == 1      # a lone surrogate is a valid string: archived as an escape
    col.processor.close()
    seg = closed_segments(col.archive.folder)[0]
    assert b"\\udc80" in gzip.decompress(seg.read_bytes())
    assert len(quarantine_records(col)) == 9


def test_every_metric_is_documented(tmp_path: Path) -> None:
    col = collector(tmp_path)
    names = [line.split()[2] for line in col.metrics.exposition().decode().splitlines()
             if line.startswith("# HELP ")]
    doc = (ROOT / "docs" / "operations.md").read_text()
    # an unlabelled counter X_total or histogram X also exports X_created (its start time)
    missing = [n for n in names if not {f"`{n}`", f"`{n.removesuffix('_created')}_total`",
                                        f"`{n.removesuffix('_created')}`"} & {w for w in doc.split() if w}]
    assert len(names) > 30 and not missing, missing
