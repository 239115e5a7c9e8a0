"""The MIME walker: real messages, images, decompression bombs, depth and part limits."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailpulse.pi_firmware.maildir import inspect_file
from mailpulse.pi_firmware.mime import MimeLimits, walk
from PIL import Image

from mailpulse.cli import main
from mailpulse.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A PNG that announces w x h pixels but carries almost no data (what a bomb's header looks like)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(b"\x00" * 4096)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _message(*images: bytes) -> bytes:
    m = MIMEMultipart("mixed")
    m["From"] = "a@example.org"
    m["To"] = "b@example.org, c@example.org"
    rel = MIMEMultipart("related")
    rel.attach(MIMEText("<img src='cid:i1'>", "html"))
    for data in images:
        rel.attach(MIMEImage(data, "png"))
    m.attach(rel)
    att = MIMEText("attached", "plain")
    att.add_header("Content-Disposition", "attachment", filename="a.txt")
    m.attach(att)
    return m.as_bytes()


def test_tree_counts_and_images() -> None:
    s = walk(_message(_png(64, 32), _png(8, 8)))
    assert (s.depth, s.parts, s.leaf_parts, s.multiparts, s.attachments) == (2, 6, 4, 2, 1)
    assert [(i.format, i.width, i.height, i.decoded) for i in s.images] == [("PNG", 64, 32, True), ("PNG", 8, 8, True)]
    assert s.image_pixels == 64 * 32 + 64 and s.limits == []
    assert s.to_json()["content_types"]["image/png"] == 2


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # headers announcing 100 Mpixel (our limit refuses) and 400 Mpixel (Pillow itself refuses)
    t = time.monotonic()
    s = walk(_message(_png_header(10000, 10000), _png_header(20000, 20000)), MimeLimits(max_pixels=4096 * 4096))
    assert time.monotonic() - t < 5
    ours, pillows = s.images
    assert not ours.decoded and ours.pixels == 100_000_000 and (ours.width, ours.height) == (10000, 10000)
    assert ours.error is not None and "decompression bomb" in ours.error
    assert not pillows.decoded and pillows.error is not None and "decompression bomb" in pillows.error
    assert sum("decompression bomb" in m for m in s.limits) == 2


def test_total_pixel_budget() -> None:
    s = walk(_message(_png(100, 100), _png(100, 100)), MimeLimits(max_total_pixels=15000))
    assert [i.decoded for i in s.images] == [True, False]
    assert "exceed" in (s.images[1].error or "")


def test_damaged_image_is_reported_not_raised() -> None:
    data = _png(50, 50)
    s = walk(_message(data[:60]))
    (img,) = s.images
    assert not img.decoded and img.error


def _nested(levels: int) -> bytes:
    out = "From: a@example.org\n"
    for i in range(levels):
        out += f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'
    out += "Content-Type: text/plain\n\nhi\n"
    for i in reversed(range(levels)):
        out += f"--b{i}--\n"
    return out.encode()


def test_depth_limit() -> None:
    s = walk(_nested(40), MimeLimits(max_depth=32))
    assert s.depth == 32 and any(m.startswith("depth:") for m in s.limits)


def test_absurd_nesting_and_part_counts_are_refused_quickly() -> None:
    t = time.monotonic()
    s = walk(_nested(5000))
    assert any(m.startswith("parts:") for m in s.limits) and s.parts == 0
    s = walk(_nested(600), MimeLimits(max_parts=10_000))   # the stdlib parser's recursion overflows
    assert any(m.startswith("depth:") for m in s.limits)
    assert time.monotonic() - t < 20


def test_size_limit() -> None:
    s = walk(_message(_png(8, 8)), MimeLimits(max_bytes=100))
    assert s.parts == 0 and s.limits and s.limits[0].startswith("size:")


def test_real_messages_survive(repo_data: Path) -> None:
    files = sorted((repo_data / "mail").glob("*.eml"))
    assert len(files) >= 9
    for f in files:
        doc = inspect_file(f)
        json.dumps(doc)
        assert doc["mime"]["total_size"] == f.stat().st_size
        assert len(doc["features"]["fixed"]) == 8
    doc = inspect_file(repo_data / "mail" / "sa_004.eml")
    assert doc["mime"]["depth"] == 2 and doc["mime"]["attachments"] == 1


def test_inspect_cli_on_all_real_messages(repo_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(f) for f in sorted((repo_data / "mail").glob("*.eml"))]
    for f in files:
        assert main(["inspect", "--compact", f]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(docs) == len(files)
    by_name = dict(zip([Path(f).name for f in files], docs))
    hops = by_name["sa_001.eml"]["hops"]
    assert set(hops[0]) >= {"from", "by", "with", "id", "timestamp", "delay_s"}
    assert by_name["sa_dkim_MultipleReceived_08.eml"]["hops"][1]["delay_s"] == -3456.0
    assert by_name["sa_001.eml"]["features"]["fixed"] == inspect_file(files[0])["features"]["fixed"]


@pytest.mark.parametrize("content,fragment", [
    (None, "does not exist"), (b"", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00", "not a message"),
])
def test_inspect_bad_input(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    p = tmp_path / "m.eml"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        inspect_file(p)


def test_inspect_cli_bad_input_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "x.eml"
    p.write_bytes(b"\x00\x01binary")
    r = subprocess.run([sys.executable, "-m", "mailpulse", "inspect", str(p)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "not a message" in r.stderr


@settings(max_examples=3000 if SOAK else 150, deadline=None)
@given(st.binary(max_size=2000))
def test_walk_never_raises(data: bytes) -> None:
    s = walk(b"From: a@b\nContent-Type: multipart/mixed; boundary=x\n\n--x\n" + data)
    json.dumps(s.to_json())
