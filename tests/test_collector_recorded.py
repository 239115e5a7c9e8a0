"""Correlation on an archive recorded from real parts: real Postfix (edge -> mx, and edge -> a relay
-> mx for ``lossy.test``), its log parsed by the node's Postfix parser, the events encoded as the
node's MQTT batches (``mailpulse.pi_firmware.mqtt.batch_payload``), ingested and archived by the collector,
then ``mailpulse correlate``.  The relay is made slow half-way; the incident must name it, and the
healthy first half must give none.

The anomaly flag is a stand-in for the node's scorer: delivery delay above 0.5 s (the scorer's own
tests are elsewhere; here the subject is the correlation of real relay paths)."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from mailpulse.collector.archive import ArchiveWriter
from mailpulse.collector.ingest import Dedup, IngestProcessor, Message
from mailpulse.pi_firmware.events import Scored
from mailpulse.pi_firmware.mqtt import batch_payload
from mailpulse.pi_firmware.postfix import parse_lines
from server_fixtures import require

from mailpulse import topics as T
from mailpulse.lab.relays import MangleRelay
from mailpulse.lab.servers import MailChain

ROOT = Path(__file__).resolve().parent.parent


def _send(chain: MailChain, to: str, n: int, tag: str) -> None:
    with smtplib.SMTP(*chain.smtp, timeout=30) as s:
        for i in range(n):
            m = EmailMessage()
            m["From"] = "sender@client.test"
            m["To"] = to
            m["Subject"] = f"{tag} {i}"
            m.set_content("hello\n" * 20)
            s.send_message(m)


def _archive_from_log(chain: MailChain, folder: Path) -> int:
    events, _ = parse_lines(chain.edge.log_text().splitlines(keepends=True), "node-a")
    payloads = []
    for ev in events:
        slow = ev.delay is not None and ev.delay > 0.5
        ev.scored = Scored(score=1000 if slow else 10, anomaly=slow, argmax=0)
        payloads.append(json.dumps(ev.payload()).encode())
    proc = IngestProcessor(ArchiveWriter(folder), Dedup())
    topic = T.NodeTopics("lab", "node-a").events
    msgs = [Message(topic, batch_payload("lab", "node-a", payloads[i:i + 10]), time.time())
            for i in range(0, len(payloads), 10)]
    proc.process(msgs)
    proc.process(msgs)   # a replay: archived once
    assert proc.total_duplicates == len(payloads)
    assert proc.archive is not None
    proc.archive.close()
    return len(payloads)


def _correlate(folder: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "mailpulse", "correlate", "--archive", str(folder), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.xdist_group("collector-mail")
def test_slow_relay_found_in_a_recorded_archive(tmp_path: Path) -> None:
    require("postfix", "dovecot", root=True)
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is not installed (the relay)")

    relay = MangleRelay(quality=None)
    chain = MailChain(extra_relay=(relay.host, relay.port))
    relay.next_hop = (chain.mx.host, chain.mx.port)
    try:
        relay.start()
        chain.start()
        # healthy: both routes fast
        _send(chain, "lossy@lossy.test", 10, "healthy")
        _send(chain, "probe@probe.test", 10, "healthy")
        assert chain.edge.wait_queue_empty(30)
        n1 = _archive_from_log(chain, tmp_path / "healthy")
        assert n1 >= 20
        assert _correlate(tmp_path / "healthy") == []
        # the relay in front of lossy.test becomes slow
        relay.delay_s = 0.8
        _send(chain, "lossy@lossy.test", 7, "slow")
        _send(chain, "probe@probe.test", 10, "fast")
        assert chain.edge.wait_queue_empty(60)
        n2 = _archive_from_log(chain, tmp_path / "all")
        assert n2 >= n1 + 17
        incs = _correlate(tmp_path / "all")
        assert [i["root_cause"] for i in incs] == [f"127.0.0.1:{relay.port}"], incs
        assert incs[0]["evidence"]["anomalies"] >= 5
        assert incs[0]["evidence"]["sibling_rate"] == 0.0
        if (ROOT / ".venv-flink" / "bin" / "python").exists():   # the Flink job: the same incidents
            r = subprocess.run([sys.executable, "-m", "mailpulse", "flink", "run", "--archive", str(tmp_path / "all"),
                                "--json"], capture_output=True, text=True, cwd=ROOT, timeout=600)
            assert r.returncode == 0, r.stderr[-2000:]
            assert json.loads(r.stdout) == incs
    finally:
        relay.stop()
        chain.cleanup()
