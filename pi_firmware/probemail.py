"""The probe message: its deterministic 4K content, its composition, and the integrity analysis of
what arrives (MIME structure, image decode, hashes, PSNR against the original).

:mod:`.probe` sends it and fetches it back; this module knows nothing of SMTP or IMAP.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from mailpulse.config.node import MimeLimits, ProbeRoute

from .headers import HeaderBlock, read_header_block
from .mime import DecodedReader, Part, iter_parts
from .quarantine import describe

__all__ = [
    "HEIGHT",
    "H_ATT",
    "H_ID",
    "H_IMG",
    "H_NODE",
    "H_ROUTE",
    "H_SENT",
    "STRUCTURE",
    "WIDTH",
    "Integrity",
    "ProbeContent",
    "ProbeError",
    "analyse",
    "cached_content",
    "compose",
    "probe_content",
    "psnr",
]

WIDTH, HEIGHT = 3840, 2160
H_ID = "X-Mailpulse-Probe-Id"
H_NODE = "X-Mailpulse-Node"
H_ROUTE = "X-Mailpulse-Route"
H_SENT = "X-Mailpulse-Sent-Ms"
H_IMG = "X-Mailpulse-Image-Sha256"
H_ATT = "X-Mailpulse-Attachment-Sha256"

#: The MIME structure every intact probe has (content types, depth first).
STRUCTURE = ("multipart/mixed", "multipart/related", "text/html", "image/*", "application/octet-stream")


class ProbeError(RuntimeError):
    """The probe could not run at all (IMAP unreachable or login refused)."""


# --------------------------------------------------------------------------------------------
# content
# --------------------------------------------------------------------------------------------


def _pattern_band(width: int, height: int, y0: int, y1: int) -> npt.NDArray[np.uint8]:
    """Rows ``y0:y1`` of the probe picture: gradients, fine rings and sharp blocks (detail that
    recompression hurts).  Computed band by band so the generator never holds float copies of the
    whole 4K frame."""
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    band = np.empty((y1 - y0, width, 3), dtype=np.uint8)
    band[..., 0] = np.broadcast_to(x * (255.0 / width), (y1 - y0, width)).astype(np.uint8)
    band[..., 1] = np.broadcast_to(y * (255.0 / height), (y1 - y0, width)).astype(np.uint8)
    r2 = (x - width / 2) ** 2 + (y - height / 2) ** 2
    band[..., 2] = (127.5 + 127.5 * np.sin(r2 / 2000.0)).astype(np.uint8)
    blocks = ((x // 64).astype(np.int32) + (y // 64).astype(np.int32)) % 2 == 1
    band[blocks & (y < height // 4)] //= 2
    return band


@dataclass(frozen=True)
class ProbeContent:
    """The deterministic parts of a probe (shared by every probe of a process)."""

    image: bytes
    image_type: str
    image_sha256: str
    attachment: bytes
    attachment_sha256: str
    width: int
    height: int

    @functools.cached_property
    def _b64(self) -> tuple[bytes, bytes]:
        return _b64_lines(self.image), _b64_lines(self.attachment)

    def pixels(self) -> npt.NDArray[np.uint8]:
        """The original image, decoded (as a receiver would see it); not cached: 25 MB at 4K."""
        return _decode_rgb(self.image)


def _b64_lines(data: bytes) -> bytes:
    raw = base64.b64encode(data)
    return b"\r\n".join(raw[i:i + 76] for i in range(0, len(raw), 76))


def _decode_rgb(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@functools.lru_cache(maxsize=4)
def probe_content(image_format: str = "jpeg", quality: int = 90, attachment_bytes: int = 256 * 1024,
                  width: int = WIDTH, height: int = HEIGHT) -> ProbeContent:
    """Generate (once per argument set, then cached) the probe image and attachment."""
    buf = io.BytesIO()
    im = Image.new("RGB", (width, height))
    step = 120
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        im.paste(Image.fromarray(_pattern_band(width, height, y0, y1), "RGB"), (0, y0))
    if image_format == "jpeg":
        im.save(buf, "JPEG", quality=quality, optimize=False)
        ctype = "image/jpeg"
    else:
        im.save(buf, "PNG", compress_level=1)
        ctype = "image/png"
    im.close()
    del im
    img = buf.getvalue()
    att = np.random.default_rng(20261126).integers(0, 256, attachment_bytes, dtype=np.uint8).tobytes()
    return ProbeContent(img, ctype, hashlib.sha256(img).hexdigest(), att, hashlib.sha256(att).hexdigest(),
                        width, height)


def cached_content(cache_dir: Path | None, image_format: str = "jpeg", quality: int = 90,
                   attachment_bytes: int = 256 * 1024) -> ProbeContent:
    """The probe content, with the image generated once per machine and kept in ``cache_dir``.

    The image is generated in a child process (the 4K frame takes ~80 MB while it is encoded; the
    daemon then only holds the 2-3 MB file), written atomically, and read back on later starts.
    Without ``cache_dir`` it is generated in-process (:func:`probe_content`).
    """
    if cache_dir is None:
        return probe_content(image_format, quality, attachment_bytes)
    path = Path(cache_dir) / f"probe-{WIDTH}x{HEIGHT}-q{quality}.{image_format}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        code = ("import sys; from pathlib import Path; from mailpulse.pi_firmware.probemail import probe_content; "
                "c = probe_content(sys.argv[2], int(sys.argv[3]), 0); "
                "t = Path(sys.argv[1] + '.tmp'); t.write_bytes(c.image); t.replace(sys.argv[1])")
        r = subprocess.run([sys.executable, "-c", code, str(path), image_format, str(quality)],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not path.is_file():
            raise ProbeError(f"cannot generate the probe image in {cache_dir}: {r.stderr.strip()[-300:]}")
    img = path.read_bytes()
    att = np.random.default_rng(20261126).integers(0, 256, attachment_bytes, dtype=np.uint8).tobytes()
    ctype = "image/jpeg" if image_format == "jpeg" else "image/png"
    return ProbeContent(img, ctype, hashlib.sha256(img).hexdigest(), att, hashlib.sha256(att).hexdigest(),
                        WIDTH, HEIGHT)


def compose(content: ProbeContent, probe_id: str, node: str, route: ProbeRoute, sent_ms: int) -> bytes:
    """The probe message as bytes (CRLF line ends).  Cheap: the base64 bodies are cached."""
    img_b64, att_b64 = content._b64
    outer, inner = f"mp-mixed-{probe_id}", f"mp-related-{probe_id}"
    ext = "jpg" if content.image_type == "image/jpeg" else "png"
    html = (f'<html><body><h1>mailpulse probe {probe_id}</h1><p>node {node}, route {route.name}</p>'
            f'<img src="cid:probe-image@mailpulse" width="{content.width}" height="{content.height}" '
            f'alt="probe image"></body></html>')
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(sent_ms / 1000))
    head = "\r\n".join([
        f"From: mailpulse probe <{route.mail_from}>",
        f"To: <{route.rcpt_to}>",
        f"Subject: mailpulse probe {probe_id}",
        f"Date: {date}",
        f"Message-ID: <{probe_id}@probe.mailpulse>",
        "MIME-Version: 1.0",
        f"{H_ID}: {probe_id}",
        f"{H_NODE}: {node}",
        f"{H_ROUTE}: {route.name}",
        f"{H_SENT}: {sent_ms}",
        f"{H_IMG}: {content.image_sha256}",
        f"{H_ATT}: {content.attachment_sha256}",
        f'Content-Type: multipart/mixed; boundary="{outer}"',
        "",
        f"--{outer}",
        f'Content-Type: multipart/related; boundary="{inner}"; type="text/html"',
        "",
        f"--{inner}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: 7bit",
        "",
        html,
        f"--{inner}",
        f"Content-Type: {content.image_type}",
        "Content-Transfer-Encoding: base64",
        "Content-ID: <probe-image@mailpulse>",
        f'Content-Disposition: inline; filename="probe.{ext}"',
        "",
        "",
    ]).encode()
    mid = "\r\n".join([
        "",
        f"--{inner}--",
        "",
        f"--{outer}",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="probe.bin"',
        "",
        "",
    ]).encode()
    tail = f"\r\n--{outer}--\r\n".encode()
    return head + img_b64 + mid + att_b64 + tail


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------


@dataclass
class Integrity:
    """What arrived compared with what was sent."""

    structure_ok: bool
    structure: list[str]
    image_hash_ok: bool
    image_decodes: bool
    image_width: int | None
    image_height: int | None
    image_format: str | None
    resolution_ok: bool
    attachment_hash_ok: bool
    psnr_db: float | None          # None when the image bytes are identical (PSNR is infinite)
    error: str | None = None

    @property
    def intact(self) -> bool:
        return self.structure_ok and self.image_hash_ok and self.attachment_hash_ok

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["intact"] = self.intact
        return d


def _structure_matches(found: Sequence[str], content_type: str) -> bool:
    want = [content_type if t == "image/*" else t for t in STRUCTURE]
    return list(found) == want


def psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], band: int = 64) -> float | None:
    """Peak signal-to-noise ratio in dB of two same-shape 8-bit images (None when identical).

    Computed in bands of rows with integer arithmetic, so a 4K frame needs a few MB, not the
    hundreds a float copy of both frames would take.
    """
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs images of one shape, not {a.shape} and {b.shape}")
    sse = 0
    for y in range(0, a.shape[0], band):
        d = a[y:y + band].astype(np.int64) - b[y:y + band].astype(np.int64)
        sse += int(np.dot(d.ravel(), d.ravel()))
    if sse == 0:
        return None
    mse = sse / a.size
    return 10.0 * math.log10(255.0 ** 2 / mse)


def _sha256(part: Part, data: bytes) -> str:
    h = hashlib.sha256()
    for chunk in part.decoded(data):
        h.update(chunk)
    return h.hexdigest()


def analyse(data: bytes, content: ProbeContent, limits: MimeLimits | None = None) -> tuple[Integrity, HeaderBlock]:
    """Compare an arrived probe with the original content.

    The message is walked in place (:func:`mailpulse.pi_firmware.mime.iter_parts`): the image and
    the attachment are hashed as they are decoded, never held whole.  The image is decoded only
    when its bytes differ (to tell a recompression from a corruption and measure PSNR); an image
    that arrives at another size is resized back (bilinear) before PSNR.  ``MessageRefused`` when
    the message's header block breaks a limit.
    """
    limits = limits or MimeLimits()
    head = read_header_block(data, max_headers=limits.max_headers, max_header_bytes=limits.max_header_bytes,
                             where="the arrived probe")
    notes: list[str] = []
    parts = list(iter_parts(data, head, limits, notes))
    found = [p.ctype for p in parts]
    structure_ok = _structure_matches(found, content.image_type) and not notes
    imgs = [p for p in parts if p.children is None and p.ctype.startswith("image/")]
    atts = [p for p in parts if p.children is None and p.ctype == "application/octet-stream"]
    att_ok = bool(atts) and _sha256(atts[0], data) == content.attachment_sha256
    integ = Integrity(structure_ok, found, False, False, None, None, None, False, att_ok, None)
    if not imgs:
        integ.error = "no image part arrived"
        return integ, head
    img = imgs[0]
    integ.image_hash_ok = _sha256(img, data) == content.image_sha256
    if integ.image_hash_ok:
        integ.image_decodes, integ.resolution_ok = True, True
        integ.image_width, integ.image_height = content.width, content.height
        integ.image_format = content.image_type.split("/")[1].upper()
        return integ, head
    try:
        with io.BufferedReader(DecodedReader(data, img.body, img.end, img.cte), 1 << 16) as fp, Image.open(fp) as im:
            integ.image_format = im.format
            integ.image_width, integ.image_height = im.size
            if im.size[0] * im.size[1] > limits.max_pixels:
                integ.error = (f"the image announces {im.size[0]}x{im.size[1]} pixels, more than the limit "
                               f"mime.max_pixels ({limits.max_pixels})")
                return integ, head
            rgb = im.convert("RGB")
            if im.size != (content.width, content.height):
                rgb = rgb.resize((content.width, content.height), Image.Resampling.BILINEAR)
            arr = np.asarray(rgb)
        integ.image_decodes = True
        integ.resolution_ok = (integ.image_width, integ.image_height) == (content.width, content.height)
        integ.psnr_db = psnr(arr, content.pixels())
        if integ.psnr_db is not None:
            integ.psnr_db = round(integ.psnr_db, 2)
    except Exception as e:  # any decoder failure is a finding, not a crash
        integ.error = f"the image does not decode: {describe(e)}"
    return integ, head
