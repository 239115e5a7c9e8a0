"""Follow a growing log file across rotation and restarts, like ``tail -F`` with a memory.

:class:`Follower` yields complete lines (a partial last line waits for its newline) and survives:

* **rename rotation** (logrotate's default, Postfix's ``postfix logrotate``): when the path names a
  new file (another inode), the old file is read to its end first, then the new one from its start;
* **copytruncate rotation**: when the file shrinks below the position, reading restarts at 0;
* **restarts**: the position (device, inode, offset and a fingerprint of the file's first bytes) is
  saved to a small JSON state file, written atomically (temporary file + rename).  On start, the
  same file continues at the saved offset; if the path now names another file, the rotated file is
  looked for next to it (``<path>.1``, ``<path>.0``, ``<path>-*``) by inode, its rest is read first,
  then the new file from 0; a file whose first bytes changed (rewritten in place) starts at 0.

Delivery is at least once: :meth:`Follower.commit` saves the position of the lines handed out so
far, and the caller commits after it has made their events durable.  Lines are decoded as UTF-8 with
``surrogateescape`` (no byte sequence is fatal); a line longer than ``max_line`` bytes is cut.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

#: Bytes of the file's start hashed into the fingerprint.
FINGERPRINT_BYTES = 256


@dataclass
class Position:
    """Where the follower is: the file (device, inode, fingerprint) and the byte offset.

    ``extra`` is the consumer's small state that must change together with the position (saved in
    the same atomic write; the Postfix source keeps its event-id occurrence counters there).
    """

    path: str
    dev: int
    ino: int
    offset: int
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Position | None:
        try:
            d = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
            extra = d.get("extra") or {}
            if not isinstance(extra, dict):
                extra = {}
            return cls(str(d["path"]), int(d["dev"]), int(d["ino"]), int(d["offset"]), str(d["fingerprint"]), extra)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False), encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)


def _fingerprint(f: BinaryIO, size: int) -> str:
    data = os.pread(f.fileno(), min(FINGERPRINT_BYTES, size), 0)
    return data.hex()


class Follower:
    """Follow ``path``; see the module docstring.

    Parameters
    ----------
    path : Path
        The log file (it may not exist yet).
    state_file : Path, optional
        Where the position is remembered; without it the follower starts at the end of the file
        (``from_start`` False) or at its start.
    from_start : bool
        Without a saved position, start at the beginning (True) or the end (False) of the file.
    max_line : int
        Longest line in bytes; longer lines are cut (and counted in ``long_lines``).
    """

    def __init__(self, path: Path | str, state_file: Path | str | None = None, *, from_start: bool = False,
                 max_line: int = 64 * 1024, chunk: int = 1 << 20) -> None:
        self.path = Path(path)
        self.state_file = Path(state_file) if state_file is not None else None
        self.from_start = from_start
        self.max_line = max_line
        self.chunk = chunk
        self._f: BinaryIO | None = None
        self._stack = contextlib.ExitStack()
        self._ino: tuple[int, int] | None = None
        self._offset = 0          # offset of the first byte not yet handed out as a line
        self._buf = b""
        self._fp = ""
        self._pending_old: list[Path] = []
        self._pending: collections.deque[tuple[bytes, int]] = collections.deque()
        self.rotations = 0
        self.truncations = 0
        self.long_lines = 0
        self._started = False

    # -- file handling ----------------------------------------------------------------------
    def _open(self, path: Path, offset: int) -> bool:
        self._close()
        stack = contextlib.ExitStack()
        try:
            f = stack.enter_context(io.BufferedReader(io.FileIO(path, "r")))
        except OSError:
            return False
        self._stack = stack
        st = os.fstat(f.fileno())
        self._f = f
        self._ino = (st.st_dev, st.st_ino)
        self._offset = offset if offset <= st.st_size else 0
        self._fp = _fingerprint(f, st.st_size)
        f.seek(self._offset)
        self._buf = b""
        self._pending.clear()
        return True

    def _close(self) -> None:
        if self._f is not None:
            self._stack.close()
            self._f = None

    def _rotated_candidates(self) -> list[Path]:
        d, name = self.path.parent, self.path.name
        cands = [d / f"{name}.1", d / f"{name}.0"]
        with contextlib.suppress(OSError):
            cands += sorted((p for p in d.glob(f"{name}-*") if p.is_file()), key=lambda p: p.stat().st_mtime,
                            reverse=True)
        return cands

    def _start(self) -> None:
        self._started = True
        pos = Position.load(self.state_file) if self.state_file else None
        if pos is None or pos.path != str(self.path):
            if self.path.exists():
                size = self.path.stat().st_size
                self._open(self.path, 0 if self.from_start else size)
                if not self.from_start:   # start at a line boundary: the end
                    self._offset = size
            return
        try:
            st = self.path.stat()
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == (pos.dev, pos.ino):
            self._open(self.path, pos.offset)
            if self._fp[: len(pos.fingerprint)] != pos.fingerprint[: len(self._fp)] or pos.offset > st.st_size:
                self.truncations += 1
                self._open(self.path, 0)
            return
        # the path names another file: finish the rotated one first, if it is still there
        for cand in self._rotated_candidates():
            try:
                cst = cand.stat()
            except OSError:
                continue
            if (cst.st_dev, cst.st_ino) == (pos.dev, pos.ino):
                self._open(cand, pos.offset)
                self._pending_old = [cand]
                self.rotations += 1
                return
        self.rotations += 1
        self._open(self.path, 0)

    # -- reading ----------------------------------------------------------------------------
    def read_lines(self) -> Iterator[str]:
        """Yield the complete lines available now (without newlines), then return.

        The consumer may stop early (``break``): lines already read from the file but not handed
        out are kept and come first at the next call; the position counts handed-out lines only.
        """
        if not self._started:
            self._start()
        pending = self._pending
        while True:
            while pending:
                raw, used = pending.popleft()
                self._offset += used
                yield raw.decode("utf-8", "surrogateescape")
            if self._f is None and not self._open(self.path, 0):
                return
            f = self._f
            assert f is not None
            # before reading: was the file truncated (copytruncate) or rewritten in place?
            cur = os.fstat(f.fileno()).st_size
            fp = _fingerprint(f, cur)
            if cur < f.tell() or not (fp.startswith(self._fp) or self._fp.startswith(fp)):
                self.truncations += 1
                self._open(self.path, 0)
                continue
            if len(fp) > len(self._fp):
                self._fp = fp
            data = f.read(self.chunk)
            if data:
                lines = (self._buf + data).split(b"\n")
                self._buf = lines.pop()
                for raw in lines:
                    if len(raw) > self.max_line:
                        self.long_lines += 1
                        pending.append((raw[: self.max_line], len(raw) + 1))
                    else:
                        pending.append((raw, len(raw) + 1))
                if len(self._buf) > self.max_line:   # a runaway line: cut it now
                    self.long_lines += 1
                    pending.append((self._buf[: self.max_line], len(self._buf)))
                    self._buf = b""
                continue
            # at the end of this file: did it rotate or shrink?
            if self._pending_old:
                self._pending_old = []
                yield from self._flush_partial()
                self._open(self.path, 0)
                continue
            try:
                st = self.path.stat()
            except OSError:
                return   # rotated away, the new file is not there yet: keep reading the old one next time
            if self._ino is not None and (st.st_dev, st.st_ino) != self._ino:
                self.rotations += 1
                yield from self._flush_partial()
                if not self._open(self.path, 0):
                    return
                continue
            return

    def _flush_partial(self) -> Iterator[str]:
        # A rotated file's unterminated last line is complete: nothing more will be appended to it.
        buf, self._buf = self._buf, b""
        if buf:
            self._offset += len(buf)
            yield buf[: self.max_line].decode("utf-8", "surrogateescape")

    def follow(self, poll_s: float = 0.5, stop: threading.Event | None = None) -> Iterator[str]:
        """Yield lines forever (until ``stop.is_set()``), polling every ``poll_s`` at the end."""
        while stop is None or not stop.is_set():
            got = False
            for line in self.read_lines():
                got = True
                yield line
            if not got:
                time.sleep(poll_s)

    # -- position ---------------------------------------------------------------------------
    @property
    def position(self) -> Position | None:
        """The position after the last line handed out (``None`` before a file was opened)."""
        if self._ino is None:
            return None
        return Position(str(self.path), self._ino[0], self._ino[1], self._offset, self._fp)

    def commit(self, extra: dict[str, Any] | None = None) -> None:
        """Save the position of the lines handed out so far, with the caller's ``extra`` state
        (no-op without a state file)."""
        pos = self.position
        if self.state_file is not None and pos is not None:
            if extra is not None:
                pos.extra = extra
            pos.save(self.state_file)

    def close(self) -> None:
        self._close()


__all__ = ["FINGERPRINT_BYTES", "Follower", "Position"]
