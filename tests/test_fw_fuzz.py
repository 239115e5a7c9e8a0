"""Fuzzing the message, Received and log-line parsers: no exception escapes, memory stays bounded.

A small count runs by default; ``MAILPULSE_SOAK=1`` runs at least a million inputs per parser (the
counts are printed and written to ``build/soak-counts.json`` when the module ends).  Inputs are
built from the fragments real inputs are made of (header names, boundaries, dates, zones, syslog
stamps of every format, Postfix fields, journal JSON), mutated and mixed with arbitrary bytes.

Memory: each input's peak traced allocation (``tracemalloc``, every input by default, every
hundredth under soak) must stay within a fixed multiple of its size plus a constant, and the
parser's own state (queue-id join, caches) within its bounds.
"""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailpulse.pi_firmware.headers import MessageRefused
from mailpulse.pi_firmware.maildir import analyse
from mailpulse.pi_firmware.mime import MimeLimits
from mailpulse.pi_firmware.postfix import PostfixParser
from mailpulse.pi_firmware.received import parse_chain
from PIL import Image

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"
ROOT = Path(__file__).resolve().parent.parent
COUNTS: Counter[str] = Counter()

#: Examples per test: at least a million inputs each under soak (several inputs per example).
N_MESSAGES = 1_000_000 if SOAK else 150
N_RECEIVED = 400_000 if SOAK else 150
N_LOG = 200_000 if SOAK else 150

def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
LIMITS = MimeLimits(max_parts=50, max_depth=8, max_headers=100, max_header_bytes=4096)


def _warm_up() -> None:
    """Import what the parsers import lazily (Pillow's plugins), so it does not count as a peak."""
    Image.init()
    for fmt in ("PNG", "JPEG", "GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, fmt)
        m = MIMEMultipart()
        m.attach(MIMEImage(buf.getvalue(), fmt.lower()))
        analyse(m.as_bytes())


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    _warm_up()
    yield
    if SOAK:
        out = ROOT / "build" / "soak-counts.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(dict(COUNTS), indent=1))
    print(f"\nfuzz inputs: {dict(COUNTS)}")


def _bounded(fn: object, size: int, factor: int, const: int) -> None:
    """Run ``fn()`` under tracemalloc (every input, or every hundredth under soak): peak <= factor*size+const."""
    n = sum(COUNTS.values())
    if SOAK and n % 100:
        fn()  # type: ignore[operator]
        return
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= factor * size + const, f"peak {peak} bytes for an input of {size}"


# -- messages -------------------------------------------------------------------------------------

_HEADER_NAMES = st.sampled_from(["Received", "To", "Cc", "From", "Message-ID", "Content-Type",
                                 "Content-Transfer-Encoding", "Content-Disposition", "Subject", "X-A", "From "])
_CTYPES = st.sampled_from(["multipart/mixed; boundary=b", "multipart/mixed; boundary=\"b\"", "multipart/digest; "
                           "boundary=b", "message/rfc822", "message/delivery-status", "image/png", "image/jpeg",
                           "text/plain; charset=utf-8", "multipart/alternative", "application/octet-stream; name=x",
                           "multipart/mixed; boundary*0=b; boundary*1=c", "text", ""])
_VALUES = st.sampled_from(["a@b", "(((", "\"x, y\" <a@b>", "g: a@b, c@d;", "base64", "quoted-printable",
                           "attachment; filename=\"ü.bin\"", "from a ([192.0.2.1]) by b; Thu, 26 Nov 2026 10:00:00 +0000",
                           "from [::1] by b; 31 Feb 9999 25:61:61 +9999", "<id@x>", "università", "\\", "=?utf-8?q?x?="])
_BODY = st.sampled_from(["--b\n", "--b--\n", "--bc\n", "\n", "\r\n", "iVBORw0KGgo=\n", "=41=\n", "=\n", "\x89PNG\r\n\x1a\n",
                         "Content-Type: multipart/mixed; boundary=b\n\n", "Received: from x\n\n", "text\n", "\x00\xff"])


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=3000))
    out: list[str] = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(_HEADER_NAMES)
        value = draw(st.one_of(_CTYPES, _VALUES, st.text(max_size=80))) if name != "From " else "x"
        fold = "\n\t" if draw(st.booleans()) else ""
        out.append(f"{name}: {value}{fold}{draw(_VALUES) if fold else ''}\n")
    out.append("\n" if draw(st.booleans()) else "")
    out += draw(st.lists(st.one_of(_BODY, st.text(max_size=60)), max_size=30))
    data = "".join(out).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):   # a mutation: repeat a slice (deep nesting, long lines)
        a = draw(st.integers(0, len(data)))
        b = draw(st.integers(a, min(len(data), a + 60)))
        data = data[:a] + data[a:b] * draw(st.integers(1, 200)) + data[b:]
    return data


@fuzz(N_MESSAGES)
@given(_message())
def test_message_parser_never_raises(data: bytes) -> None:
    COUNTS["messages"] += 1

    def run() -> None:
        try:
            ev, doc = analyse(data, key="fuzz", limits=LIMITS)
        except MessageRefused as e:
            assert "mime." in str(e)
            return
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
        json.dumps(ev.payload(), ensure_ascii=False, allow_nan=False).encode("utf-8")

    _bounded(run, len(data), 40, 2 << 20)


# -- Received fields --------------------------------------------------------------------------------

_RECEIVED_PARTS = st.sampled_from([
    "from", "by", "with", "id", "for", "via", ";", "(", ")", "[", "]", " ", "\r\n\t", "\"", "\\", "HELO x",
    "192.0.2.1", "[192.0.2.1]", "IPv6:2001:db8::1", "(192.0.2.7)", "mx.example", "<a@b>", "Thu,", "26 Nov 2026",
    "31 Feb 9999", "10:00:00", "25:61:61", "+0000", "-1200", "+9999", "-0000", "(PDT)", "EST", "99", "01 Jan 70",
])


@fuzz(N_RECEIVED)
@given(st.lists(st.one_of(st.lists(_RECEIVED_PARTS, max_size=30).map(" ".join), st.text(max_size=200)),
                min_size=1, max_size=6))
def test_received_parser_never_raises(values: list[str]) -> None:
    COUNTS["received"] += len(values)

    def run() -> None:
        hops = parse_chain(values)
        for h in hops:
            j = h.to_json()
            json.dumps(j, ensure_ascii=False)
            assert h.ts is None or 0 <= h.ts <= 253402300799

    _bounded(run, sum(len(v) for v in values), 40, 1 << 20)


# -- log lines ---------------------------------------------------------------------------------------

_STAMPS = st.sampled_from([
    "Nov 26 10:00:00 ", "Nov 26 10:00:00.123456 ", "<22>Nov 26 10:00:00 ", "<999>Nov 26 ", "Feb 30 99:99:99 ",
    "2026-11-26T10:00:00+0000 ", "2026-11-26T10:00:00.5+01:00 ", "2026-13-40T25:61:61Z ", "<22>1 2026-11-26T10:00:00Z ",
    "<22>1 - ", "Thu 2026-11-26 10:00:00 UTC ", "Thu 2026-11-26 10:00:00 CET ", "Thu 9999-99-99 99:99:99 +99 ",
    "1795687200.123456 ", "99999999999.9 ", "@1795687200.5 ", "", "{", "[meta x=\"]\"] ", "- - ",
])
_FIELDS = st.sampled_from([
    "mx ", "postfix/smtp[1]: ", "postfix/qmgr[2]: ", "postfix/cleanup[3]: ", "postfix/smtp 26709 ", "4ABCDEF12: ",
    "4V6JZg0FYXz9sDN: ", "to=<a@b>, ", "to=a@b, ", "orig_to=<c>, ", "relay=x, ", "conn_use=2, ", "delay=1, ",
    "delay=1e999, ", "delays=1/2/3/4, ", "delays=nan/0/0/0, ", "dsn=2.0.0, ", "status=sent", "status=deliverable",
    "status=undeliverable", "status=softbounce", "from=<x>, size=1, nrcpt=1", "from=<x>, status=expired",
    "message-id=<m>", "removed", "\x00", "\udcff", ": ", " ", "\ufeff",
])
_JSON = st.fixed_dictionaries({}, optional={
    "MESSAGE": st.one_of(st.text(max_size=60), st.lists(st.integers(0, 300), max_size=40), st.integers()),
    "SYSLOG_IDENTIFIER": st.one_of(st.sampled_from(["postfix/smtp", "postfix/qmgr", ""]), st.integers()),
    "SYSLOG_PID": st.one_of(st.text(max_size=5), st.none()),
    "_HOSTNAME": st.text(max_size=10),
    "__REALTIME_TIMESTAMP": st.one_of(st.sampled_from(["1795687200000000", "0", "99999999999999999999", "-1", "x"]),
                                      st.integers()),
}).map(json.dumps)


@fuzz(N_LOG)
@given(st.lists(st.one_of(st.tuples(_STAMPS, st.lists(_FIELDS, max_size=14)).map(lambda t: t[0] + "".join(t[1])),
                          _JSON, st.text(max_size=150)), min_size=1, max_size=20))
def test_log_line_parser_never_raises(lines: list[str]) -> None:
    COUNTS["log_lines"] += len(lines)
    p = PostfixParser("n", year=2026, max_queue_ids=8)

    def run() -> None:
        evs = list(p.feed(lines))
        c = p.counters
        assert c.lines == len(lines) and c.events == len(evs) == sum(c.status.values())
        assert c.ignored + c.unparsed + c.used == c.lines and c.errors == 0, c.examples
        for e in evs:
            assert len(e.vector()) == 8
            json.dumps(e.payload(), ensure_ascii=False, allow_nan=False)
            e.payload_json().decode("utf-8")

    _bounded(run, sum(len(x) for x in lines), 60, 1 << 20)
    assert len(p.queue) <= 8 and len(p._ts_cache) <= 4097
