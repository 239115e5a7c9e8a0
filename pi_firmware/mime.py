"""Walk a message's MIME tree without parsing it into objects: depth, parts, sizes, images.

:func:`walk` scans the message's bytes in place (no copy of the message, no tree of objects): it
reads each part's header block (:func:`mailpulse.pi_firmware.headers.read_header_block`), finds a
multipart's delimiter lines with one regular expression over the part's byte range, and visits
the tree depth first with an explicit stack (``multipart/*`` children, ``message/rfc822`` and
other ``message/*`` bodies as messages, ``message/delivery-status`` blocks), so no input can
overflow the interpreter's recursion.  It follows the standard library's tolerant parser
(``compat32``): the same part boundaries, default content types (``text/plain``;
``message/rfc822`` inside ``multipart/digest``), a multipart without its boundary is a leaf.
Leaves are decoded as a stream (base64 and quoted-printable in chunks of :data:`CHUNK` bytes):
sizes are counted and images are handed to Pillow through a seekable decoding reader, so neither a
decoded attachment nor a decoded image file is ever held whole; only an image's pixels are (under
the pixel limits).  This is why it is hand-written: the standard parser holds the message about
nine times over (the part strings, their lines, the decoded payloads).

Every limit of :class:`MimeLimits` is checked before or while the bytes it guards are read:

* ``max_bytes``: a larger message is not parsed at all (only its size is reported);
* ``max_headers`` / ``max_header_bytes``: a header block with more fields, or a longer field, is
  not read (the message's own block: the tree is not parsed; a part's: that part is skipped);
* ``max_depth``: deeper parts are not visited; ``max_parts``: parts beyond the count are not visited
  (a message with more container headers than that is refused before the walk);
* ``max_part_bytes``: a larger leaf is not decoded;
* ``max_pixels`` / ``max_total_pixels``: an image whose header announces more pixels is refused
  *before* it is decoded (a decompression bomb), with the reason recorded; images within the limit
  are fully decoded by Pillow to prove they render.

Every limit that is hit is named in ``limits`` of the result, in one sentence; the walk itself
never raises for any input.
"""

from __future__ import annotations

import binascii
import functools
import io
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from email.message import Message
from typing import Any

from PIL import Image

from mailpulse.config.node import MimeLimits

from .headers import HeaderBlock, MessageRefused, read_header_block
from .quarantine import describe

#: Container parts beyond this count make the message refused before the walk.
_CONTAINER = re.compile(rb"^content-type:[ \t]*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)

_BLANK_LINE = re.compile(rb"\n\r?\n")

#: Encoded bytes decoded at a time.
CHUNK = 1 << 20

_B64_DELETE = bytes(c for c in range(256) if chr(c) not in
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


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


# --------------------------------------------------------------------------------------------
# decoding leaves as streams
# --------------------------------------------------------------------------------------------


def _chunks(buf: bytes, start: int, end: int, cte: str) -> Iterator[bytes | memoryview]:
    """The decoded bytes of ``buf[start:end]`` in pieces (``Content-Transfer-Encoding`` ``cte``)."""
    if cte == "base64":
        carry = b""
        for a in range(start, end, CHUNK):
            clean = carry + buf[a:min(a + CHUNK, end)].translate(None, _B64_DELETE)
            n = len(clean) // 4 * 4
            carry = clean[n:]
            if n:
                try:
                    yield binascii.a2b_base64(clean[:n])
                except binascii.Error:
                    pass
        if carry.strip(b"="):
            try:
                yield binascii.a2b_base64(carry + b"=" * (-len(carry) % 4))
            except binascii.Error:
                pass
    elif cte == "quoted-printable":
        a = start
        while a < end:
            b = min(a + CHUNK, end)
            if b < end:   # cut after a line end, or at least not inside an "=XX" escape
                nl = buf.rfind(b"\n", a, b)
                b = nl + 1 if nl > a else b - (2 if buf[b - 2:b - 1] == b"=" else 1 if buf[b - 1:b] == b"=" else 0)
            yield binascii.a2b_qp(buf[a:b])
            a = b
    else:   # 7bit, 8bit, binary and anything unknown: the bytes as they are
        mv = memoryview(buf)
        for a in range(start, end, CHUNK):
            yield mv[a:min(a + CHUNK, end)]


def decoded_size(buf: bytes, start: int, end: int, cte: str) -> int:
    """Length of the decoded body ``buf[start:end]`` (decoded in chunks, nothing kept)."""
    if cte not in ("base64", "quoted-printable"):
        return end - start
    return sum(len(c) for c in _chunks(buf, start, end, cte))


class DecodedReader(io.RawIOBase):
    """A seekable binary file over a part's decoded body, decoding as it is read.

    Seeking back restarts the decoding (Pillow seeks back only within its first read, which the
    :class:`io.BufferedReader` around this object serves from its buffer).
    """

    def __init__(self, buf: bytes, start: int, end: int, cte: str) -> None:
        super().__init__()
        self._args = (buf, start, end, cte)
        self._restart()

    def _restart(self) -> None:
        self._it = _chunks(*self._args)
        self._cur: bytes | memoryview = b""
        self._off = 0          # read position inside _cur
        self._pos = 0          # decoded bytes handed out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        while self._off >= len(self._cur):
            nxt = next(self._it, None)
            if nxt is None:
                return 0
            self._cur, self._off = nxt, 0
        n = min(len(out), len(self._cur) - self._off)
        out[:n] = self._cur[self._off:self._off + n]
        self._off += n
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            while self.readinto(bytearray(CHUNK)):
                pass
            offset += self._pos
        if offset < self._pos:
            self._restart()
        skip = bytearray(min(CHUNK, max(0, offset - self._pos)))
        while self._pos < offset:
            if not self.readinto(memoryview(skip)[:min(len(skip), offset - self._pos)]):
                break
        return self._pos


# --------------------------------------------------------------------------------------------
# the walk
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _delimiter(boundary: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)", re.MULTILINE)


def _strip_eol(buf: bytes, start: int, end: int) -> int:
    """``end`` without the line end just before it (it belongs to the next delimiter line)."""
    if end - start >= 2 and buf[end - 2:end] == b"\r\n":
        return end - 2
    if end > start and buf[end - 1:end] in (b"\n", b"\r"):
        return end - 1
    return end


def _multipart_children(buf: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]] | None:
    """Byte ranges of a multipart body's parts; ``None`` when no delimiter line is found (the
    standard parser then keeps the body as one leaf)."""
    try:
        bnd = boundary.encode("utf-8")
    except UnicodeEncodeError:
        bnd = boundary.encode("utf-8", "replace")
    children: list[tuple[int, int]] = []
    prev: int | None = None
    for m in _delimiter(bnd).finditer(buf, start, end):
        if prev is not None:
            children.append((prev, _strip_eol(buf, prev, m.start())))
        if m.group(1):          # the close delimiter: the rest is the epilogue
            return children
        prev = m.end()
    if prev is None:
        return None
    children.append((prev, end))   # no close delimiter (a defect): the last part runs to the end
    return children


def _blocks(buf: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """``message/delivery-status``: header blocks separated by empty lines (at least one)."""
    out = []
    a = start
    while True:
        m = _BLANK_LINE.search(buf, a, end)
        b = m.start() + 1 if m is not None else end
        out.append((a, b))
        if m is None or m.end() >= end:
            return out
        a = m.end()


def _content(block: HeaderBlock, default: str) -> Message:
    """A header-only stdlib message of the part's content headers (the standard parameter rules)."""
    m = Message()
    for name in ("content-type", "content-disposition"):
        v = block.get(name)
        if v is not None:
            m[name] = v
    m.set_default_type(default)
    return m


def _param(get: Callable[[], str | None]) -> str | None:
    """A header parameter through the standard library's RFC 2231 decoding, which raises on some
    malformed continuations (``boundary*0=b; boundary*=c``: ``TypeError`` from a sort): ``None``."""
    try:
        return get()
    except (TypeError, ValueError, IndexError, LookupError, AttributeError):
        return None


def _image(info: ImageInfo, buf: bytes, start: int, end: int, cte: str, limits: MimeLimits, summary: MimeSummary,
           budget: list[int]) -> None:
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 Mpixel and raises above twice that; our own limit decides below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with io.BufferedReader(DecodedReader(buf, start, end, cte), 1 << 16) as fp, Image.open(fp) as img:
                info.format = img.format
                info.width, info.height = img.size
                info.pixels = info.width * info.height
                if info.pixels > limits.max_pixels:
                    info.error = (f"refused: {info.width}x{info.height} = {info.pixels} pixels is more than the "
                                  f"limit mime.max_pixels ({limits.max_pixels}) (decompression bomb)")
                    summary.limits.append(f"image {info.path}: {info.error}")
                    return
                if info.pixels > budget[0]:
                    info.error = (f"refused: the message's decoded images exceed the limit "
                                  f"mime.max_total_pixels ({limits.max_total_pixels})")
                    summary.limits.append(f"image {info.path}: {info.error}")
                    return
                budget[0] -= info.pixels
                img.load()
                info.decoded = True
    except Image.DecompressionBombError as e:
        info.error = f"refused: {describe(e)}"
        summary.limits.append(f"image {info.path}: {info.error}")
    except Exception as e:  # Pillow raises many types for damaged data (OSError, SyntaxError, ...)
        info.error = f"does not decode: {describe(e)}"


@dataclass
class Part:
    """One visited part: where it is in the message and what it is.

    ``start:end`` is the whole part (headers and body); ``body`` where its body starts;
    ``children`` is ``None`` for a leaf.
    """

    path: str
    depth: int
    ctype: str
    block: HeaderBlock
    start: int
    end: int
    children: list[tuple[int, int]] | None = None

    @property
    def body(self) -> int:
        return self.block.body_start

    @property
    def cte(self) -> str:
        """The ``Content-Transfer-Encoding`` (lower case, ``""`` when absent)."""
        return (self.block.get("content-transfer-encoding") or "").strip().lower()

    def is_attachment(self) -> bool:
        m = _content(self.block, self.ctype)
        return bool(_param(m.get_filename)) or (self.block.get("content-disposition") or "").strip().lower().startswith(
            "attachment")

    def decoded(self, buf: bytes) -> Iterator[bytes | memoryview]:
        """The decoded body in pieces (nothing held whole)."""
        return _chunks(buf, self.body, self.end, self.cte)


def iter_parts(buf: bytes, top: HeaderBlock, limits: MimeLimits, notes: list[str]) -> Iterator[Part]:
    """The parts of a message, depth first (the order of the standard parser's ``walk()``).

    An explicit stack, no recursion; ``max_parts``, ``max_depth`` and a part's header limits are
    applied here, each hit noted in ``notes`` in one sentence.
    """
    stack: list[tuple[int, int, int, str, str, HeaderBlock | None]] = [(0, len(buf), 0, "", "text/plain", top)]
    visited = 0
    while stack:
        start, end, depth, path, default, block = stack.pop()
        if visited >= limits.max_parts:
            notes.append(f"parts: more than the limit mime.max_parts ({limits.max_parts}) parts, the rest not visited")
            return
        if block is None:
            try:
                block = read_header_block(buf, start, end, max_headers=limits.max_headers,
                                          max_header_bytes=limits.max_header_bytes, where=f"part {path}")
            except MessageRefused as e:
                notes.append(f"part {path}: {e}; the part is not visited")
                continue
        visited += 1
        ctype = _content(block, default).get_content_type()
        body = block.body_start
        children: list[tuple[int, int]] | None = None
        child_default = "text/plain"
        if ctype == "message/delivery-status":
            children = _blocks(buf, body, end)
        elif ctype.startswith("message/"):
            children = [(body, end)]
        elif ctype.startswith("multipart/"):
            boundary = _param(_content(block, default).get_boundary)
            if boundary is None:
                block.defects += 1
            else:
                children = _multipart_children(buf, body, end, boundary)
                block.defects += children is None
                child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        yield Part(path or "0", depth, ctype, block, start, end, children)
        if children is None:
            continue
        if depth >= limits.max_depth:
            notes.append(f"depth: part {path or '0'} is at depth {depth}, the limit mime.max_depth; "
                         f"its children are not visited")
            continue
        for i in range(len(children), 0, -1):
            a, b = children[i - 1]
            stack.append((a, b, depth + 1, f"{path}.{i}" if path else str(i), child_default, None))


def _leaf(buf: bytes, part: Part, limits: MimeLimits, s: MimeSummary, budget: list[int]) -> None:
    s.leaf_parts += 1
    if part.is_attachment():
        s.attachments += 1
    if part.end - part.body > limits.max_part_bytes * 4 // 3 + 1024:
        s.limits.append(f"part {part.path}: larger than the limit mime.max_part_bytes ({limits.max_part_bytes} "
                        f"bytes), not decoded")
        return
    size = decoded_size(buf, part.body, part.end, part.cte)
    s.body_bytes += size
    if part.ctype.startswith("image/"):
        info = ImageInfo(path=part.path, content_type=part.ctype, bytes=size)
        s.images.append(info)
        _image(info, buf, part.body, part.end, part.cte, limits, s, budget)


def _visit(buf: bytes, top: HeaderBlock, limits: MimeLimits, s: MimeSummary) -> None:
    budget = [limits.max_total_pixels]
    for part in iter_parts(buf, top, limits, s.limits):
        s.parts += 1
        s.depth = max(s.depth, part.depth)
        s.defects += part.block.defects
        s.content_types[part.ctype] += 1
        if part.children is None:
            _leaf(buf, part, limits, s, budget)
        elif part.ctype.startswith("message/"):
            s.messages += 1
        else:
            s.multiparts += 1


def walk(data: bytes, limits: MimeLimits | None = None, headers: HeaderBlock | None = None) -> MimeSummary:
    """Walk the MIME tree of a message (see the module docstring).

    Parameters
    ----------
    data : bytes
        The whole message.
    limits : MimeLimits, optional
        Limits of the walk (:class:`MimeLimits` defaults).
    headers : HeaderBlock, optional
        The message's own header block, already read (saves reading it again).

    Returns
    -------
    MimeSummary
        Depth (the root is 0), counts, sizes, images; ``limits`` names every limit that was hit.
    """
    limits = limits or MimeLimits()
    s = MimeSummary(total_size=len(data))
    if len(data) > limits.max_bytes:
        s.limits.append(f"size: {len(data)} bytes is more than the limit mime.max_bytes ({limits.max_bytes}), "
                        f"the tree is not parsed")
        return s
    for containers, _ in enumerate(_CONTAINER.finditer(data), 1):
        if containers > limits.max_parts:
            s.limits.append(f"parts: more than {limits.max_parts} container parts (limit mime.max_parts), "
                            f"the tree is not parsed")
            return s
    if headers is None:
        try:
            headers = read_header_block(data, max_headers=limits.max_headers, max_header_bytes=limits.max_header_bytes)
        except MessageRefused as e:
            s.limits.append(f"headers: {e}; the tree is not parsed")
            return s
    _visit(data, headers, limits, s)
    return s


__all__ = ["CHUNK", "DecodedReader", "ImageInfo", "MimeLimits", "MimeSummary", "Part", "decoded_size", "iter_parts",
           "walk"]
