"""The parsers on real Postfix output: a two-instance relay chain (edge -> mx -> Maildir) on loopback.

Mail goes in over SMTP; the test follows both instances' ``maillog_file`` with the follower and the
parser, and watches the mx's Maildir, then checks the joined delivery events (sent and bounced),
the hops of the delivered message (edge then mx, in order) and its render features.
"""

from __future__ import annotations

import io
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from mailpulse.pi_firmware.events import DeliveryEvent, Event, MessageEvent
from mailpulse.pi_firmware.follow import Follower
from mailpulse.pi_firmware.maildir import MaildirWatcher
from mailpulse.pi_firmware.postfix import PostfixParser
from PIL import Image

from mailpulse.lab.servers import MailChain, missing_tools


def _message(to: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "sender@src.test"
    m["To"] = to
    m["Subject"] = "chain test"
    m.set_content("hello")
    buf = io.BytesIO()
    Image.new("RGB", (320, 200), (200, 10, 10)).save(buf, "PNG")
    m.add_attachment(buf.getvalue(), maintype="image", subtype="png", filename="red.png")
    return m


@pytest.mark.xdist_group("mailchain")
def test_chain_logs_and_maildir(tmp_path: Path) -> None:
    missing = missing_tools("postfix", root=True)
    if missing:
        pytest.skip("; ".join(missing))
    chain = MailChain()
    try:
        chain.start()
        followers = [Follower(p.maillog, tmp_path / f"{p.hostname}.pos", from_start=True)
                     for p in (chain.edge, chain.mx)]
        parsers = [PostfixParser(f"node-{i}") for i in range(2)]
        md = chain.mail_root / "probe" / "Maildir"
        watcher = MaildirWatcher(md, "node-0", tmp_path / "seen.json", backlog=True)
        for to in ("probe@probe.test", "nobody@nowhere.invalid"):
            with smtplib.SMTP(chain.edge.host, chain.edge.port, timeout=10) as s:
                s.send_message(_message(to))
        deliveries: list[DeliveryEvent] = []
        messages: list[Event] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for f, p in zip(followers, parsers):
                deliveries += p.feed(f.read_lines())
            messages += watcher.poll()
            statuses = sorted((e.host, e.agent, e.status) for e in deliveries)
            if messages and ("mx", "virtual", "sent") in statuses and ("edge", "smtp", "bounced") in statuses \
                    and ("edge", "smtp", "sent") in statuses:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"events did not arrive: {[(e.host, e.agent, e.status) for e in deliveries]} "
                        f"{chain.edge.log_text()[-2000:]}")
    finally:
        chain.cleanup()
    sent_edge = next(e for e in deliveries if (e.host, e.agent, e.status) == ("edge", "smtp", "sent"))
    bounced = next(e for e in deliveries if e.status == "bounced" and e.recipient == "nobody@nowhere.invalid")
    sent_mx = next(e for e in deliveries if (e.host, e.agent) == ("mx", "virtual"))
    # the join: qmgr and cleanup lines of the same queue id
    assert sent_edge.sender == "sender@src.test" and sent_edge.size and sent_edge.nrcpt == 1
    assert sent_edge.message_id and sent_edge.message_id == sent_mx.message_id
    assert sent_edge.delays is not None and abs(sum(sent_edge.delays) - (sent_edge.delay or 0)) < 0.05
    assert bounced.dsn and bounced.dsn.startswith("5.")
    assert sent_mx.relay == "virtual" and sent_mx.recipient == "probe@probe.test"
    assert abs(sent_mx.ts - time.time()) < 300       # RFC 3164 stamps, local time, inferred year
    assert all(p.counters.unparsed == 0 for p in parsers)
    # the delivered message: hops edge then mx, render features from the PNG
    (msg,) = messages
    assert isinstance(msg, MessageEvent)
    hops = msg.hops
    assert [h["by"] for h in hops][-2:] == ["edge.mailpulse.test", "mx.mailpulse.test"]
    assert all(h["delay_s"] is None or abs(h["delay_s"]) < 60 for h in hops)
    mime = msg.mime
    assert [(i["format"], i["width"], i["height"], i["decoded"]) for i in mime["images"]] == [("PNG", 320, 200, True)]
    x = msg.vector()
    assert x[7] > 0 and x[5] == 0   # image pixels present, outcome delivered
