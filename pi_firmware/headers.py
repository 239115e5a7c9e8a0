"""Header blocks of a message, read from its bytes under limits (RFC 5322, with RFC 6532 UTF-8).

:func:`read_header_block` finds the fields of the header block that starts at an offset of a
message buffer without copying the body: the block ends at the first empty line, or at the first
line that is neither a field (``Name:``) nor a continuation (white space first), as the standard
library's parser does (the latter counts as a defect).  A leading ``From `` line (mbox) is
skipped.  Before any field is decoded, the block is checked against two limits, and a block that
breaks one raises :class:`MessageRefused` with one sentence naming the limit:

* ``max_headers``: fields in the block;
* ``max_header_bytes``: bytes of one field, continuation lines included.

Values are decoded as UTF-8 (RFC 6532 allows UTF-8 in header fields); a byte sequence that is not
UTF-8 becomes U+FFFD.  Values keep their folding (``\\n`` + white space) as compat32 does.

:func:`count_addresses` counts the addresses of ``To:``/``Cc:`` values without recursion (the
standard library's ``getaddresses`` recurses once per group or comment level and raises
``RecursionError`` on hostile input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .received import split_comments

#: A field's first line (the standard library's ``headerRE``, without the continuation case).
_FIELD = re.compile(rb"[!-9;-~]*:")
#: The start of a field (any line that does not start with white space or end the block).
_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)
#: The empty line that ends a header block.
_BLANK = re.compile(rb"\n\r?\n")
#: Tokens of an address list (after comments are removed).
_ADDR_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^>]*>?|\[[^\]]*\]?|[,;:]|[^",;:<\[]+', re.DOTALL)


class MessageRefused(ValueError):
    """A message (or one of its parts) refused whole by a limit; ``str()`` is one sentence that
    names the limit (``limit`` holds its config name)."""

    def __init__(self, limit: str, sentence: str) -> None:
        super().__init__(sentence)
        self.limit = limit


@dataclass
class HeaderBlock:
    """The fields of one header block and where the body after it starts."""

    fields: list[tuple[str, str]] = field(default_factory=list)   # (lower-case name, value)
    body_start: int = 0
    defects: int = 0

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field called ``name`` (any case)."""
        name = name.lower()
        for k, v in self.fields:
            if k == name:
                return v
        return default

    def __getitem__(self, name: str) -> str | None:
        """Like :class:`email.message.Message`: the first value, ``None`` when absent."""
        return self.get(name)

    def get_all(self, name: str) -> list[str]:
        """The values of every field called ``name``, in header order."""
        name = name.lower()
        return [v for k, v in self.fields if k == name]


def _block_end(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header lines, start of the body) of the block at ``start``."""
    if buf.startswith(b"\n", start, end):
        return start, start + 1
    if buf.startswith(b"\r\n", start, end):
        return start, start + 2
    m = _BLANK.search(buf, start, end)
    if m is None:
        return end, end
    return m.start() + 1, m.end()


def read_header_block(buf: bytes, start: int = 0, end: int | None = None, *, max_headers: int = 1000,
                      max_header_bytes: int = 64 << 10, where: str = "the message") -> HeaderBlock:
    """Read the header block at ``buf[start:end]`` (see the module docstring).

    Raises
    ------
    MessageRefused
        When the block has more than ``max_headers`` fields or one field is longer than
        ``max_header_bytes``; the sentence names ``where`` and the limit.
    """
    end = len(buf) if end is None else end
    hdr_end, body_start = _block_end(buf, start, end)
    block = HeaderBlock(body_start=body_start)
    starts: list[int] = []
    first = True
    for m in _FIELD_START.finditer(buf, start, hdr_end):
        p = m.start()
        if first:
            first = False
            block.defects += p != start            # the block starts with a continuation line
            if buf.startswith(b"From ", p):         # mbox separator line: not a field
                continue
        if _FIELD.match(buf, p, min(hdr_end, p + max_header_bytes + 1)) is None:
            block.defects += 1                       # not a field: the body starts here
            hdr_end = block.body_start = p
            break
        starts.append(p)
        if len(starts) > max_headers:
            raise MessageRefused("max_headers", f"{where} has more than {max_headers} header fields "
                                                f"(limit mime.max_headers)")
    starts.append(hdr_end)
    for i in range(len(starts) - 1):
        a, b = starts[i], starts[i + 1]
        if b - a > max_header_bytes:
            name = buf[a:a + 64].split(b":", 1)[0].decode("utf-8", "replace")
            raise MessageRefused("max_header_bytes", f"{where} has a header field {name!r} of {b - a} bytes, "
                                                     f"more than the limit mime.max_header_bytes ({max_header_bytes})")
        line = buf[a:b]
        colon = line.index(b":")
        name = line[:colon].decode("utf-8", "replace").strip().lower()
        value = line[colon + 1:].decode("utf-8", "replace").lstrip(" \t").rstrip("\r\n")
        block.fields.append((name, value))
    return block


def count_addresses(values: list[str]) -> int:
    """Number of addresses in address-list values (``To:``, ``Cc:``): comments removed, group
    names and empty ``<>`` not counted, anything else between commas is one address."""
    n = 0
    for value in values:
        plain, _ = split_comments(value)
        angle_seen = angle_addr = text = False
        for tok in _ADDR_TOKEN.findall(plain):
            c = tok[0]
            if c in ",;":
                n += angle_addr if angle_seen else text
                angle_seen = angle_addr = text = False
            elif c == ":":
                angle_seen = angle_addr = text = False   # a group's display name
            elif c == "<":
                angle_seen = True
                angle_addr = angle_addr or bool(tok.strip("<> \t\r\n"))
            elif tok.strip():
                text = True
        n += angle_addr if angle_seen else text
    return n


__all__ = ["HeaderBlock", "MessageRefused", "count_addresses", "read_header_block"]
