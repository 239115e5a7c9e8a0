"""Postfix log parsing and the queue-id join: exact counts, both timestamp forms, bounded memory, fuzzing."""

from __future__ import annotations

import os
import threading
import time as _t
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailpulse.pi_firmware.node import PostfixLogSource
from mailpulse.pi_firmware.postfix import PostfixParser, parse_lines
from mailpulse.pi_firmware.spool import Spool
from mailpulse.pi_firmware.synthlog import Expected, generate

from mailpulse import features as F

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"

# A backslash at the end of a line continues the log line: the string has no newline there.
LOG = """\
Nov 26 10:00:00 mx1 postfix/smtpd[100]: connect from unknown[10.0.0.1]
Nov 26 10:00:00 mx1 postfix/smtpd[100]: 4ABCDEF12: client=unknown[10.0.0.1]
Nov 26 10:00:00 mx1 postfix/cleanup[101]: 4ABCDEF12: message-id=<m1@x>
Nov 26 10:00:00 mx1 postfix/qmgr[102]: 4ABCDEF12: from=<a@x.org>, size=4567, nrcpt=3 (queue active)
Nov 26 10:00:01 mx1 postfix/smtp[103]: 4ABCDEF12: to=<b@y.org>, relay=mx.y.org[192.0.2.4]:25, delay=1.2, \
delays=0.1/0.01/0.5/0.59, dsn=2.0.0, status=sent (250 ok)
2026-11-26T10:00:01.250000+00:00 mx1 postfix/smtp[103]: 4ABCDEF12: to=<c@z.org>, orig_to=<cc@z.org>, \
relay=none, delay=1.3, delays=0.1/0.01/1.2/0, dsn=4.4.1, status=deferred (connect to z.org: timed out)
Nov 26 10:00:02 mx1 postfix/lmtp[104]: 4ABCDEF12: to=<d@local>, relay=mail.local[private/dovecot-lmtp], \
conn_use=2, delay=2, delays=1/0/0.5/0.5, dsn=5.1.1, status=bounced (user unknown)
Nov 26 10:00:02 mx1 postfix/smtpd[100]: warning: hostname 10.0.0.1 does not resolve
Nov 26 10:00:02 mx1 postfix/smtpd[100]: NOQUEUE: reject: RCPT from x[10.0.0.9]: 554 5.7.1 <q@x>: Relay access denied; \
from=<s@x> to=<q@x> proto=ESMTP helo=<x>
\x00 garbage, not syslog
Nov 26 10:00:03 mx1 postfix/smtp[103]: 4ABCDEF12: to=<e@y.org>, relay=mx.y.org, status=sent (broken line)
Nov 27 10:00:00 mx1 postfix/qmgr[102]: 4ABCDEF12: from=<a@x.org>, status=expired, returned to sender
Nov 27 10:00:00 mx1 postfix/qmgr[102]: 4ABCDEF12: removed
Nov 27 10:00:00 mx1 postfix-out/local[105]: 4V6JZg0FYXz9sDN: to=<u@localhost>, relay=local, delay=0.01, \
delays=0/0/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)
Nov 27 10:00:00 mx1 postfix/pipe[106]: 4V6JZg0FYXz9sDN: to=<v@localhost>, relay=spamfilter, delay=0.2, \
delays=0/0/0/0.2, dsn=2.0.0, status=sent (delivered via spamfilter service)
"""


def test_join_and_fields() -> None:
    evs, c = parse_lines(LOG.splitlines(), "n1", year=2026)
    assert [(e.agent, e.recipient, e.status) for e in evs] == [
        ("smtp", "b@y.org", "sent"), ("smtp", "c@z.org", "deferred"), ("lmtp", "d@local", "bounced"),
        ("qmgr", "c@z.org", "expired"), ("local", "u@localhost", "sent"), ("pipe", "v@localhost", "sent")]
    a = evs[0]
    assert (a.sender, a.size, a.nrcpt, a.message_id) == ("a@x.org", 4567, 3, "m1@x")
    assert a.delays == (0.1, 0.01, 0.5, 0.59) and a.delay == 1.2 and a.dsn == "2.0.0"
    assert a.relay == "mx.y.org[192.0.2.4]:25"
    assert evs[1].ts == datetime(2026, 11, 26, 10, 0, 1, 250000, tzinfo=UTC).timestamp()
    assert evs[3].dsn == "4.4.1" and evs[3].size == 4567     # expired: the still deferred recipient
    assert evs[4].sender is None and evs[4].queue_id == "4V6JZg0FYXz9sDN"   # long queue id, no join
    assert c.lines == 15 and c.events == 6 and c.unparsed == 2   # the garbage and the broken status line
    assert c.status == {"sent": 3, "deferred": 1, "bounced": 1, "expired": 1, "deliverable": 0, "undeliverable": 0}
    assert c.used == 2 + 6 and c.ignored == 5   # cleanup + qmgr from= + 6 event lines; removed is "ignored"
    assert c.lines == c.ignored + c.unparsed + c.used


def test_event_ids_are_deterministic_and_unique() -> None:
    a, _ = parse_lines(LOG.splitlines(), "n1", year=2026)
    b, _ = parse_lines(LOG.splitlines(), "n1", year=2026)
    c, _ = parse_lines(LOG.splitlines(), "n2", year=2026)
    assert [e.id for e in a] == [e.id for e in b]
    assert len({e.id for e in a}) == len(a)
    assert not {e.id for e in a} & {e.id for e in c}
    p = a[0].payload()
    assert p["schema"] == F.SCHEMA_VERSION and p["kind"] == "delivery"
    assert len(p["x"]) == 8 and p["fields"]["to"] == "b@y.org"


def test_rfc3164_timestamps_are_local_time() -> None:
    p = PostfixParser(year=2026)
    assert p.timestamp("Nov 26 10:00:00") == _t.mktime((2026, 11, 26, 10, 0, 0, 0, 0, -1))
    assert p.timestamp("Nov  6 10:00:00.5") == _t.mktime((2026, 11, 6, 10, 0, 0, 0, 0, -1)) + 0.5
    assert p.timestamp("2026-11-26T10:00:00Z") == datetime(2026, 11, 26, 10, tzinfo=UTC).timestamp()


def test_synthetic_log_exact_counts_both_formats() -> None:
    for rfc3339 in (False, True):
        exp = Expected()
        lines = list(generate(20_000, seed=7, rfc3339=rfc3339, garbage_every=997, expected=exp))
        p = PostfixParser("n", year=2026)
        n_ev = sum(1 for _ in p.feed(lines))
        c = p.counters
        assert c.lines == exp.lines == len(lines)
        assert c.status == exp.status and n_ev == exp.events
        assert c.unparsed == exp.garbage > 0
        assert len(p.queue) < 50          # removed lines evicted almost everything


def test_memory_is_bounded_by_the_cap() -> None:
    p = PostfixParser("n", year=2026, max_queue_ids=100)
    lines = [f"Nov 26 10:00:00 h postfix/qmgr[1]: {i:010X}: from=<a@b>, size=1, nrcpt=1 (queue active)"
             for i in range(5000)]
    list(p.feed(lines))
    assert len(p.queue) == 100 and p.counters.evicted == 4900
    assert list(p.queue)[-1] == f"{4999:010X}"


def test_memory_is_bounded_by_age() -> None:
    p = PostfixParser("n", year=2026, max_age_s=3600)
    lines = [f"Nov {1 + i // 1440:2d} {(i // 60) % 24:02d}:{i % 60:02d}:00 h postfix/qmgr[1]: {i:010X}: from=<a@b>, "
             "size=1, nrcpt=1 (queue active)" for i in range(20 * 1440 // 10)]
    list(p.feed(lines))
    assert len(p.queue) <= 4096 + 61


_line_parts = st.sampled_from([
    "Nov 26 10:00:00 ", "2026-11-26T10:00:00.5+01:00 ", "Feb 30 99:99:99 ", "", "h ", "postfix/smtp[1]: ",
    "postfix/qmgr[2]: ", "postfix/cleanup[3]: ", "4ABCDEF12: ", "to=<a@b>, ", "relay=x, ", "delay=1, ",
    "delays=1/2/3/4, ", "dsn=2.0.0, ", "status=sent", "from=<x>, size=1, nrcpt=1", "message-id=<m>", "removed",
    "status=expired", "\x00", "\xff", ": ", " ",
])


@settings(max_examples=5000 if SOAK else 200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.lists(_line_parts, max_size=14).map("".join), st.text(max_size=120)), max_size=25))
def test_fuzz_never_raises_and_counts_add_up(lines: list[str]) -> None:
    p = PostfixParser("n", year=2026, max_queue_ids=8)
    evs = list(p.feed(lines))
    c = p.counters
    assert c.lines == len(lines) and c.events == len(evs) == sum(c.status.values())
    assert c.ignored + c.unparsed + c.used == c.lines
    assert len(p.queue) <= 8
    for e in evs:
        assert len(e.vector()) == 8


def test_join_survives_a_restart(tmp_path: Path) -> None:
    lines = list(generate(4000, seed=3))
    whole = [e.payload() for e in PostfixParser("n", year=2026).feed(lines)]
    a = PostfixParser("n", year=2026)
    first = [e.payload() for e in a.feed(lines[:2000])]
    a.save_state(tmp_path / "join.json")
    b = PostfixParser("n", year=2026)
    assert b.load_state(tmp_path / "join.json") and len(b.queue) == len(a.queue) > 0
    second = [e.payload() for e in b.feed(lines[2000:])]
    assert first + second == whole
    c = PostfixParser("n", year=2026)
    (tmp_path / "bad.json").write_text("{")
    assert not c.load_state(tmp_path / "bad.json") and not c.queue


# A .forward with "\u, |/usr/bin/filter": two deliveries of one recipient in the same second, and a
# recipient listed twice (duplicate_filter_limit = 0): two byte-identical lines.
SAME_SECOND = """\
Nov 26 10:00:05 mx1 postfix/local[110]: 4F00D1234: to=<u@mx1>, orig_to=<u>, relay=local, delay=0.02, \
delays=0/0/0/0.02, dsn=2.0.0, status=sent (delivered to mailbox)
Nov 26 10:00:05 mx1 postfix/local[110]: 4F00D1234: to=<u@mx1>, orig_to=<u>, relay=local, delay=0.03, \
delays=0/0/0/0.03, dsn=2.0.0, status=sent (delivered to command: /usr/bin/filter)
Nov 26 10:00:05 mx1 postfix/smtp[111]: 4F00D1234: to=<w@y.org>, relay=mx.y.org[192.0.2.4]:25, delay=0.2, \
delays=0/0/0.1/0.1, dsn=2.0.0, status=sent (250 ok)
Nov 26 10:00:05 mx1 postfix/smtp[111]: 4F00D1234: to=<w@y.org>, relay=mx.y.org[192.0.2.4]:25, delay=0.2, \
delays=0/0/0.1/0.1, dsn=2.0.0, status=sent (250 ok)
Nov 26 10:00:06 mx1 postfix/smtp[111]: 4F00D1234: to=<w@y.org>, relay=mx.y.org[192.0.2.4]:25, delay=0.2, \
delays=0/0/0.1/0.1, dsn=2.0.0, status=sent (250 ok)
"""


def test_attempts_in_the_same_second_get_distinct_ids_that_survive_a_restart(tmp_path: Path) -> None:
    lines = SAME_SECOND.splitlines(keepends=True)
    evs, c = parse_lines(lines, "n1", year=2026)
    assert c.events == 5
    # same queue id, recipient, second, status and dsn: distinct attempts, distinct ids
    assert (evs[0].recipient, evs[0].stamp, evs[0].status, evs[0].dsn) == \
        (evs[1].recipient, evs[1].stamp, evs[1].status, evs[1].dsn)
    assert evs[2].text == evs[3].text and (evs[2].occ, evs[3].occ, evs[4].occ) == (0, 1, 0)
    assert len({e.id for e in evs}) == 5
    # so the spool keeps all of them (it drops a repeated id as a duplicate)
    spool = Spool(tmp_path / "s.db")
    assert spool.put_many([("events", e.id, e.payload_json()) for e in evs]) == 5
    spool.close()
    # deterministic: re-read whole, without newlines (the follower's form), or with a restart
    # between the identical lines (the occurrence counters travel with the follower's position)
    again, _ = parse_lines([s.rstrip("\n") for s in lines], "n1", year=2026)
    assert [e.id for e in again] == [e.id for e in evs]
    p1 = PostfixParser("n1", year=2026)
    first = list(p1.feed(lines[:3]))
    p1.save_state(tmp_path / "join.json")
    p2 = PostfixParser("n1", year=2026)
    assert p2.load_state(tmp_path / "join.json")
    assert [e.id for e in first + list(p2.feed(lines[3:]))] == [e.id for e in evs]


def test_log_source_keeps_ids_and_join_across_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    head = LOG.splitlines(keepends=True)
    lines = head[:4] + SAME_SECOND.splitlines(keepends=True) + head[4:5]
    want, _ = parse_lines(lines, "n1", year=2026)
    cut = 4 + 3        # after the qmgr line of 4ABCDEF12 and the first of two identical lines
    got: list = []

    def run_source(n_events: int) -> None:
        stop = threading.Event()

        def emit(evs: list) -> None:
            got.extend(evs)
            if len(got) >= n_events:
                stop.set()

        src = PostfixLogSource(log, "n1", state_file=tmp_path / "postfix.pos", from_start=True, poll_s=0.01,
                               year=2026)
        t = threading.Thread(target=src.run, args=(emit, stop))
        t.start()
        t.join(10)
        stop.set()
        assert not t.is_alive()

    log.write_text("".join(lines[:cut]))
    run_source(3)                                  # the daemon stops after the first identical line
    with log.open("a") as f:
        f.write("".join(lines[cut:]))
    run_source(len(want))                          # restarted: continues at the saved position
    assert [e.id for e in got] == [e.id for e in want]
    assert got[-1].sender == "a@x.org" and got[-1].size == 4567    # the join survived the restart


def test_virtual_and_error_agents() -> None:
    log = [
        "Nov 26 10:00:00 mx1 postfix/qmgr[1]: 4C0FFEE99: from=<a@x>, size=100, nrcpt=2 (queue active)",
        "Nov 26 10:00:00 mx1 postfix/virtual[2]: 4C0FFEE99: to=<v@vhost.test>, relay=virtual, delay=0.05, "
        "delays=0.01/0/0/0.04, dsn=2.0.0, status=sent (delivered to maildir)",
        "Nov 26 10:00:00 mx1 postfix/error[3]: 4C0FFEE99: to=<e@gone.test>, relay=none, delay=0.06, "
        "delays=0.01/0/0/0.05, dsn=5.0.0, status=bounced (Host or domain name not found)",
    ]
    (v, e), c = parse_lines(log, "n1", year=2026)
    assert (v.agent, v.status, v.relay, v.size) == ("virtual", "sent", "virtual", 100)
    assert (e.agent, e.status, e.dsn, e.relay, e.nrcpt) == ("error", "bounced", "5.0.0", "none", 2)
    assert c.unparsed == 0 and c.used == 3


def test_a_used_line_without_a_queue_id_is_unparsed_not_an_event() -> None:
    # found by the fuzz test: a qmgr "status=expired" line with no queue id became an event whose
    # payload could not be written (queue_id None)
    log = ["Nov 26 10:00:00 postfix/smtp[1]: postfix/qmgr[2]: from=<x>, status=expired"]
    events, c = parse_lines(log, "n1", year=2026)
    assert events == [] and c.unparsed == 1
    assert [reason for reason, _ in c.examples] == ["a to=/from=/message-id= line without a queue id"]


def test_a_deferral_without_a_connection_belongs_to_the_relay_postfix_was_trying() -> None:
    """``relay=none`` deferrals: the relay their text names with a port, else the recipient domain's
    last relay (a destination Postfix marked dead after failed TLS names no port), else ``none``."""
    pre = "Nov 26 10:00:0{} edge postfix/smtp[7]: 4D1AB{}: to=<{}>, relay={}, delay=0.2, delays=0.1/0/0.1/0, "
    log = [
        pre.format(0, 0, "x@b.test", "127.0.0.1[127.0.0.1]:2526")
        + "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host 127.0.0.1[127.0.0.1])",
        pre.format(1, 1, "y@B.test", "none")
        + "dsn=4.7.4, status=deferred (delivery temporarily suspended: TLS is required, but was not offered by "
          "host 127.0.0.1[127.0.0.1])",
        pre.format(2, 2, "z@c.test", "none")
        + "dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:2527: Connection refused)",
        pre.format(3, 3, "w@d.test", "none") + "dsn=4.4.1, status=deferred (connect to d.test: timed out)",
        pre.format(4, 4, "v@b.test", "none") + "dsn=5.0.0, status=bounced (Host or domain name not found)",
    ]
    evs, c = parse_lines(log, "n1", year=2026)
    assert [e.relay for e in evs] == ["127.0.0.1[127.0.0.1]:2526", "127.0.0.1[127.0.0.1]:2526",
                                      "127.0.0.1[127.0.0.1]:2527", "none", "none"]
    assert c.unparsed == 0
