"""Hostile messages (issue: the node never stops watching): each input is built here, at test time.

One bad message must not stop the Maildir watcher; limits are checked before and while the bytes
are read; ``mailpulse inspect`` answers every input with a document or one sentence (exit 2); the
smaller header points (UTF-8, hop addresses, dates).
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from email.charset import QP, Charset
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailpulse.pi_firmware.events import Event, MessageEvent
from mailpulse.pi_firmware.headers import count_addresses
from mailpulse.pi_firmware.maildir import MaildirWatcher, analyse, inspect_file
from mailpulse.pi_firmware.mime import MimeLimits, walk
from mailpulse.pi_firmware.quarantine import Quarantine, describe
from mailpulse.pi_firmware.received import MAX_HOPS, check_date, parse_chain, parse_received
from PIL import Image

from mailpulse.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SOAK = os.environ.get("MAILPULSE_SOAK") == "1"

PAREN_TO = b"From: a@example.org\nTo: " + b"(" * 5000 + b"\nSubject: x\n\nbody\n"
YEAR_10000 = b"Received: from a by b; Fri, 31 Dec 9999 23:59:59 -1200\nFrom: a@example.org\n\nbody\n"


def _good(i: int) -> bytes:
    return (f"Received: from relay{i}.example ([192.0.2.{i}]) by mx.example; Thu, 26 Nov 2026 10:00:0{i} +0000\n"
            f"Message-ID: <good{i}@example.org>\nFrom: a@example.org\nTo: b@example.org\n\nhello {i}\n").encode()


def _deep(levels: int) -> bytes:
    out = "Received: from a.example by b.example; Thu, 26 Nov 2026 10:00:00 +0000\n"
    out += "Content-Type: multipart/mixed; boundary=b0\n\n"
    out += "".join(f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(levels))
    return (out + "x\n").encode()


def _key(e: Event) -> str:
    """The Maildir file name a message event came from (the watcher emits message events only)."""
    assert isinstance(e, MessageEvent), e
    return e.key


def _cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailpulse", *args], input=stdin, capture_output=True,
                          cwd=ROOT, timeout=timeout)


# -- finding 1: one bad message stops Maildir monitoring ----------------------------------------


def test_recursion_bomb_in_to_is_analysed() -> None:
    ev, doc = analyse(PAREN_TO)
    assert ev.recipients == 0 and doc["mime"]["parts"] == 1


def test_year_10000_date_is_refused_not_raised() -> None:
    _, doc = analyse(YEAR_10000)
    hop = doc["hops"][0]
    assert hop["timestamp"] is None and "1970-9999" in hop["date_note"]


def test_maildir_with_poisoned_messages_emits_every_good_one(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    good = [f"100{i}.M1P1.host" for i in range(5)]
    for i, name in enumerate(good):
        (md / "new" / name).write_bytes(_good(i))
        os.utime(md / "new" / name, (1000 + 2 * i, 1000 + 2 * i))
    poison = {"1001.M2P1.host": PAREN_TO, "1003.M2P1.host": YEAR_10000, "1005.M2P1.host": _deep(10_000),
              "1007.M2P1.host": b"From: a@b\nTo: " + b"a@b, " * 20_000 + b"\n\nx\n"}
    for i, (name, data) in enumerate(poison.items()):
        (md / "new" / name).write_bytes(data)
        os.utime(md / "new" / name, (1001 + 2 * i, 1001 + 2 * i))
    os.mkfifo(md / "new" / "1009.M3P1.host")                      # a FIFO nobody writes: must not hang
    os.symlink("/dev/zero", md / "new" / "1010.M4P1.host")        # a device: must not be read
    q = Quarantine(tmp_path / "quarantine.jsonl")
    w = MaildirWatcher(md, "n1", tmp_path / "seen.json", backlog=True, quarantine=q)
    emitted: list[list[Event]] = []
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(lambda evs: emitted.append(list(evs)), stop), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (w.seen.keys() >= set(good) | set(poison)):
        time.sleep(0.05)
    time.sleep(0.3)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    keys = [_key(e) for batch in emitted for e in batch]
    assert set(good) <= set(keys)
    assert len(keys) == len(set(keys)), "a message was emitted twice"
    c = w.counters()
    assert c["refused"] == 3 and c["failed"] == 0          # the long To:, the FIFO, /dev/zero
    assert q.counts["maildir"] == 3
    records = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    reasons = " ".join(r["reason"] for r in records)
    assert "mime.max_header_bytes" in reasons and "FIFO" in reasons and "character device" in reasons
    # the seen state survives: a new watcher emits nothing again
    assert MaildirWatcher(md, "n1", tmp_path / "seen.json").poll() == []


def test_a_message_whose_analysis_raises_is_quarantined_and_the_rest_goes_on(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mailpulse.pi_firmware import maildir

    md = tmp_path / "Maildir"
    (md / "new").mkdir(parents=True)
    (md / "cur").mkdir()
    for i in range(3):
        (md / "new" / f"10{i}.x").write_bytes(_good(i))
    real = maildir.analyse

    def flaky(data: bytes, *, key: str = "", node: str = "", limits: MimeLimits | None = None,
              ts: float | None = None) -> tuple[MessageEvent, dict[str, Any]]:
        if b"hello 1" in data:
            raise RuntimeError(f"parser bug on {object()!r}")
        return real(data, key=key, node=node, limits=limits, ts=ts)

    monkeypatch.setattr(maildir, "analyse", flaky)
    w = MaildirWatcher(md, "n1", backlog=True)
    assert sorted(_key(e) for e in w.poll()) == ["100.x", "102.x"]
    assert w.counters()["failed"] == 1 and w.poll() == []
    assert "0x" not in w.quarantine.last["maildir"] and "RuntimeError" in w.quarantine.last["maildir"]


# -- finding 2: guards before the parse --------------------------------------------------------


def test_deep_nesting_keeps_the_hops_and_names_the_limit() -> None:
    t = time.monotonic()
    _, doc = analyse(_deep(10_000))
    assert time.monotonic() - t < 10
    assert doc["hops"] and doc["hops"][0]["from"] == "a.example"
    assert any("mime.max_parts" in m for m in doc["mime"]["limits"])
    _, doc = analyse(_deep(500), limits=MimeLimits(max_parts=10_000))
    assert doc["mime"]["depth"] == 32 and any("mime.max_depth" in m for m in doc["mime"]["limits"])


@pytest.mark.parametrize("target,fragment", [("/dev/zero", "character device"), ("fifo", "FIFO")])
def test_inspect_refuses_devices_and_fifos_at_once(tmp_path: Path, target: str, fragment: str) -> None:
    if target == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    r = _cli("inspect", target, timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and fragment in err and err.count("\n") == 1


def test_stdin_is_read_under_the_same_limit() -> None:
    r = _cli("inspect", "--compact", "-", stdin=_good(1))
    assert r.returncode == 0 and json.loads(r.stdout)["hops"][0]["ip"] == "192.0.2.1"
    with pytest.raises(UserError, match=r"mime\.max_bytes"):
        inspect_file("/dev/stdin", MimeLimits(max_bytes=1000), stdin=io.BytesIO(_good(1) + b"x" * 5000))


def test_big_stdin_is_refused_with_bounded_memory() -> None:
    code = ("import resource, subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-m', 'mailpulse', 'inspect', '/dev/stdin'],"
            " stdin=subprocess.PIPE, stderr=subprocess.PIPE)\n"
            "chunk = b'From: a@b\\n\\n' + b'x' * (1 << 20)\n"
            "try:\n"
            "    for _ in range(200):\n"
            "        p.stdin.write(chunk)\n"
            "except BrokenPipeError:\n"
            "    pass\n"
            "err = p.communicate()[1].decode()\n"
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, err.strip())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    rc, maxrss_kb, err = r.stdout.split(" ", 2)
    assert rc == "2" and "mime.max_bytes" in err and "Traceback" not in err
    assert int(maxrss_kb) * 1024 < 64 * 2**20 * 3, f"reading a 200 MB stdin peaked at {maxrss_kb} kB"


def test_ten_megabyte_header_is_refused_quickly(tmp_path: Path) -> None:
    p = tmp_path / "to.eml"
    p.write_bytes(b"From: a@example.org\nTo: " + b"a@example.org, " * 700_000 + b"\n\nx\n")
    t = time.process_time()
    with pytest.raises(UserError, match=r"'To'.*mime.max_header_bytes"):
        inspect_file(p)
    assert time.process_time() - t < 2


def test_header_count_limit() -> None:
    data = b"".join(b"X-H%d: v\n" % i for i in range(2000)) + b"\nbody\n"
    with pytest.raises(UserError, match=r"mime\.max_headers"):
        inspect_file_bytes(data)
    assert walk(data).limits[0].startswith("headers:")


def inspect_file_bytes(data: bytes) -> dict[str, object]:
    return inspect_file("-", stdin=io.BytesIO(data))


def test_inspect_never_ends_in_a_traceback_on_the_reported_inputs(tmp_path: Path) -> None:
    for i, data in enumerate((PAREN_TO, YEAR_10000, _deep(10_000))):
        p = tmp_path / f"{i}.eml"
        p.write_bytes(data)
        r = _cli("inspect", "--compact", str(p))
        assert r.returncode == 0, r.stderr.decode()
        json.loads(r.stdout)


# -- finding 3: memory ---------------------------------------------------------------------------


def test_peak_memory_is_within_three_times_a_large_message(tmp_path: Path) -> None:
    """The node's path (the Maildir watcher, a process of its own) on a 48 MB message (a 4K photo and
    an attachment, base64) at the default limits: peak RSS at most three times the message."""
    import numpy as np

    rng = np.random.default_rng(3)
    m = MIMEMultipart("mixed")
    m["From"], m["To"] = "a@example.org", "b@example.org"
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    m.attach(MIMEImage(buf.getvalue(), "jpeg"))
    m.attach(MIMEApplication(rng.integers(0, 256, 30 << 20, dtype=np.uint8).tobytes()))
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    p = md / "new" / "1700000000.M1P1.host"
    p.write_bytes(m.as_bytes())
    size = p.stat().st_size
    code = ("import resource, subprocess, sys\n"
            "watch = ('import sys; from mailpulse.pi_firmware.maildir import MaildirWatcher; '\n"
            "         'w = MaildirWatcher(sys.argv[1], backlog=True); (ev,) = w.poll(); '\n"
            "         'assert ev.mime[\"images\"][0][\"decoded\"], ev.mime')\n"
            f"r = subprocess.run([sys.executable, '-c', watch, {str(md)!r}], capture_output=True, text=True)\n"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.stderr[-300:])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    rc, maxrss_kb, *err = r.stdout.split(" ", 2)
    assert rc == "0", err
    assert int(maxrss_kb) * 1024 <= 3 * size, f"peak {int(maxrss_kb) >> 10} MiB for a {size >> 20} MiB message"


# -- finding 6: the smaller points ---------------------------------------------------------------


def test_utf8_header_fields_are_text() -> None:
    data = ("From: a@example.org\nReceived: from mail.università.it by mx.example; Thu, 26 Nov 2026 10:00:00 +0000\n"
            "To: Zoë <zoe@example.org>\n\nx\n").encode()
    ev, doc = analyse(data)
    assert doc["hops"][0]["from"] == "mail.università.it" and ev.recipients == 1
    bad = analyse(b"Received: from a\xff\xfe by b; Thu, 26 Nov 2026 10:00:00 +0000\n\nx\n")[1]
    json.dumps(bad, ensure_ascii=False).encode("utf-8")   # never a lone surrogate


@pytest.mark.parametrize("value,ip", [
    ("from [192.0.2.1] by mx.example; Thu, 26 Nov 2026 10:00:00 +0000", "192.0.2.1"),
    ("from host.example [192.0.2.2] by mx.example with esmtp; Thu, 26 Nov 2026 10:00:00 +0000", "192.0.2.2"),
    ("from unknown (HELO mail.example.com) (192.0.2.3) by mx.example with SMTP; Thu, 26 Nov 2026 10:00:00 +0000",
     "192.0.2.3"),
    ("from unknown (HELO x) ([IPv6:2001:db8::1]) by mx.example; Thu, 26 Nov 2026 10:00:00 +0000", "2001:db8::1"),
    ("from h.example (h.example [192.0.2.4]) by mx.example (Postfix) with ESMTP id 4Q1", "192.0.2.4"),
    ("from h.example by mx.example (192.0.2.9); Thu, 26 Nov 2026 10:00:00 +0000", None),   # the by side's
    ("from [999.1.1.1] by mx.example; Thu, 26 Nov 2026 10:00:00 +0000", None),                # not an address
])
def test_hop_ip_forms(value: str, ip: str | None) -> None:
    assert parse_received(value).ip == ip


def test_dates_without_zone_are_flagged_and_impossible_ones_refused() -> None:
    ts, note, known = check_date("Thu, 26 Nov 2026 10:00:00")
    assert ts is not None and not known and "no zone" in (note or "")
    hops = parse_chain(["from b by c; Thu, 26 Nov 2026 10:00:05", "from a by b; Thu, 26 Nov 2026 10:00:00 +0000"])
    assert hops[0].delay_s == 5.0 and hops[0].delay_uncertain
    for bad, why in (("Thu, 26 Nov 2026 10:00:00 +9900", "beyond"), ("Thu, 26 Nov 2026 10:00:00 -0099", "beyond"),
                     ("Sat, 31 Feb 2026 25:61:61 +0000", "not a valid"), ("31 Feb 2026 10:00:00 +0000", "not a valid")):
        ts, note, _ = check_date(bad)
        assert ts is None and why in (note or ""), bad
    assert check_date("Thu, 26 Nov 2026 10:00:00 +1400")[0] is not None
    assert check_date("Thu, 26 Nov 2026 10:00:00 +1400")[1] is None


def test_zone_less_delays_do_not_feed_the_features() -> None:
    data = (b"Received: from b by c; Thu, 26 Nov 2026 12:00:00\n"
            b"Received: from a by b; Thu, 26 Nov 2026 10:00:00 +0000\n\nx\n")
    ev, doc = analyse(data)
    assert doc["hops"][0]["delay_uncertain"] is True
    assert ev.raw_features()["delay_queue_ms"] is None and ev.raw_features()["delay_total_ms"] is None


def test_hops_beyond_the_limit_are_counted() -> None:
    fields = "".join(f"Received: from h{i} by h{i + 1}; Thu, 26 Nov 2026 10:00:00 +0000\n" for i in range(130))
    ev, doc = analyse(fields.encode() + b"\nx\n")
    assert len(doc["hops"]) == MAX_HOPS and doc["hops_dropped"] == 30
    assert ev.fields()["hops_dropped"] == 30


def test_error_sentences_carry_no_memory_addresses() -> None:
    m = MIMEMultipart()
    m.attach(MIMEImage(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "png"))
    s = walk(m.as_bytes())
    assert s.images[0].error and "0x" not in s.images[0].error and "does not decode" in s.images[0].error
    assert describe(ValueError(f"bad {object()!r}")) == "ValueError: bad <object>"


# -- the walker agrees with the standard library's parser ----------------------------------------


def _reference(data: bytes) -> dict[str, object]:
    """The counts the standard parser's tree gives (what the walker replaced)."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out: Counter[str] = Counter()
    types: Counter[str] = Counter()

    def visit(part: email.message.Message, depth: int) -> None:
        out["parts"] += 1
        out["depth"] = max(out["depth"], depth)
        types[part.get_content_type()] += 1
        if part.is_multipart():
            out["messages" if part.get_content_type().startswith("message/") else "multiparts"] += 1
            payload = part.get_payload()
            for child in payload if isinstance(payload, list) else [payload]:
                assert isinstance(child, email.message.Message), child
                visit(child, depth + 1)
            return
        out["leaf_parts"] += 1
        if part.get_filename() or (part.get("content-disposition") or "").strip().lower().startswith("attachment"):
            out["attachments"] += 1
        body = part.get_payload(decode=True)
        out["body_bytes"] += len(body) if isinstance(body, bytes) else 0

    visit(msg, 0)
    # unfolded first (RFC 5322 2.2.3): getaddresses stops at a CRLF folded inside a quoted string
    rcpts = [re.sub(r"\r?\n(?=[ \t])", "", str(v)) for k in ("to", "cc") for v in (msg.get_all(k) or [])]
    return {**{k: out[k] for k in ("parts", "depth", "messages", "multiparts", "leaf_parts", "attachments",
                                   "body_bytes")},
            "content_types": dict(types), "recipients": len([a for _, a in email.utils.getaddresses(rcpts) if a])}


def _ours(data: bytes) -> dict[str, object]:
    s = walk(data).to_json()
    ev, _ = analyse(data)
    return {**{k: s[k] for k in ("parts", "depth", "messages", "multiparts", "leaf_parts", "attachments",
                                 "body_bytes")}, "content_types": s["content_types"], "recipients": ev.recipients}


_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=200)


@st.composite
def _messages(draw: st.DrawFn, depth: int = 0) -> email.message.Message:
    kind = draw(st.sampled_from(["text", "qp", "b64", "image", "app"] + (["multi", "rfc822", "digest"] if depth < 3
                                                                           else [])))
    if kind == "text":
        t = draw(_text)
        return MIMEText(t, "plain", "us-ascii" if t.isascii() else "utf-8")   # 7bit or base64
    if kind == "qp":
        cs = Charset("utf-8")
        cs.body_encoding = QP
        qp = MIMEText("", "plain")
        qp.set_payload(draw(_text), cs)
        return qp
    if kind in ("b64", "app"):
        part = MIMEApplication(draw(st.binary(max_size=3000)))
        if draw(st.booleans()):
            part.add_header("Content-Disposition", "attachment", filename=draw(st.sampled_from(["a.bin", "ü.pdf"])))
        return part
    if kind == "image":
        buf = io.BytesIO()
        Image.new("RGB", (draw(st.integers(1, 40)), draw(st.integers(1, 40))), (1, 2, 3)).save(buf, "PNG")
        return MIMEImage(buf.getvalue(), "png")
    if kind == "rfc822":
        return MIMEMessage(draw(_messages(depth + 1)))
    m = MIMEMultipart("digest" if kind == "digest" else draw(st.sampled_from(["mixed", "alternative", "related"])))
    for _ in range(draw(st.integers(0, 4))):
        child = draw(_messages(depth + 1))
        m.attach(MIMEMessage(child) if kind == "digest" else child)
    if draw(st.booleans()):
        m.preamble = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100))
    return m


@settings(max_examples=20_000 if SOAK else 120, deadline=None, suppress_health_check=list(HealthCheck))
@given(_messages(), st.lists(st.sampled_from(["a@b.example", "Zoë <z@example.org>", '"x, y" <q@example.org>',
                                              "group: m@x.example, n@x.example;", "undisclosed-recipients:;",
                                              "c@d (comment (nested))", "<>"]), max_size=5),
       st.booleans())
def test_walk_agrees_with_the_standard_parser(msg: email.message.Message, to: list[str], crlf: bool) -> None:
    if to:
        msg["To"] = ", ".join(to)
    data = msg.as_bytes()
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    assert _ours(data) == _reference(data)


def test_walk_agrees_on_the_real_messages(repo_data: Path) -> None:
    for f in sorted((repo_data / "mail").glob("*.eml")):
        assert _ours(f.read_bytes()) == _reference(f.read_bytes()), f.name


def test_address_counting_without_recursion() -> None:
    assert count_addresses(["a@b, (c" + "(" * 5000, "x:y@z,w@v;", '"a, b" <c@d>, <>']) == 4


def test_malformed_rfc2231_continuations_do_not_raise() -> None:
    """The standard library's parameter decoding raises TypeError on ``boundary*0=b; boundary*=c``
    (found by the fuzzer): the part is a leaf, as with no boundary."""
    data = b"Content-Type: multipart/mixed; boundary*0=b; boundary*=c\nContent-Disposition: attachment; " \
           b"filename*0=a; filename*=b\n\n--b\n\nx\n"
    s = walk(data)
    assert s.parts == 1 and s.leaf_parts == 1 and s.attachments == 1
