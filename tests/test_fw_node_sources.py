"""The node never stops watching: a source that dies is restarted and reported; a bad line or probe
reply is quarantined and counted in the status and the collector's metrics.

The node here publishes to a port nobody listens on: its events go to the spool, which is what the
assertions read (the MQTT side is covered by ``test_mqtt_broker.py``).
"""

from __future__ import annotations

import imaplib
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import pytest
from mailpulse.collector.metrics import Metrics
from mailpulse.pi_firmware.events import Event, MessageEvent
from mailpulse.pi_firmware.headers import HeaderBlock
from mailpulse.pi_firmware.mime import MimeLimits
from mailpulse.pi_firmware.node import Node, PostfixLogSource
from mailpulse.pi_firmware.postfix import PostfixParser
from mailpulse.pi_firmware.probe import ProbeEvent, Prober, ProbeRoute, ProbeSettings
from mailpulse.pi_firmware.probemail import Integrity, ProbeContent, probe_content
from mailpulse.pi_firmware.quarantine import Quarantine
from prometheus_client.parser import text_string_to_metric_families

from mailpulse.config.base import SecretSource
from mailpulse.config.node import NodeConfig, validate_node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sections(state: Path) -> NodeConfig:
    cfg, errors = validate_node({
        "node": {"id": "n1", "site": "lab", "state_dir": str(state)},
        "mqtt": {"host": "127.0.0.1", "port": _free_port(), "username": "n1", "tls": False},
        "fleet": {"heartbeat_s": 1.0}, "probe": {"enabled": False},
    }, SecretSource({"mqtt_password": "x"}), local=True)
    assert cfg is not None, errors
    return cfg


class Crashy:
    """A source that fails on its first run and works on the second."""

    name = "crashy"

    def __init__(self) -> None:
        self.quarantine = Quarantine()
        self.runs = 0

    def counters(self) -> dict[str, int]:
        return {"runs": self.runs}

    def run(self, emit: Callable[[Sequence[Event]], None], stop: threading.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError(f"the source broke at {object()!r}")
        emit([MessageEvent(1.0, "n1", key="after-restart", size=10)])
        stop.wait()


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_source_that_dies_is_restarted_and_reported(tmp_path: Path) -> None:
    src = Crashy()
    node = Node(_sections(tmp_path / "state"), sources=[src])
    node.start()
    try:
        assert _wait(lambda: len(node.spool) == 1), node.errors
        status = node._status()
        assert status["sources"]["crashy"] == {"runs": 2, "restarts": 1}
        assert "RuntimeError" in status["errors"]["crashy"] and "0x" not in status["errors"]["crashy"]
        assert status["restarts"] == {"crashy": 1} and src.quarantine is node.quarantine
    finally:
        node.stop()


def test_a_line_that_breaks_the_parser_is_quarantined_and_the_follower_goes_on(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "mail.log"
    lines = [f"Nov 26 10:00:0{i} mx postfix/smtp[7]: 4D1AB{i}: to=<a{i}@example.net>, relay=none, delay=0.1, "
             f"delays=0/0/0/0.1, dsn=2.0.0, status=sent (ok)\n" for i in range(5)]
    log.write_text("".join(lines))
    real = PostfixParser.timestamp

    def flaky(self: PostfixParser, text: str) -> float:
        if text.endswith("10:00:02"):
            raise ValueError("a clock the parser did not expect")
        return real(self, text)

    monkeypatch.setattr(PostfixParser, "timestamp", flaky)
    src = PostfixLogSource(log, "n1", tmp_path / "pos.json", from_start=True, poll_s=0.05, year=2026)
    node = Node(_sections(tmp_path / "state"), sources=[src])
    node.start()
    try:
        assert _wait(lambda: len(node.spool) == 4), (len(node.spool), node.errors)
        status = node._status()
        assert status["quarantine"]["by_source"] == {"postfix": 1}
        assert status["sources"]["postfix"]["errors"] == 1 and status["sources"]["postfix"]["events"] == 4
        (rec,) = [json.loads(x) for x in (tmp_path / "state" / "quarantine.jsonl").read_text().splitlines()]
        assert rec["source"] == "postfix" and "ValueError" in rec["reason"] and "4D1AB2" in rec["sample"]
        metrics = Metrics()
        metrics.observe_status("lab", "n1", {"state": "online", **status})
        fams = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
        (q,) = fams["mailpulse_node_quarantined"].samples
        assert q.labels == {"site": "lab", "node": "n1", "source": "postfix"} and q.value == 1
    finally:
        node.stop()


def test_a_probe_reply_that_breaks_the_analysis_is_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailpulse.pi_firmware import probe

    route = ProbeRoute(name="r1", smtp_host="127.0.0.1", smtp_port=25, mail_from="a@x", rcpt_to="b@x",
                       imap_host="127.0.0.1", imap_port=143, imap_username="b", imap_password="pw")
    q = Quarantine()
    prober = Prober("n1", ProbeSettings(routes=[route], image_format="png", attachment_bytes=1000), cache_dir=tmp_path,
                    quarantine=q)
    content = probe_content("png", 90, 1000, 64, 48)
    prober.lost["p1"] = probe._Lost("r1", 1, "old-id")
    replies = {"1": probe.compose(content, "cur", "n1", route, 5), "2": b"X-Mailpulse-Probe-Id: p1\r\n\r\nbroken"}
    monkeypatch.setattr(prober, "_search", lambda im, node: list(replies))
    monkeypatch.setattr(prober, "_fetch", lambda im, uid: replies[uid])
    monkeypatch.setattr(prober, "_delete", lambda im, uids: None)
    calls = []
    real = probe.analyse

    def flaky(data: bytes, c: ProbeContent, limits: MimeLimits | None = None) -> tuple[Integrity, HeaderBlock]:
        calls.append(data)
        if data.endswith(b"broken"):
            raise RecursionError("maximum recursion depth exceeded")
        return real(data, c)

    monkeypatch.setattr(probe, "analyse", flaky)
    im = mock.Mock(spec=imaplib.IMAP4)     # every IMAP call of _collect is patched above
    evs = prober._collect(im, route, content, "cur", set())
    assert im.method_calls == []
    by = {e.probe_id: e for e in evs}
    assert by["cur"].outcome == "ok" and by["p1"].outcome == "damaged"
    assert "RecursionError" in (by["p1"].error or "") and q.counts == {"probe": 1}


def test_a_publisher_process_that_fails_says_why(tmp_path: Path) -> None:
    from mailpulse.pi_firmware.pubproc import PublisherProcess

    from mailpulse.errors import UserError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sections = _sections(tmp_path / "state")
    sections.spool.path = str(blocker / "spool.db")
    pub = PublisherProcess(sections)
    with pytest.raises(UserError, match="publishing failed: SpoolError: cannot open the spool"):
        pub.emit_many([MessageEvent(1.0, "n1", key="k", size=1)])
        pub.flush(5)
    pub.close(1)


def test_the_replay_publishes_from_a_second_process_only_when_a_core_is_free(tmp_path: Path) -> None:
    from mailpulse.pi_firmware.pubproc import InProcessPublisher, PublisherProcess, publisher

    for cores, load, kind in ((4, 0.5, PublisherProcess), (2, 6.0, InProcessPublisher), (1, 0.0, InProcessPublisher)):
        pub = publisher(_sections(tmp_path / f"s{cores}"), cores=cores, load=load)
        try:
            assert isinstance(pub, kind), (cores, load)
        finally:
            pub.close(0.5)


def test_each_probe_route_has_its_own_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe waiting out its time-out holds up neither the other route's probes nor its own route's
    next ones (up to the route's limit of probes in flight)."""
    routes = [{"name": n, "smtp_host": "127.0.0.1", "smtp_port": _free_port(), "mail_from": "p@n1.test",
               "rcpt_to": f"{n}@{n}.test", "imap_host": "127.0.0.1", "imap_port": _free_port(),
               "imap_username": n, "imap_password_env": "MAILPULSE_TEST_IMAP", "timeout_s": 60.0}
              for n in ("stuck", "free")]
    monkeypatch.setenv("MAILPULSE_TEST_IMAP", "x")
    cfg, errors = validate_node({
        "node": {"id": "n1", "site": "lab", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": _free_port(), "username": "n1", "tls": False},
        "fleet": {"heartbeat_s": 1.0}, "probe": {"enabled": True, "interval_s": 0.05, "routes": routes},
    }, SecretSource({"mqtt_password": "x"}), local=True)
    assert cfg is not None, errors
    node = Node(cfg, sources=[])
    calls: list[str] = []

    def run(route: str, stop: threading.Event | None = None) -> list[ProbeEvent]:
        calls.append(route)
        if route == "stuck":           # its probe never comes back: it waits until the node stops
            assert stop is not None
            stop.wait()
        return []

    monkeypatch.setattr(node.prober, "run", run)
    node.start()
    try:
        # the stuck route's next probes start anyway, up to its limit of probes in flight
        limit = node.probes_in_flight("stuck")
        assert limit == 8 and node.probes_in_flight("free") == 8
        assert _wait(lambda: calls.count("free") >= 12 and calls.count("stuck") == limit), calls
        assert calls.count("stuck") == limit, calls
    finally:
        node.stop()
