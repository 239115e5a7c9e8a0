"""Operator metrics: the node's Postfix queue (``postqueue -j`` on a real Postfix queue), its place in
the status payload, and the collector's relay/domain/DSN/probe-freshness/queue families with their
label caps."""

from __future__ import annotations

import json
import smtplib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mailpulse.collector.metrics import Metrics
from mailpulse.collector.opsmetrics import dsn_class
from mailpulse.collector.relays import RelayNames, domain_of
from mailpulse.pi_firmware.node import Node
from mailpulse.pi_firmware.postqueue import QUEUES, queue_command, read_queue, summarise
from prometheus_client.parser import text_string_to_metric_families
from server_fixtures import require

from mailpulse import topics as T
from mailpulse.config.base import SecretSource
from mailpulse.config.node import validate_node
from mailpulse.lab.servers import MailChain
from mailpulse.payload import QUEUE_NAMES, check_status


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def status(pq: dict[str, Any]) -> dict[str, Any]:
    return {"schema": T.PAYLOAD_SCHEMA, "site": "lab", "node": "node-a", "state": "online", "ts": time.time(),
            "postfix_queue": pq}


# --------------------------------------------------------------------------------------------
# the node: postqueue -j
# --------------------------------------------------------------------------------------------


def test_queue_names_declared_once() -> None:
    assert QUEUES == QUEUE_NAMES


def test_summarise_counts_and_skips_hostile_lines() -> None:
    now = 1_000_000.0
    lines = [
        json.dumps({"queue_name": "deferred", "arrival_time": now - 600, "message_size": 1000}).encode(),
        json.dumps({"queue_name": "deferred", "arrival_time": now - 30, "message_size": 500}).encode(),
        json.dumps({"queue_name": "active", "arrival_time": now - 1, "message_size": 10}).encode(),
        b"not json at all",
        json.dumps({"queue_name": "nosuchqueue", "arrival_time": now, "message_size": 1}).encode(),
        json.dumps({"queue_name": "hold", "arrival_time": "yesterday", "message_size": 1}).encode(),
        json.dumps({"queue_name": "hold", "arrival_time": now, "message_size": -5}).encode(),
        json.dumps({"queue_name": "hold", "arrival_time": 1e400 if False else "NaN"}).encode(),
        b'{"queue_name": "hold", "arrival_time": NaN, "message_size": 1}',
        json.dumps(["a", "list"]).encode(),
        b"{" + b" " * (1 << 20) + b"}",
        b"",
    ]
    s = summarise(lines, now)
    assert s["queues"]["deferred"] == {"messages": 2, "bytes": 1500, "oldest_age_s": 600.0}
    assert s["queues"]["active"] == {"messages": 1, "bytes": 10, "oldest_age_s": 1.0}
    assert s["queues"]["hold"] == {"messages": 0, "bytes": 0, "oldest_age_s": None}
    assert s["bad_lines"] == 8 and s["error"] is None
    assert check_status(status(s)) is None


def test_failed_reading_is_one_sentence_and_no_queues() -> None:
    s = read_queue(["/nonexistent/postqueue", "-j"])
    assert s["queues"] == {} and "cannot run /nonexistent/postqueue" in s["error"]
    assert check_status(status(s)) is None
    s = read_queue(["sh", "-c", "echo 'postqueue: fatal: open /nowhere/main.cf: No such file' >&2; exit 69"])
    assert s["queues"] == {} and s["error"].endswith("postqueue: fatal: open /nowhere/main.cf: No such file")
    s = read_queue(["sleep", "5"], timeout_s=0.2)
    assert "took longer than 0.2 s" in s["error"]


def test_status_payload_bounds_the_queue_object() -> None:
    good = summarise([], 1.0)
    assert check_status(status(good)) is None
    for bad in ({**good, "queues": {"spam": {"messages": 1, "bytes": 1, "oldest_age_s": 0.0}}},
                {**good, "queues": {"active": {"messages": -1, "bytes": 1, "oldest_age_s": 0.0}}},
                {**good, "queues": {"active": {"messages": 1, "bytes": 1, "oldest_age_s": 0.0, "x": 1}}},
                {**good, "extra": 1}, {**good, "error": "x" * 9000}):
        p = check_status(status(bad))
        assert p is not None and p.reason in ("status", "unknown_key") and "postfix_queue" in p.detail, bad


@pytest.fixture(scope="module")
def chain() -> Iterator[MailChain]:
    require("postfix", "dovecot", root=True)
    c = MailChain()
    c.start()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.mark.xdist_group("servers")
def test_postqueue_on_a_real_queue(chain: MailChain) -> None:
    """Postfix's own ``postqueue -j``: deferred while the next hop is down, then on hold."""
    cmd = queue_command(str(chain.edge.etc))
    empty = read_queue(cmd)
    assert empty["error"] is None and all(q["messages"] == 0 for q in empty["queues"].values())
    chain.mx.stop()
    try:
        with smtplib.SMTP(*chain.smtp) as s:
            for _ in range(3):
                s.sendmail("a@edge.mailpulse.test", ["probe@probe.test"], b"Subject: q\r\n\r\nqueued\r\n" + b"x" * 1000)
        deadline = time.monotonic() + 60      # a loaded machine: qmgr may take a while to pick up incoming
        while time.monotonic() < deadline:
            got = read_queue(cmd)
            if got["queues"]["deferred"]["messages"] == 3:
                break
            time.sleep(0.2)
        d = got["queues"]["deferred"]
        assert d["messages"] == 3 and d["bytes"] > 3000 and d["oldest_age_s"] is not None, got
        assert 0 <= d["oldest_age_s"] < 60 and got["bad_lines"] == 0
        assert check_status(status(got)) is None
        subprocess.run(["postsuper", "-c", str(chain.edge.etc), "-h", "ALL"], check=True, capture_output=True)
        held = read_queue(cmd)
        assert held["queues"]["hold"]["messages"] == 3 and held["queues"]["deferred"]["messages"] == 0
    finally:
        # whatever happened, the next test on this chain starts with an empty queue
        subprocess.run(["postsuper", "-c", str(chain.edge.etc), "-d", "ALL"], check=True, capture_output=True)
        chain.mx.start()
    bad = read_queue(queue_command("/nonexistent-postfix-dir"))
    assert bad["queues"] == {} and "/nonexistent-postfix-dir" in bad["error"]


@pytest.mark.xdist_group("servers")
def test_node_status_carries_its_queue(chain: MailChain, tmp_path: Any) -> None:
    """The node daemon reads the queue of the Postfix named by ``[postfix] config_dir`` and its
    status document (as the sink publishes it) passes the collector's check."""
    doc = {"node": {"id": "node-q", "site": "lab", "state_dir": str(tmp_path)},
           "mqtt": {"host": "127.0.0.1", "port": 1883, "username": "node-q", "tls": False},
           "postfix": {"config_dir": str(chain.edge.etc), "queue_poll_s": 5.0}, "probe": {"enabled": False}}
    cfg, errors = validate_node(doc, SecretSource({"mqtt_password": "x"}), local=True)
    assert cfg is not None, errors
    node = Node(cfg)
    try:
        assert node.read_postfix_queue()["error"] is None
        st = node.sink.status_payload()
        assert st["postfix_queue"]["queues"]["deferred"]["messages"] == 0
        assert check_status(json.loads(json.dumps(st))) is None
    finally:
        node.spool.close()


# --------------------------------------------------------------------------------------------
# the collector's families
# --------------------------------------------------------------------------------------------


def test_relay_names_and_domains() -> None:
    names = RelayNames({"127.0.0.1:47627": "relay2", "mx.example.net": "mx", "[2001:db8::1]:25": "v6"})
    assert names.name("127.0.0.1[127.0.0.1]:47627") == "relay2"
    assert names.name("127.0.0.1:47627") == "relay2"
    assert names.name("mx.example.net[192.0.2.7]:25") == "mx"
    assert names.name("other.example[192.0.2.8]:25") == "other.example:25"
    assert names.name("127.0.0.1[127.0.0.1]:40000") == "127.0.0.1:40000"
    assert names.name("mail[2001:db8::1]:25") == "v6"
    assert names.name("none") == "none" and names.name(None) == "none"
    assert domain_of("<Bob@Example.COM>") == "example.com" and domain_of("nobody") == ""
    assert [dsn_class(d) for d in ("2.0.0", "4.4.1", "5.1.1", None, "9.9.9", "5.x", "2.0.0.0")] == [
        "2.x.x", "4.x.x", "5.x.x", "none", "other", "other", "other"]


def delivery(relay: str, to: str, dsn: str, status: str = "sent", delay: float = 0.5) -> dict[str, Any]:
    return {"site": "lab", "node": "node-a", "kind": "delivery", "t": 1.0,
            "fields": {"relay": relay, "to": to, "dsn": dsn, "status": status, "delay": delay}}


def test_delivery_labels_dsn_and_relay_delay() -> None:
    m = Metrics(relays={"127.0.0.1:47627": "relay2"})
    m.observe_event(delivery("127.0.0.1[127.0.0.1]:47627", "a@probe.test", "2.0.0", delay=41.0))
    m.observe_event(delivery("127.0.0.1[127.0.0.1]:47627", "b@probe.test", "4.4.1", "deferred"))
    m.observe_event(delivery("none", "c@lossy.test", "5.1.1", "bounced"))
    s = samples(m)
    key = lambda **kw: tuple(sorted({"site": "lab", **kw}.items()))  # noqa: E731
    assert s[("mailpulse_relay_deliveries_total", key(relay="relay2", domain="probe.test", dsn_class="2.x.x"))] == 1
    assert s[("mailpulse_relay_deliveries_total", key(relay="relay2", domain="probe.test", dsn_class="4.x.x"))] == 1
    assert s[("mailpulse_relay_deliveries_total", key(relay="none", domain="lossy.test", dsn_class="5.x.x"))] == 1
    # only the sent one is a delay sample
    assert s[("mailpulse_relay_delivery_delay_seconds_count", key(relay="relay2"))] == 1
    assert s[("mailpulse_relay_delivery_delay_seconds_sum", key(relay="relay2"))] == 41.0


def test_relay_and_domain_labels_are_capped() -> None:
    m = Metrics(label_values=3)
    for i in range(10):
        m.observe_event(delivery(f"r{i}.example[192.0.2.{i}]:25", f"x@d{i}.example", "2.0.0"))
    s = samples(m)
    relays = {dict(k[1])["relay"] for k in s if k[0] == "mailpulse_relay_deliveries_total"}
    domains = {dict(k[1])["domain"] for k in s if k[0] == "mailpulse_relay_deliveries_total"}
    assert relays == {"r0.example:25", "r1.example:25", "r2.example:25", "other"}
    assert domains == {"d0.example", "d1.example", "d2.example", "other"}
    assert s[("mailpulse_metrics_labels_folded_total", (("label", "relay"),))] == 7
    assert s[("mailpulse_metrics_labels_folded_total", (("label", "domain"),))] == 7


def test_probe_last_success_never_moves_back() -> None:
    m = Metrics()

    def probe(outcome: str, t: float) -> dict[str, Any]:
        return {"site": "lab", "node": "node-a", "kind": "probe", "t": t,
                "fields": {"route": "direct", "outcome": outcome, "latency_ms": 100.0}}

    m.observe_event(probe("ok", 1000.0))
    m.observe_event(probe("ok", 900.0))          # an older one arriving late
    m.observe_event(probe("lost", 2000.0))       # a failure is not a success
    key = ("mailpulse_probe_last_success_timestamp_seconds", (("node", "node-a"), ("route", "direct"), ("site", "lab")))
    assert samples(m)[key] == 1000.0


def test_queue_gauges_from_the_status() -> None:
    m = Metrics()
    pq = summarise([json.dumps({"queue_name": "deferred", "arrival_time": 100.0, "message_size": 7}).encode()], 400.0)
    m.observe_status("lab", "node-a", status(pq))
    s = samples(m)
    lab = lambda q: (("node", "node-a"), ("queue", q), ("site", "lab"))  # noqa: E731
    assert s[("mailpulse_postfix_queue_messages", lab("deferred"))] == 1
    assert s[("mailpulse_postfix_queue_bytes", lab("deferred"))] == 7
    assert s[("mailpulse_postfix_queue_oldest_age_seconds", lab("deferred"))] == 300.0
    assert s[("mailpulse_postfix_queue_oldest_age_seconds", lab("hold"))] == 0.0
    assert s[("mailpulse_postfix_queue_up", (("node", "node-a"), ("site", "lab")))] == 1
    m.observe_status("lab", "node-a", status(read_queue(["/nonexistent/postqueue"])))
    s = samples(m)
    assert s[("mailpulse_postfix_queue_up", (("node", "node-a"), ("site", "lab")))] == 0
    assert s[("mailpulse_postfix_queue_messages", lab("deferred"))] == 1   # the last reading stays
