"""Copying the base image and checking it: sha256 checksums, ``.xz`` decompression and copies that
stay sparse (holes stay holes, all-zero blocks are not written)."""

from __future__ import annotations

import errno
import hashlib
import io
import lzma
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

__all__ = ["allocated_bytes", "copy_extents", "data_extents", "decompress_xz", "expected_sha256", "materialise",
           "sha256_file", "sparse_copy", "verify_checksum"]

_BLOCK = 64 * 1024
_ZERO_BLOCK = bytes(_BLOCK)
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def expected_sha256(value: str | None) -> str | None:
    """An expected checksum given as 64 hex digits or as a ``.sha256`` file (``<hex>  <name>``)."""
    if not value:
        return None
    if _SHA256_RE.match(value.strip()):
        return value.strip().lower()
    p = Path(value)
    if p.is_file():
        first = p.read_text(errors="replace").split()
        if first and _SHA256_RE.match(first[0]):
            return first[0].lower()
        raise UserError(f"the checksum file {p} does not start with a sha256 (64 hex digits)")
    raise UserError(f"--sha256 must be 64 hex digits or a .sha256 file, not {value!r}")


def verify_checksum(path: Path, expected: str | None) -> None:
    """Nothing when ``expected`` is None or matches; else a :class:`UserError`."""
    if expected is None:
        return
    got = sha256_file(path)
    if got != expected.lower():
        raise UserError(f"{path} does not match its expected sha256: expected {expected.lower()}, got {got} "
                        "(download it again)")


def data_extents(f: io.BufferedReader | Any, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the data regions of a file, skipping holes (SEEK_DATA/SEEK_HOLE)."""
    fd = f.fileno()
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # no SEEK_DATA here: treat the rest as data
                yield pos, size
            return  # ENXIO: only a hole is left
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def _write_sparse(dst: Any, offset: int, data: bytes | memoryview) -> int:
    """Write ``data`` at ``offset`` skipping all-zero 64 KiB blocks; return bytes written."""
    view = memoryview(data)
    written = 0
    i = 0
    n = len(view)
    while i < n:
        blk = view[i : i + _BLOCK]
        if blk != _ZERO_BLOCK[: len(blk)]:
            j = i + len(blk)
            while j < n and view[j : j + _BLOCK] != _ZERO_BLOCK[: len(view[j : j + _BLOCK])]:
                j += _BLOCK
            j = min(j, n)
            dst.seek(offset + i)
            dst.write(view[i:j])
            written += j - i
            i = j
        else:
            i += len(blk)
    return written


def copy_extents(src: Any, dst: Any, size: int, *, sparse: bool) -> None:
    """Copy the data regions of ``src`` (an open file of ``size`` bytes) to the same offsets of
    ``dst``; holes are skipped, and with ``sparse`` all-zero blocks too."""
    for start, end in data_extents(src, size):
        pos = start
        while pos < end:
            src.seek(pos)
            chunk = src.read(min(4 << 20, end - pos))
            if not chunk:
                break
            if sparse:
                _write_sparse(dst, pos, chunk)
            else:
                dst.seek(pos)
                dst.write(chunk)
            pos += len(chunk)


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (a new file) keeping it sparse: holes stay holes, zero blocks are
    not written.  Data regions are found with SEEK_DATA/SEEK_HOLE."""
    size = src.stat().st_size
    with src.open("rb") as fi, dst.open("wb") as fo:
        copy_extents(fi, fo, size, sparse=True)
        fo.truncate(size)


def decompress_xz(src: Path, dst: Path) -> None:
    """Decompress an ``.xz`` image into a new sparse file."""
    pos = 0
    try:
        with lzma.open(src, "rb") as fi, dst.open("wb") as fo:
            while chunk := fi.read(4 << 20):
                _write_sparse(fo, pos, chunk)
                pos += len(chunk)
            fo.truncate(pos)
    except (lzma.LZMAError, EOFError) as e:
        raise UserError(f"{src} is not a complete .xz file: {e}") from None


def materialise(base: Path, dst: Path) -> None:
    """Copy (``.img``) or decompress (``.img.xz``) the base image to ``dst``, sparse."""
    if not base.is_file():
        raise UserError(f"the base image {base} does not exist")
    if base.suffix == ".xz":
        decompress_xz(base, dst)
    elif base.suffix in (".zip", ".gz"):
        raise UserError(f"{base}: give the image as .img or .img.xz (unpack {base.suffix} files first)")
    else:
        sparse_copy(base, dst)


def allocated_bytes(path: Path) -> int:
    """Bytes a file really occupies on disk (less than its size when it is sparse)."""
    return path.stat().st_blocks * 512
