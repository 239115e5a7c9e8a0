"""The 4K probe's content and integrity analysis, without servers."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from mailpulse.pi_firmware.probe import (
    HEIGHT,
    WIDTH,
    ProbeContent,
    ProbeEvent,
    ProbeRoute,
    analyse,
    cached_content,
    compose,
    probe_content,
    psnr,
)

from mailpulse import features as F
from mailpulse.lab.relays import recompress_images

ROUTE = ProbeRoute(name="r1", smtp_host="127.0.0.1", smtp_port=25, mail_from="p@a.test", rcpt_to="p@b.test",
                   imap_host="127.0.0.1", imap_port=143, imap_username="p")


@pytest.fixture(scope="module")
def content() -> ProbeContent:
    return probe_content()


def test_content_is_deterministic_4k(content: ProbeContent, tmp_path: Path) -> None:
    from PIL import Image

    # generated again in a child process and cached on disk (what the daemon does): same bytes
    cached = cached_content(tmp_path)
    assert cached.image_sha256 == content.image_sha256 == hashlib.sha256(cached.image).hexdigest()
    assert cached.attachment == content.attachment
    assert list(tmp_path.iterdir()) == [tmp_path / f"probe-{WIDTH}x{HEIGHT}-q90.jpeg"]
    assert cached_content(tmp_path).image == cached.image          # read back, not regenerated
    with Image.open(io.BytesIO(content.image)) as im:
        assert im.size == (WIDTH, HEIGHT) and im.format == "JPEG"
    assert len(content.image) > 500_000    # heavy, like a real 4K photo


def test_intact_probe(content: ProbeContent) -> None:
    data = compose(content, "abc123", "node-a", ROUTE, 1_700_000_000_123)
    assert b"X-Mailpulse-Sent-Ms: 1700000000123" in data
    integ, msg = analyse(data, content)
    assert integ.intact and integ.structure_ok and integ.resolution_ok and integ.psnr_db is None
    assert integ.structure == ["multipart/mixed", "multipart/related", "text/html", "image/jpeg",
                               "application/octet-stream"]
    assert msg["X-Mailpulse-Probe-Id"] == "abc123"


def test_recompressed_image_is_damaged_with_psnr(content: ProbeContent) -> None:
    data = compose(content, "abc", "node-a", ROUTE, 1)
    hi, _ = analyse(recompress_images(data, quality=75), content)
    lo, _ = analyse(recompress_images(data, quality=10), content)
    for integ in (hi, lo):
        assert integ.structure_ok and integ.attachment_hash_ok and integ.resolution_ok
        assert not integ.image_hash_ok and not integ.intact
    assert hi.psnr_db is not None and lo.psnr_db is not None
    assert 20 < lo.psnr_db < hi.psnr_db < 60      # fidelity drops with the quality


def test_resized_and_broken_probes(content: ProbeContent) -> None:
    data = compose(content, "abc", "node-a", ROUTE, 1)
    small, _ = analyse(recompress_images(data, quality=90, scale=0.5), content)
    assert small.image_decodes and not small.resolution_ok and (small.image_width, small.image_height) == (1920, 1080)
    assert small.psnr_db is not None
    # a truncated message: the image does not decode, the attachment is gone
    cut = data[: len(data) // 3]
    broken, _ = analyse(cut, content)
    assert not broken.intact and not broken.attachment_hash_ok and not broken.structure_ok
    # a flipped byte in the attachment
    i = data.rindex(b"filename=\"probe.bin\"") + 200
    flipped = data[:i] + (b"A" if data[i:i + 1] != b"A" else b"B") + data[i + 1:]
    bad, _ = analyse(flipped, content)
    assert bad.image_hash_ok and not bad.attachment_hash_ok and not bad.intact


def test_psnr() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) is None
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * np.log10(255.0 ** 2 * 48 / 255.0 ** 2))


def test_probe_event_payload_and_features() -> None:
    ev = ProbeEvent(ts=1.0, node="node-a", route="r1", probe_id="p1", outcome="ok", sent_ms=1000,
                    latency_ms=250.0, size=6_000_000, image_pixels=WIDTH * HEIGHT,
                    hops=[{"delay_s": 1.0, "ts": 1.0}, {"delay_s": None, "ts": 2.0}])
    lost = ProbeEvent(ts=1.0, node="node-a", route="r1", probe_id="p1", outcome="lost", sent_ms=1000)
    assert ev.id != lost.id and len(ev.id) == 32
    p = ev.payload()
    assert p["kind"] == "probe" and p["fields"]["latency_ms"] == 250.0 and "ts" not in p["fields"]["hops"][0]

    x = ev.vector()
    assert x[F.feature("outcome").index] == 0 and lost.vector()[F.feature("outcome").index] == 3 * 4096
    assert x[F.feature("delay_connect_ms").index] == F.MISSING
    assert x[F.feature("delay_queue_ms").index] == F.feature("delay_queue_ms").encode(1000.0)
