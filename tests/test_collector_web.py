"""The dashboard in a real browser (Debian's chromium driven by Playwright): live SSE updates after
events are published to a real broker, the incident with its root cause, and a screenshot kept in
``build/artifacts/``; each dashboard feature (time axes and zones, the incident page, acknowledging
and silencing, the topology, search) in its own test that saves the screenshot ``docs/img/`` shows."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from collector_synth import stream
from mailpulse.collector.ingest import Message
from mailpulse.collector.pki import spki_sha256
from mailpulse.collector.service import Collector
from server_fixtures import secure_web
from test_collector_hostile import collector, feed, message, samples
from test_collector_ingest import collector_cfg, delivery, envelope, node_client, publish, web_client

from mailpulse import topics as T
from mailpulse.config.collector import parse_config
from mailpulse.lab.webclient import WebClient

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "artifacts"
SHOTS = ROOT / "docs" / "img"
#: the relay names of the fault-stream collector (collector_synth's topology)
NAMES = {"relay2.example.net": "relay2", "relay1.example.net": "relay1", "mx.example.net": "mx"}
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.xdist_group("collector-mqtt")


def test_dashboard_live_in_chromium(broker: Any, tmp_path: Path) -> None:
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")
    cfg = collector_cfg(broker, tmp_path)
    col = Collector(cfg)
    col.start()
    node = node_client(broker, "node-a")
    topic = T.NodeTopics("lab", "node-a")
    try:
        assert col.ingest.wait_connected()
        assert col.web is not None
        web = web_client(col)
        assert WebClient(col.web.url, web.ca_file).request("")[0] == 401
        # the SSE stream speaks text/event-stream and starts with the state
        with web.open("events", timeout=5) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            assert r.readline().startswith(b"retry:")
            assert r.readline() == b"event: state\n"
        publish(node, topic.status, json.dumps({"schema": 1, "site": "lab", "node": "node-a", "state": "online",
                                                "ts": time.time(),
                                                "model_version": "m-test", "spool": {"depth": 3}}).encode(),
                retain=True)
        with sync_api.sync_playwright() as pw:
            # HTTPS with the deployment's own CA: chromium trusts exactly the dashboard's key (pinned),
            # and logs in with basic auth like a person would
            assert col.cfg.web.cert_file is not None
            pin = spki_sha256(Path(col.cfg.web.cert_file).read_bytes())
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=[*ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
            try:
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000},
                                          http_credentials={"username": web.user or "", "password": web.password or ""})
                page = ctx.new_page()
                page.goto(col.web.url)
                page.wait_for_function("() => document.getElementById('conn').textContent === 'live'", timeout=15000)
                page.wait_for_selector("#fleet td.online", timeout=10000)
                # one anomalous event -> its row appears, pushed (no reload)
                ev = delivery(1, anomaly=True)
                ev["id"] = "live-anomaly-1"
                t0 = time.monotonic()
                publish(node, topic.events, envelope("node-a", [ev]))
                page.wait_for_selector('tr.anomaly[data-id="live-anomaly-1"]', timeout=10000)
                latency = time.monotonic() - t0
                probe = {"schema": 1, "kind": "probe", "id": "probe-1", "node": "node-a", "ts": ev["ts"],
                         "fields": {"route": "lossy", "probe_id": "p1", "outcome": "damaged", "latency_ms": 812.0,
                                    "integrity": {"psnr_db": 31.2, "intact": False},
                                    "hops": [{"from": "node-a.lan", "by": "edge.mailpulse.test", "delay_s": 0.4},
                                             {"from": "edge.mailpulse.test", "by": "mx.mailpulse.test",
                                              "delay_s": None}]},
                         "x": [812, 0, 0, 0, 0, 1, 1, 0], "score": 700, "anomaly": True, "argmax": 5}
                publish(node, topic.events, envelope("node-a", [probe]))
                page.wait_for_selector("#probes td:has-text('31.2')", timeout=10000)
                # a fault at relay2: the correlator opens an incident, the page shows its root cause
                batch: list[dict[str, Any]] = []
                for e in stream(900, seed=7, t0=time.time() - 900, fault="relay2.example.net", fault_from=600,
                                  nodes=("node-a",)):
                    batch.append(e)
                    if len(batch) == 500:
                        publish(node, topic.events, envelope("node-a", batch))
                        batch = []
                publish(node, topic.events, envelope("node-a", batch))
                end = time.monotonic() + 20
                while time.monotonic() < end and not col.correlator.open_by_path:
                    col.tick()
                    time.sleep(0.05)
                col.tick()
                assert col.correlator.open_by_path, "the correlator opened no incident within 20 s"
                # 1842 anomalies follow each other here: a page that falls behind gets a resync
                # snapshot (mailpulse.collector.web.Hub), so the incident shows even if its message was lost
                page.wait_for_selector("td.root-cause:has-text('relay2.example.net')", timeout=15000)
                page.wait_for_function("() => document.querySelector('#n-events').textContent !== '0'", timeout=5000)
                assert page.evaluate("window.mailpulseUpdates") > 3
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "collector-dashboard.png"), full_page=True)
            finally:
                browser.close()
        assert (ARTIFACTS / "collector-dashboard.png").stat().st_size > 10_000
        print(f"anomaly -> dashboard row in {latency * 1000:.0f} ms")
        assert latency < 5.0
    finally:
        col.stop()
        node.loop_stop()
        node.disconnect()


def test_dashboard_keeps_rendering_hostile_payloads(tmp_path: Path) -> None:
    """Finding 3: ``"ts": "yesterday"`` threw in the page's script and every viewer saw empty tables.

    Hostile events published by a node are quarantined (and the page shows the count); values
    that reach the page anyway (pushed straight into the SSE hub and the state, as a future field
    or a bug would) are shown as bad values while every other row and counter keeps rendering."""
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")
    col = collector(tmp_path, web=True)
    assert col.web is not None
    col.web.start()
    hostile_rows: list[tuple[str, Any]] = [
        ("anomaly", {"id": "h1", "ts": "yesterday", "score": {"a": 1}, "site": None, "node": ["x"],
                     "kind": "<img src=x onerror=window.pwned=1>", "route": 5}),
        ("anomaly", {"id": "h2", "ts": 1e308, "score": "NaN", "feature": {"nested": [1, 2]}}),
        ("anomaly", "not an object"),
        ("fleet", {"site": None, "node": 5, "state": ["x"], "ts": "yesterday", "clock_offset_s": "soon",
                   "spool_depth": "deep", "last_seen": {"t": 1}}),
        ("incident", {"id": "i-bad", "state": "open", "updated": "soon", "evidence": "oops", "opened": "yesterday",
                      "affected_nodes": "not a list", "severity": {"x": 1}, "root_cause": None}),
        ("probe", {"site": "lab", "node": "node-a", "route": {"r": 1}, "latency_ms": "slow", "psnr_db": "NaN"}),
        ("heatmap", {"rows": [{"hop": 5, "values": ["a", None, 1e308, -3]}, "junk", {"values": "x"}]}),
        ("stats", {"events": "many", "anomalies": None, "duplicates": [1], "quarantined": {"x": 1}}),
        ("health", {"link": "down", "quarantine": [{"site": 1, "node": None, "reason": "<b>", "count": "x"}, 5]}),
        ("incident", {"id": "i-ctx", "state": "open", "opened": 5, "updated": "x", "severity": "<b>x</b>",
                      "context": {"examples": [{"hops": "x", "t": "soon", "id": {"a": 1}}, 5], "relay": {"x": 1},
                                  "evidence": ["<img src=x onerror=window.pwned=1>"]},
                      "history": [{"t": "x", "kind": "<i>"}, 7], "evidence": {"example_event_ids": "nope",
                                                                            "window_s": "long"}}),
        ("topology", {"children": [{"name": "<img src=x onerror=window.pwned=1>", "children": "x", "rate": "NaN",
                                    "state": {"a": 1}, "key": None}, "junk", {"children": [{"name": 5}]}],
                      "truncated": "many"}),
        ("action", {"id": "i-ctx", "acked": "yesterday", "silenced_until": [1], "note": {"n": 1}}),
        ("action", ["not", "an", "object"]),
    ]
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            # HTTPS with a pinned key and basic auth, as in the live test
            assert col.cfg.web.cert_file is not None
            pin = spki_sha256(Path(col.cfg.web.cert_file).read_bytes())
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=[*ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
            try:
                web = col.cfg.web
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000},
                                          http_credentials={"username": web.username, "password": web.password or ""})
                page = ctx.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(col.web.url)
                page.wait_for_function("() => document.getElementById('conn').textContent === 'live'", timeout=15000)
                # a node publishes hostile events among valid ones: the valid ones show, the rest is counted
                good = [delivery(i, anomaly=True) for i in range(3)]
                for g in good:
                    g["id"] = f"good-{g['id']}"
                feed(col, message("node-a", [dict(good[0], ts="yesterday"), dict(good[1], fields="oops"),
                                             {"ts": "NaN"}, *good]),
                     Message(T.NodeTopics("lab", "node-a").status, b'{"ts": "yesterday"}', time.time()))
                col.check_health()
                for kind, data in hostile_rows:
                    col.hub.publish(kind, data)
                page.wait_for_selector('tr.anomaly[data-id="good-node-a-000002"]', timeout=10000)
                page.wait_for_selector('tr.anomaly[data-id="h1"]', timeout=10000)
                page.wait_for_selector("#quarantine tr.quarantine", timeout=10000)
                # another valid anomaly after the hostile ones still arrives and renders
                late = dict(delivery(9, anomaly=True), id="late-good")
                feed(col, message("node-a", [late]))
                page.wait_for_selector('tr.anomaly[data-id="late-good"]', timeout=10000)
                assert page.evaluate("document.getElementById('conn').textContent") == "live"
                assert page.evaluate("window.pwned") is None, "markup from a payload ran"
                assert page.locator('tr.anomaly[data-id="h1"] .bad').count() >= 1   # "yesterday" shown as bad
                assert page.locator("#incidents td.root-cause").count() >= 1
                assert page.evaluate("window.mailpulseRenderErrors || 0") == 0
                # a reload renders the snapshot (state), hostile rows stored in the state included
                with col.state.lock:
                    col.state.fleet["lab/weird"] = {"site": "lab", "node": "weird", "state": {"x": 1},
                                                    "ts": "yesterday", "clock_offset_s": [1]}
                page.reload()
                page.wait_for_function("() => document.getElementById('conn').textContent === 'live'", timeout=15000)
                page.wait_for_selector('tr[data-node="lab/weird"]', timeout=10000)
                page.wait_for_selector('tr.anomaly[data-id="late-good"]', timeout=10000)
                quarantined = page.evaluate("document.getElementById('n-quar').textContent")
                assert int(quarantined) == 4, quarantined
                # the incident page, the timeline, the topology and the filters of hostile values
                for kind, data in hostile_rows[-4:]:
                    col.hub.publish(kind, data)
                page.evaluate("location.hash = '#incident=i-ctx'")
                page.wait_for_selector("#incident-page h2:has-text('i-ctx')", timeout=10000)
                page.wait_for_selector("#topology svg", timeout=10000)
                page.select_option("#f-relay", "5")
                page.wait_for_function("() => document.querySelectorAll('#anomalies tbody tr.filtered-out').length",
                                       timeout=5000)
                assert page.evaluate("window.pwned") is None, "markup from a payload ran"
                assert page.evaluate("window.mailpulseRenderErrors || 0") == 0
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "collector-dashboard-hostile.png"), full_page=True)
            finally:
                browser.close()
    finally:
        col.web.stop()
    assert not errors, errors


# -- the dashboard's features, without a broker: events fed straight into a collector ----------------


def _collector(tmp_path: Path, alerts: bool = False) -> Collector:
    doc: dict[str, Any] = {"archive": {"dir": str(tmp_path / "archive"), "max_age_s": 3600.0, "fsync": False},
                           "web": {"enabled": False}, "relays": {"names": NAMES}}
    if alerts:
        doc["alerts"] = {"to": ["ops@example.net"], "sender": "mailpulse@example.net"}
    cfg, errors = parse_config(doc, "test")
    assert cfg is not None, errors
    (tmp_path / "web").mkdir(exist_ok=True)
    cfg.web, _ = secure_web(tmp_path / "web")
    return Collector(cfg, send=lambda m: None)


def fault_collector(tmp_path: Path, alerts: bool = False) -> Collector:
    """A collector (HTTPS, passwords, relay names) that saw 15 minutes of mail through
    collector_synth's relays, relay2 slow and anomalous for the last 5: one incident open at relay2."""
    col = _collector(tmp_path, alerts)
    feed(col, Message(T.NodeTopics("lab", "node-a").status, json.dumps(
        {"schema": 1, "site": "lab", "node": "node-a", "state": "online", "ts": time.time(), "model_version": "m-1",
         "spool": {"depth": 0}}).encode(), time.time()))
    batch: list[dict[str, Any]] = []
    for e in stream(900, rate=8, seed=7, t0=time.time() - 900, fault="relay2.example.net", fault_from=600,
                    nodes=("node-a",)):
        batch.append(e)
        if len(batch) == 500:
            feed(col, message("node-a", batch))
            batch = []
    feed(col, message("node-a", batch))
    col.evaluate()
    assert col.correlator.open_by_path, "no incident opened"
    return col


@contextlib.contextmanager
def browse(col: Collector, timezone: str = "UTC", expect_404: bool = False) -> Iterator[Any]:
    """A page of ``col``'s dashboard in headless chromium (pinned TLS key, basic auth) in ``timezone``;
    fails the test on a script error, a render error or a console error (but for a 404 the test
    asks for with ``expect_404``)."""
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")
    assert col.web is not None and col.cfg.web.cert_file is not None
    col.web.start()
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            pin = spki_sha256(Path(col.cfg.web.cert_file).read_bytes())
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=[*ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
            try:
                web = col.cfg.web
                ctx = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id=timezone,
                                          locale="en-US",
                                          http_credentials={"username": web.username, "password": web.password or ""})
                page = ctx.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not (
                    expect_404 and "status of 404" in m.text) else None)
                yield page
                assert page.evaluate("window.mailpulseRenderErrors || 0") == 0
            finally:
                browser.close()
    finally:
        col.web.stop()
    assert not errors, errors


def live(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => document.getElementById('conn').textContent === 'live'", timeout=15000)


def shot(page: Any, name: str, selector: str | None = None) -> Path:
    """A screenshot for docs/img (of one element when ``selector`` is given), kept small."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    if selector:
        page.locator(selector).screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))
    assert 5_000 < path.stat().st_size < 400_000, path.stat().st_size
    return path


def test_times_in_the_viewers_zone_and_charts_with_axes_legend_names(tmp_path: Path) -> None:
    """Every time shows its date in the viewer's zone (named in the header); the heatmap has a time
    axis in that zone, a colour legend in seconds and its rows named by ``[relays] names``."""
    col = fault_collector(tmp_path)
    inc = col.correlator.open_incidents()[0]
    zone = "Asia/Tokyo"
    with browse(col, zone) as page:
        assert col.web is not None
        live(page, col.web.url)
        assert page.locator("#tz").text_content() == "Asia/Tokyo (GMT+9)"
        cell = page.locator(f'#incidents tr[data-id="{inc["id"]}"] time')
        expected = datetime.fromtimestamp(inc["opened"], ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        assert cell.text_content() == expected
        assert cell.get_attribute("title", timeout=5000).endswith(" UTC")
        page.wait_for_function("() => window.mailpulseDrawn && window.mailpulseDrawn.heatmap", timeout=5000)
        drawn = page.evaluate("window.mailpulseDrawn.heatmap")
        # rows by relay name, the path in names beside them; no raw host name as a row's name
        assert "relay2" in drawn["rows"] and "relay1" in drawn["rows"], drawn["rows"]
        assert "mx > relay2" in drawn["paths"], drawn["paths"]
        # the time axis: ticks in Tokyo time, the zone named; the legend in seconds
        heat = col.state.heatmap
        t_end = heat["t0"] + len(heat["rows"][0]["values"]) * heat["bucket_s"]
        assert len(drawn["ticks"]) >= 3
        for t, label in drawn["ticks"]:
            assert heat["t0"] <= t <= t_end
            assert label == datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%H:%M:%S" if len(label) > 5
                                                                                else "%H:%M"), (t, label)
        assert drawn["axis"] == "time (Asia/Tokyo (GMT+9))"
        assert all(t.endswith(" s") for t in drawn["legend"]) and drawn["legend_title"].startswith("median delay (s")
        shot(page, "dashboard-overview.png")
        shot(page, "dashboard-heatmap.png", "canvas#heatmap")


def more_fault_events(col: Collector, seconds: float = 40, prefix: str = "late") -> None:
    """``seconds`` more of the fault (new event ids), ending now."""
    batch = [dict(e, id=f"{prefix}-{e['id']}") for e in stream(seconds, rate=8, seed=11, t0=time.time() - seconds,
                                                                 fault="relay2.example.net", nodes=("node-a",))]
    feed(col, message("node-a", batch))


def test_evidence_of_open_incidents_is_pushed_at_a_bounded_rate(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    col = fault_collector(tmp_path)
    pushed: list[dict[str, Any]] = []
    publish_ = col.hub.publish

    def publish(kind: str, data: Any) -> None:
        if kind == "incident":
            pushed.append(data)
        publish_(kind, data)

    monkeypatch.setattr(col.hub, "publish", publish)
    iid = col.correlator.open_incidents()[0]["id"]
    more_fault_events(col)
    col.evaluate()
    assert pushed == []           # the opening was pushed less than EVIDENCE_PUSH_S ago
    monkeypatch.setattr("mailpulse.collector.service.EVIDENCE_PUSH_S", 0.0)
    col.evaluate()
    assert [p["id"] for p in pushed] == [iid]
    assert pushed[0]["history"][0]["kind"] == "opened" and len(pushed[0]["history"]) == 1  # no new history point
    assert pushed[0]["context"]["relay"] == "relay2" and pushed[0]["context"]["examples"]
    monkeypatch.setattr("mailpulse.collector.service.EVIDENCE_PUSH_S", 3600.0)
    col.evaluate()
    assert len(pushed) == 1       # bounded: not again within EVIDENCE_PUSH_S


def test_incident_page_timeline_live_evidence_and_its_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``#incident=<id>`` (the alert mail's link) opens the incident's page; its evidence follows the
    SSE stream without a reload; its example events link to the event search; the timeline shows it."""
    monkeypatch.setattr("mailpulse.collector.service.EVIDENCE_PUSH_S", 0.0)
    col = fault_collector(tmp_path, alerts=True)
    inc = col.correlator.open_incidents()[0]
    assert col.context.link(inc["id"]).endswith(f"/#incident={inc['id']}")
    with browse(col, "Europe/Berlin", expect_404=True) as page:
        assert col.web is not None
        page.set_viewport_size({"width": 1400, "height": 1100})
        live(page, col.web.url + f"#incident={inc['id']}")
        page.wait_for_selector("#incident-page h2", timeout=5000)
        title = page.locator("#incident-page h2").text_content() or ""
        assert inc["id"] in title and "relay2" in title and "critical" in title
        assert "relay2" in (page.locator("#incident-page .sentence").text_content() or "")
        hops = page.locator("#incident-examples td.hops").all_text_contents()
        assert hops and all("relay2 (" in x and x.endswith("mx") for x in hops), hops
        assert page.locator("#incident-nodes").text_content() == "lab/node-a"
        # its chart: anomaly rate and latency p90 per bucket, with a time axis, units and a legend
        chart = page.evaluate("window.mailpulseDrawn.incident")
        assert chart["rate"] >= 25 and chart["p90"] >= 25, chart
        assert "100 %" in chart["y"] and any(y.endswith(" s") for y in chart["y"])
        assert chart["axis"].startswith("time (Europe/Berlin") and len(chart["ticks"]) >= 3
        assert "latency p90 (s)" in chart["legend"]
        # the page scrolled to it
        assert page.evaluate("document.getElementById('incident-page').getBoundingClientRect().top") < 200
        # the timeline draws it, with its opening and a legend
        drawn = page.evaluate("window.mailpulseDrawn.timeline")
        assert [r["id"] for r in drawn["rows"]] == [inc["id"]] and drawn["rows"][0]["points"] == ["opened"]
        assert drawn["rows"][0]["x1"] > drawn["rows"][0]["x0"] and "critical" in drawn["legend"]
        assert drawn["axis"].startswith("time (Europe/Berlin")
        shot(page, "dashboard-incident.png", "#incident-page")
        # live: more of the fault arrives; the new evidence is pushed and shown, no reload
        before = page.locator("#incident-evidence .ev-counts").text_content()
        renders = page.evaluate("window.mailpulseIncidentPage.renders")
        more_fault_events(col)
        col.evaluate()
        page.wait_for_function(f"() => document.querySelector('#incident-evidence .ev-counts').textContent !== "
                               f"{json.dumps(before)}", timeout=5000)
        assert page.evaluate("window.mailpulseIncidentPage.renders") > renders
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        # an example's event id is searchable: the link finds it among the events
        eid = page.locator("#incident-examples a.evid").first.text_content()
        page.locator("#incident-examples a.evid").first.click()
        page.wait_for_function("() => document.querySelectorAll('#events tr.event').length === 1", timeout=5000)
        assert page.locator("#events tr.event").get_attribute("data-event") == eid
        assert page.locator("#q").input_value() == eid
        # a row of the incident table opens the page too; an unknown id says so
        page.evaluate("location.hash = '#incident=nope'")
        page.wait_for_selector("#incident-page:has-text('does not hold that incident')", timeout=5000)
        page.locator(f'#incidents tr[data-id="{inc["id"]}"]').click()
        page.wait_for_selector(f"#incident-page h2:has-text('{inc['id']}')", timeout=5000)


def test_acknowledge_and_silence_from_the_dashboard_persist_and_mute_alerts(tmp_path: Path) -> None:
    """The incident page's buttons post to the authenticated API; the state file keeps it across a
    restart; the alerts honour it; the API refuses what a browser of another site could send."""
    col = fault_collector(tmp_path, alerts=True)
    inc = col.correlator.open_incidents()[0]
    assert col.web is not None and col.alerts is not None
    with browse(col, "UTC") as page:
        ca = tmp_path / "web" / "ca.crt"
        web = WebClient.dashboard(col.web.url, col.cfg.web, ca)
        api = f"api/incidents/{inc['id']}/"
        assert WebClient(col.web.url, ca).post(api + "ack", {})[0] == 401
        assert WebClient.metrics(col.web.url, col.cfg.web, ca).post(api + "ack", {})[0] == 403
        assert web.post(api + "ack", {}, headers={"Content-Type": "text/plain"})[0] == 415
        assert web.post(api + "ack", {}, headers={"Origin": "https://evil.example"})[0] == 403
        assert web.post("api/incidents/nope/ack", {})[0] == 404
        assert web.post(api + "silence", {"duration_s": "forever"})[0] == 400
        assert web.post(api + "reboot", {})[0] == 405
        assert web.post(api + "ack", {"note": "x" * 5000})[0] == 413
        assert col.actions.view() == {}
        live(page, col.web.url + f"#incident={inc['id']}")
        page.wait_for_selector("#incident-actions button#ack", timeout=5000)
        assert page.locator("#actions-state").text_content() == "kept in the state folder"
        assert "Alerts go out as usual" in (page.locator("#action-status").text_content() or "")
        page.fill("#action-note", "looking at relay2's queue")
        page.click("#ack")
        page.wait_for_selector("#action-status .badge.acked", timeout=5000)
        page.select_option("#silence-for", "14400")
        page.click("#silence")
        page.wait_for_selector("#action-status .badge.silenced", timeout=5000)
        status = page.locator("#action-status").text_content() or ""
        assert f"by {col.cfg.web.username}" in status and "looking at relay2's queue" in status
        page.wait_for_selector(f'#incidents tr[data-id="{inc["id"]}"] .badge.silenced', timeout=5000)
        page.wait_for_selector(f'#incidents tr[data-id="{inc["id"]}"] .badge.acked', timeout=5000)
        shot(page, "dashboard-incident-actions.png", "#incident-page")
    v = col.actions.view()[inc["id"]]
    assert v["acked_by"] == col.cfg.web.username and v["silenced"]
    assert 14390 < v["silenced_until"] - time.time() <= 14400
    # the alerts honour it: a severity change of the silenced incident sends nothing
    assert not col.alerts.handle("severity", dict(inc, severity="minor"), previous=inc["severity"])
    assert col.alerts.suppressed["silenced"] == 1
    # a restarted collector reads the same state file
    again = Collector(col.cfg, send=lambda m: None)
    assert again.actions.view()[inc["id"]]["silenced"]
    assert again.alerts is not None and again.alerts.decide("resolved", dict(inc, state="resolved")) == "silenced"


def test_topology_tree_with_relay_names_and_states(tmp_path: Path) -> None:
    """The tree of the paths mail took, senders to mailboxes: relays by name; relay2 is the root cause
    of the open incident (a click opens it), the hosts behind it degraded, the rest ok."""
    col = fault_collector(tmp_path)
    inc = col.correlator.open_incidents()[0]
    topo = col.state.topology
    assert topo["nodes"] == 9 and topo["truncated"] == 0
    with browse(col, "UTC") as page:
        assert col.web is not None
        live(page, col.web.url)
        page.wait_for_selector("#topology svg g.topo-node", timeout=5000)
        drawn = {n["key"]: n for n in page.evaluate("window.mailpulseDrawn.topology")}
        assert drawn["mx"]["name"] == "mx" and drawn["mx"]["depth"] == 1
        assert drawn["mx > relay2"]["state"] == "incident"
        assert drawn["mx > relay2"]["name"] == "relay2"
        assert drawn["mx > relay2 > c.example.org"]["state"] == "degraded"
        assert drawn["mx > relay1"]["state"] == "ok"
        assert drawn["mx > relay3.example.net"]["name"] == "relay3.example.net"   # unnamed
        assert drawn["mx > relay1 > a.example.org"]["depth"] == 3
        # senders left of the relays, relays left of the mailbox side
        keys = ("mx > relay2 > d.example.org", "mx > relay2", "mx")
        xs = [page.locator(f'#topology g[data-key="{k}"] rect').bounding_box() for k in keys]
        assert xs[0] is not None and xs[1] is not None and xs[2] is not None
        assert xs[0]["x"] < xs[1]["x"] < xs[2]["x"]
        shot(page, "dashboard-topology.png", "#topology")
        page.locator('#topology g[data-key="mx > relay2"]').click()
        page.wait_for_selector(f"#incident-page h2:has-text('{inc['id']}')", timeout=5000)


def test_search_and_filter_by_relay_node_route_domain_outcome(tmp_path: Path) -> None:
    """The filter bar narrows every table that has the field (client side) and asks the collector's
    bounded /api/events for the recent events that match."""
    col = fault_collector(tmp_path)
    deferred = []
    for i in range(6):
        d = delivery(i, node="node-b", anomaly=True)
        d["fields"].update(to=f"u{i}@{'example.com' if i % 2 else 'example.org'}", status="deferred",
                           relay="relay1.example.net[10.0.0.5]:25")
        deferred.append(d)
    probe = {"schema": 1, "kind": "probe", "id": "probe-1", "node": "node-b", "ts": deferred[0]["ts"],
             "fields": {"route": "lossy", "probe_id": "p1", "outcome": "damaged", "latency_ms": 812.0,
                        "integrity": {"psnr_db": 31.2, "intact": False},
                        "hops": [{"from": "node-b.lan", "by": "relay1.example.net", "delay_s": 0.4}]},
             "x": [812, 0, 0, 0, 0, 1, 1, 0], "score": 700, "anomaly": True, "argmax": 5}
    feed(col, message("node-b", [*deferred, probe]))
    with browse(col, "UTC") as page:
        assert col.web is not None
        web = WebClient.dashboard(col.web.url, col.cfg.web, tmp_path / "web" / "ca.crt")
        found = json.loads(web.get("api/events?relay=relay2&limit=5"))
        assert len(found["events"]) == 5 and all("relay2" in e["relays"] for e in found["events"])
        assert [e["id"] for e in json.loads(web.get("api/events?domain=example.com"))["events"]] == \
            ["node-b-000005", "node-b-000003", "node-b-000001"]
        assert json.loads(web.get("api/events?limit=99999"))["limit"] == 500
        assert web.request("api/events?limit=many")[0] == 400
        live(page, col.web.url)
        page.wait_for_selector('#f-relay option[value="relay2"]', state="attached", timeout=5000)
        visible = "tr:not(.filtered-out)"
        # relay: the incident at relay2 stays, anomalies through relay1 go, the server's events follow
        page.select_option("#f-relay", "relay2")
        page.wait_for_function("() => document.querySelectorAll('#anomalies tbody tr.filtered-out').length > 0",
                               timeout=5000)
        assert page.locator(f"#incidents tbody {visible}").count() == 1
        rows = page.locator(f"#anomalies tbody {visible}").all_text_contents()
        assert rows and all("relay2" in r for r in rows), rows
        page.wait_for_function("() => document.querySelector('#events-count').textContent.includes('relay relay2')",
                               timeout=5000)
        assert page.locator("#events tr.event").count() > 5
        assert all("relay2" in r for r in page.locator("#events tr.event").all_text_contents())
        assert "relay2" in page.evaluate("window.mailpulseDrawn.topology.filter(n => n.match).map(n => n.name)")
        page.select_option("#f-relay", "relay1")
        page.wait_for_function("() => !document.querySelector('#incidents tbody tr:not(.filtered-out)')",
                               timeout=5000)   # the incident is not at relay1
        # domain and outcome: only the deferred deliveries to example.com
        page.select_option("#f-relay", "")
        page.select_option("#f-domain", "example.com")
        page.select_option("#f-outcome", "deferred")
        page.wait_for_function("() => document.querySelectorAll('#anomalies tbody tr:not(.filtered-out)').length === 3",
                               timeout=5000)
        page.wait_for_function("() => document.querySelectorAll('#events tr.event').length === 3", timeout=5000)
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "dashboard-search.png")
        # node and route: the fleet and the probes narrow too
        page.click("#f-clear")
        page.select_option("#f-node", "lab/node-b")
        page.wait_for_function("() => document.querySelectorAll('#fleet tbody tr:not(.filtered-out)').length === 0",
                               timeout=5000)        # node-a only in the fleet
        assert page.locator(f"#probes tbody {visible}").count() == 1
        page.select_option("#f-node", "")
        page.select_option("#f-route", "lossy")
        page.wait_for_function("() => document.querySelectorAll('#anomalies tbody tr:not(.filtered-out)').length === 1",
                               timeout=5000)
        # free text: an event id
        page.click("#f-clear")
        page.fill("#q", "node-b-000004")
        page.wait_for_function("() => document.querySelectorAll('#anomalies tbody tr:not(.filtered-out)').length === 1",
                               timeout=5000)
        page.wait_for_function("() => document.querySelectorAll('#events tr.event').length === 1", timeout=5000)


def test_timeline_of_an_afternoon_resolved_and_open_incidents(tmp_path: Path) -> None:
    """25 minutes replayed with an evaluation every 10 s of event time: relay2 is slow from minute 5
    to 11 (an incident that opens and resolves), relay1 from minute 20 on (open now); the timeline
    draws both with their marks, the resolved one ending where it resolved."""
    col = _collector(tmp_path)
    t0 = time.time() - 1500
    first = stream(1200, rate=8, seed=7, t0=t0, fault="relay2.example.net", fault_from=300, fault_until=660,
                   nodes=("node-a",))
    second = stream(300, rate=8, seed=8, t0=t0 + 1200, fault="relay1.example.net", fault_from=0, nodes=("node-a",))
    topic = T.NodeTopics("lab", "node-a").events
    events = [*first, *(dict(e, id=f"b-{e['id']}") for e in second)]
    for k in range(0, len(events), 80):    # 10 s of mail, received as it was sent (the watermark follows)
        batch = events[k:k + 80]
        feed(col, Message(topic, envelope("node-a", batch), t0 + (k + len(batch)) / 8 + 0.5, qos=1))
        col.evaluate()
    incs = {i["root_cause"]: i for i in col.correlator.all_incidents()}
    relay2, relay1 = incs["mx > relay2"], incs["mx > relay1"]
    assert relay2["state"] == "resolved" and relay1["state"] == "open"
    assert relay2["opened"] - t0 >= 300 and relay2["resolved"] - t0 <= 900
    with browse(col, "America/New_York") as page:
        assert col.web is not None
        live(page, col.web.url)
        # "live" is the connection; the timeline is drawn when the snapshot's incidents have arrived
        ids = json.dumps([relay2["id"], relay1["id"]])
        page.wait_for_function(f"() => {{ const t = window.mailpulseDrawn && window.mailpulseDrawn.timeline;"
                               f" return !!t && {ids}.every(id => t.rows.some(r => r.id === id)); }}",
                               timeout=15000)
        drawn = page.evaluate("window.mailpulseDrawn.timeline")
        rows = {r["id"]: r for r in drawn["rows"]}
        r2, r1 = rows[relay2["id"]], rows[relay1["id"]]
        assert r2["points"][0] == "opened" and r2["points"][-1] == "resolved"
        assert r1["points"][0] == "opened" and "resolved" not in r1["points"]
        assert r2["x0"] < r2["x1"] < r1["x0"] < r1["x1"]
        assert drawn["axis"].startswith("time (America/New_York")
        shot(page, "dashboard-timeline.png", "canvas#timeline")


def test_latency_intervals_per_route_band_and_misses(tmp_path: Path) -> None:
    """Every delivery goes through its route's interval: the page draws, per route, the latencies over
    time with the interval as a shaded band, the misses marked above/below, a log-seconds axis, a time
    axis in the viewer's zone and a legend; /metrics counts the same hits and misses.  A route name that
    looks like markup stays text."""
    col = _collector(tmp_path)
    rng = random.Random(11)
    t_end = time.time()
    evs: list[dict[str, Any]] = []
    for i in range(360):
        t = t_end - 600 + i * 600 / 360
        relay, level = (("relay1.example.net[10.0.0.1]:25", 0.3) if i % 2 else
                        ("relay2.example.net[10.0.0.2]:25", 0.3 if i < 260 else 4.0))
        evs.append({"schema": 1, "kind": "delivery", "id": f"d{i:05d}", "node": "node-a",
                    "ts": datetime.fromtimestamp(t, ZoneInfo("UTC")).isoformat().replace("+00:00", "Z"),
                    "fields": {"host": "edge", "relay": relay, "status": "sent",
                               "delay": round(level * rng.lognormvariate(0, 0.3), 3)},
                    "x": [1, 1, 2, 3, 4, 5, 6, 7], "score": 5, "anomaly": False, "argmax": 0})
    hostile = dict(evs[-1], id="d-hostile", fields={**evs[-1]["fields"], "relay": "<img src=x onerror=alert(1)>"})
    for k in range(0, len(evs), 100):
        feed(col, message("node-a", evs[k:k + 100]))
    feed(col, message("node-a", [hostile, dict(hostile, id="d-hostile-2")]))
    view = col.push_intervals(force=True)
    assert view is not None
    slow = "lab/node-a|relay2"
    counts = col.intervals.counts[slow]
    assert counts["above"] >= 3 and sum(counts.values()) == 179      # the first delivery has no interval yet
    got = samples(col)
    for side in ("inside", "above", "below"):
        assert got[("mailpulse_route_interval_deliveries_total",
                    (("route", slow), ("side", side)))] == counts[side]
    lo, hi = col.intervals.bounds(slow) or (0.0, 0.0)
    assert got[("mailpulse_route_interval_upper_seconds", (("route", slow),))] == pytest.approx(hi)
    assert got[("mailpulse_route_interval_lower_seconds", (("route", slow),))] == pytest.approx(lo) and lo < hi
    zone = "America/New_York"
    with browse(col, zone) as page:
        assert col.web is not None
        live(page, col.web.url)
        page.wait_for_function("() => window.mailpulseDrawn && window.mailpulseDrawn.intervals"
                               " && window.mailpulseDrawn.intervals.routes.length >= 2", timeout=10000)
        drawn = {r["route"]: r for r in page.evaluate("window.mailpulseDrawn.intervals.routes")}
        r2 = drawn[slow]
        # the last 120 deliveries of the route (all with an interval), each drawn by its side
        pts = next(r["points"] for r in view["routes"] if r["route"] == slow)
        assert len(pts) == r2["points"] == r2["band"] == 120
        sides = [p[4] for p in pts]
        assert r2["above"] == sides.count("above") >= 3 and r2["below"] == sides.count("below")
        assert r2["inside"] == sides.count("inside")
        assert r2["legend"] == ["90 % interval", "delivery latency (s)", "above its interval", "below its interval"]
        assert all(y.endswith(" s") for y in r2["y"])
        assert r2["axis"] == "time (America/New_York (GMT-5))" and len(r2["ticks"]) >= 3
        for t, label in r2["ticks"]:
            assert label == datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%H:%M"), (t, label)
        # the route's counts beside its name; the markup-like relay is text, no element
        head = page.locator(f'canvas.iv-chart[data-route="{slow}"]').evaluate("c => c.previousSibling.textContent")
        assert head.startswith(slow) and f"above {counts['above']}" in head
        assert page.locator("#intervals img").count() == 0
        assert "lab/node-a|<img src=x onerror=alert(1)>" in page.locator("#intervals").text_content()
        page.locator("#intervals-section").scroll_into_view_if_needed()
        shot(page, "dashboard-intervals.png", "#intervals-section")
