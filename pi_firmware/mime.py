"""Walk a message's MIME tree: depth, part counts, sizes, and the images a reader would render.

:func:`walk` parses a message (bytes) with the standard library's tolerant parser and visits the
tree recursively (``multipart/*`` children and ``message/rfc822`` attachments alike), under
:class:`MimeLimits`:

* ``max_bytes``: a larger message is not parsed at all (only its size is reported);
* ``max_depth``: deeper parts are not visited; ``max_parts``: parts beyond the count are not visited;
* ``max_part_bytes``: a larger leaf is not decoded;
* ``max_pixels`` / ``max_total_pixels``: an image whose header announces more pixels is refused
  *before* it is decoded (a decompression bomb), with the reason recorded; images within the limit
  are fully decoded by Pillow to prove they render.

Every limit that is hit is named in ``limits`` of the result; the walk itself never raises for any
input (a parser recursion overflow on absurdly nested input is caught and reported as a limit).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import io
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from email.utils import getaddresses
from typing import Any

from PIL import Image

from mailpulse.config.node import MimeLimits

#: Container parts beyond this count make the message refused before the parser runs (the
#: standard parser's work and recursion grow with nesting).
_CONTAINER = re.compile(rb"^content-type:[ \t]*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)


@dataclass
class ImageInfo:
    """One image part: what its header says and whether it decoded."""

    path: str
    content_type: str
    bytes: int
    format: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: int | None = None
    decoded: bool = False
    error: str | None = None


@dataclass
class MimeSummary:
    """What the walk found (JSON-ready through :meth:`to_json`)."""

    total_size: int
    depth: int = 0
    parts: int = 0
    leaf_parts: int = 0
    multiparts: int = 0
    messages: int = 0
    attachments: int = 0
    body_bytes: int = 0
    defects: int = 0
    content_types: Counter[str] = field(default_factory=Counter)
    images: list[ImageInfo] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)

    @property
    def image_pixels(self) -> int:
        return sum(i.pixels or 0 for i in self.images if i.decoded)

    def to_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth, "parts": self.parts, "leaf_parts": self.leaf_parts,
            "multiparts": self.multiparts, "messages": self.messages, "attachments": self.attachments,
            "total_size": self.total_size, "body_bytes": self.body_bytes, "defects": self.defects,
            "content_types": dict(sorted(self.content_types.items())),
            "images": [asdict(i) for i in self.images], "limits": list(self.limits),
        }


def parse_message(data: bytes) -> email.message.Message:
    """Parse bytes with the tolerant ``compat32`` policy (never raises for ordinary input)."""
    return email.message_from_bytes(data, policy=email.policy.compat32)


def recipients(msg: email.message.Message) -> int:
    """Number of addresses in ``To:`` and ``Cc:``."""
    vals = [str(v) for k in ("to", "cc") for v in (msg.get_all(k) or [])]
    return sum(1 for _, addr in getaddresses(vals) if addr)


def _image(info: ImageInfo, data: bytes, limits: MimeLimits, summary: MimeSummary, budget: list[int]) -> None:
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 Mpixel and raises above twice that; our own limit decides below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            info.format = img.format
            info.width, info.height = img.size
            info.pixels = info.width * info.height
            if info.pixels > limits.max_pixels:
                info.error = (f"refused: {info.width}x{info.height} = {info.pixels} pixels is more than the "
                              f"limit of {limits.max_pixels} (decompression bomb)")
                summary.limits.append(f"image {info.path}: {info.error}")
                return
            if info.pixels > budget[0]:
                info.error = f"refused: the message's decoded images exceed {limits.max_total_pixels} pixels"
                summary.limits.append(f"image {info.path}: {info.error}")
                return
            budget[0] -= info.pixels
            img.load()
            info.decoded = True
    except Image.DecompressionBombError as e:
        info.error = f"refused: {e}"
        summary.limits.append(f"image {info.path}: {info.error}")
    except Exception as e:  # Pillow raises many types for damaged data (OSError, SyntaxError, ...)
        info.error = f"does not decode: {type(e).__name__}: {e}"[:300]


def _visit(part: email.message.Message, path: str, depth: int, limits: MimeLimits, s: MimeSummary,
           budget: list[int]) -> None:
    if s.parts >= limits.max_parts:
        if not any(m.startswith("parts:") for m in s.limits):
            s.limits.append(f"parts: more than {limits.max_parts} parts, the rest not visited")
        return
    s.parts += 1
    s.depth = max(s.depth, depth)
    s.defects += len(getattr(part, "defects", ()) or ())
    ctype = part.get_content_type()
    s.content_types[ctype] += 1
    if part.is_multipart():
        payload = part.get_payload()
        if ctype.startswith("message/"):
            s.messages += 1
        else:
            s.multiparts += 1
        if depth >= limits.max_depth:
            s.limits.append(f"depth: part {path} is at depth {depth}, its children are not visited")
            return
        children = payload if isinstance(payload, list) else [payload]
        for i, child in enumerate(children, 1):
            if isinstance(child, email.message.Message):
                _visit(child, f"{path}.{i}" if path else str(i), depth + 1, limits, s, budget)
        return
    s.leaf_parts += 1
    if part.get_filename() or (part.get("content-disposition") or "").strip().lower().startswith("attachment"):
        s.attachments += 1
    raw = part.get_payload()
    if isinstance(raw, str) and len(raw) > limits.max_part_bytes * 4 // 3 + 1024:
        s.limits.append(f"part {path or '0'}: larger than {limits.max_part_bytes} bytes, not decoded")
        return
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return
    s.body_bytes += len(data)
    if part.get_content_maintype() == "image":
        info = ImageInfo(path=path or "0", content_type=ctype, bytes=len(data))
        s.images.append(info)
        _image(info, data, limits, s, budget)


def walk(data: bytes, limits: MimeLimits | None = None,
         msg: email.message.Message | None = None) -> MimeSummary:
    """Walk the MIME tree of a message.

    Parameters
    ----------
    data : bytes
        The whole message.
    limits : MimeLimits, optional
        Limits of the walk (:class:`MimeLimits` defaults).
    msg : Message, optional
        ``data`` already parsed by :func:`parse_message` (saves a second parse).

    Returns
    -------
    MimeSummary
        Depth (the root is 0), counts, sizes, images; ``limits`` names every limit that was hit.
    """
    limits = limits or MimeLimits()
    s = MimeSummary(total_size=len(data))
    if len(data) > limits.max_bytes:
        s.limits.append(f"size: {len(data)} bytes is more than {limits.max_bytes}, the tree is not parsed")
        return s
    containers = len(_CONTAINER.findall(data))
    if containers > limits.max_parts:
        s.limits.append(f"parts: {containers} container parts is more than {limits.max_parts}, the tree is not parsed")
        return s
    try:
        if msg is None:
            msg = parse_message(data)
        _visit(msg, "", 0, limits, s, [limits.max_total_pixels])
    except RecursionError:
        s.limits.append("depth: the MIME tree is nested too deeply to parse")
    return s


__all__ = ["ImageInfo", "MimeLimits", "MimeSummary", "parse_message", "recipients", "walk"]
