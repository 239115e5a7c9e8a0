"""Fuzzing the message, Received and log-line parsers: no exception escapes, memory stays bounded.

A small count runs by default; ``MAILPULSE_SOAK=1`` runs at least a million inputs per parser (the
counts are printed and written to ``build/soak-counts.json`` when the module ends).  Hypothesis
builds each example from the fragments real inputs are made of (header names, boundaries, dates,
zones, syslog stamps of every format, Postfix fields, journal JSON) mixed with arbitrary text, and
a seed; each example is then fed as it is and as :data:`MUTANTS` mutants made from it with that
seed (bytes replaced, fragments inserted, slices repeated or cut: :func:`mutants`), so a million
inputs do not cost a million Hypothesis examples.

Memory: the peak traced allocation (``tracemalloc``) of every input by default, of every hundredth
under soak, must stay within a fixed multiple of its size plus a constant, and the parser's own
state (queue-id join, caches) within its bounds.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
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

#: Examples per test, and mutants per example: at least a million inputs each under soak.
N_MESSAGES = 20_000 if SOAK else 60
N_RECEIVED = 8_000 if SOAK else 60
N_LOG = 8_000 if SOAK else 60
MUTANTS = 50 if SOAK else 4

#: What mutations insert: the pieces that make parsers branch.
_FRAGMENTS = [b"\n", b"\r\n", b"\n\n", b"--b\n", b"--b--\n", b"Content-Type: multipart/mixed; boundary=b\n\n",
              b"Content-Type: message/rfc822\n\n", b"Content-Transfer-Encoding: base64\n", b"(((", b")", b"\"", b"\\",
              b"=\n", b"=4", b"<", b">", b"[", b"]", b":", b";", b",", b"@", b"\x00", b"\xff", b"\xc3", b"\t", b" ",
              b"status=", b"to=<", b"from=<", b": ", b"[123]", b"{", b"}", b"\"MESSAGE\":", b"<22>", b"1 ", b"-",
              b"+9999", b"31 Feb 9999 25:61:61", b"Received: from a by b; ", b"iVBORw0KGgo", b"/9j/"]


def mutants(data: bytes, seed: int, n: int) -> Iterator[bytes]:
    """``n`` mutants of ``data``, deterministic in ``seed`` (a few edits each)."""
    rng = random.Random(seed)
    for _ in range(n):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            at = rng.randint(0, len(b))
            if op == 0 and b:
                b[min(at, len(b) - 1)] = rng.randrange(256)
            elif op == 1:
                b[at:at] = rng.choice(_FRAGMENTS)
            elif op == 2:
                end = min(len(b), at + rng.randint(1, 40))
                b[at:at] = bytes(b[at:end]) * rng.randint(2, 100)
            elif op == 3:
                del b[at:at + rng.randint(1, 20)]
            elif op == 4:
                del b[at:]
            else:
                b[at:at] = rng.choice(_FRAGMENTS) * rng.randint(2, 300)
        yield bytes(b)

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


def _bounded(fn: Callable[[], None], size: int, factor: int, const: int) -> None:
    """Run ``fn()`` under tracemalloc (every input, or every hundredth under soak): peak <= factor*size+const."""
    n = sum(COUNTS.values())
    if SOAK and n % 100:
        fn()
        return
    tracemalloc.start()
    try:
        fn()
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
                           "attachment; filename=\"ü.bin\"",
                           "from a ([192.0.2.1]) by b; Thu, 26 Nov 2026 10:00:00 +0000",
                           "from [::1] by b; 31 Feb 9999 25:61:61 +9999", "<id@x>", "università", "\\",
                           "=?utf-8?q?x?="])
_BODY = st.sampled_from(["--b\n", "--b--\n", "--bc\n", "\n", "\r\n", "iVBORw0KGgo=\n", "=41=\n", "=\n",
                         "\x89PNG\r\n\x1a\n", "Content-Type: multipart/mixed; boundary=b\n\n", "Received: from x\n\n",
                         "text\n", "\x00\xff"])


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
@given(_message(), st.integers(0, 2**32 - 1))
def test_message_parser_never_raises(data: bytes, seed: int) -> None:
    def one(msg: bytes) -> None:
        try:
            ev, doc = analyse(msg, key="fuzz", limits=LIMITS)
        except MessageRefused as e:
            assert "mime." in str(e)
            return
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
        json.dumps(ev.payload(), ensure_ascii=False, allow_nan=False).encode("utf-8")

    for msg in (data, *mutants(data, seed, MUTANTS)):
        COUNTS["messages"] += 1
        _bounded(functools.partial(one, msg), len(msg), 40, 2 << 20)


# -- Received fields --------------------------------------------------------------------------------

_RECEIVED_PARTS = st.sampled_from([
    "from", "by", "with", "id", "for", "via", ";", "(", ")", "[", "]", " ", "\r\n\t", "\"", "\\", "HELO x",
    "192.0.2.1", "[192.0.2.1]", "IPv6:2001:db8::1", "(192.0.2.7)", "mx.example", "<a@b>", "Thu,", "26 Nov 2026",
    "31 Feb 9999", "10:00:00", "25:61:61", "+0000", "-1200", "+9999", "-0000", "(PDT)", "EST", "99", "01 Jan 70",
])


@fuzz(N_RECEIVED)
@given(st.lists(st.one_of(st.lists(_RECEIVED_PARTS, max_size=30).map(" ".join), st.text(max_size=200)),
                min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_received_parser_never_raises(values: list[str], seed: int) -> None:
    def one(fields: list[str]) -> None:
        for h in parse_chain(fields):
            json.dumps(h.to_json(), ensure_ascii=False)
            assert h.ts is None or 0 <= h.ts <= 253402300799

    joined = "\x1e".join(values).encode("utf-8", "surrogatepass")
    for i, data in enumerate((joined, *mutants(joined, seed, MUTANTS))):
        fields = values if i == 0 else data.decode("utf-8", "surrogateescape").split("\x1e")
        COUNTS["received"] += len(fields)
        _bounded(functools.partial(one, fields), sum(len(v) for v in fields), 40, 1 << 20)


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
                          _JSON, st.text(max_size=150)), min_size=1, max_size=20), st.integers(0, 2**32 - 1))
def test_log_line_parser_never_raises(lines: list[str], seed: int) -> None:
    p = PostfixParser("n", year=2026, max_queue_ids=8)

    def one(batch: list[str]) -> None:
        before = p.counters.lines, p.counters.events
        evs = list(p.feed(batch))
        c = p.counters
        assert c.lines - before[0] == len(batch) and c.events - before[1] == len(evs)
        assert c.events == sum(c.status.values()) and c.ignored + c.unparsed + c.used == c.lines
        assert c.errors == 0, c.examples
        for e in evs:
            assert len(e.vector()) == 8
            json.dumps(e.payload(), ensure_ascii=False, allow_nan=False)
            e.payload_json().decode("utf-8")

    joined = "\n".join(lines).encode("utf-8", "surrogateescape")
    for i, data in enumerate((joined, *mutants(joined, seed, MUTANTS))):
        batch = lines if i == 0 else data.decode("utf-8", "surrogateescape").split("\n")
        COUNTS["log_lines"] += len(batch)
        _bounded(functools.partial(one, batch), sum(len(x) for x in batch), 60, 1 << 20)
    assert len(p.queue) <= 8 and len(p._ts_cache) <= 4097
