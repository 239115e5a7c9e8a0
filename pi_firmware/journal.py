"""Follow the systemd journal for Postfix's entries, with the cursor kept across restarts.

Many current systems keep Postfix's log only in the journal.  :class:`JournalSource` runs
``journalctl --output=json --follow`` with matches for the Postfix units (``-u``) and syslog
identifiers (``-t``), turns each entry into a canonical log line
(:func:`mailpulse.pi_firmware.logformats.journal_entry`) and feeds the same parser as the file
follower (:class:`mailpulse.pi_firmware.postfix.PostfixParser`).

Restarts: after the events of a batch are durable (``emit`` returned), the cursor of the last
entry read (``__CURSOR``) is saved atomically to ``state_file`` together with the parser's event-id
occurrence counters, like the file follower's offset; the next start passes it as
``--after-cursor``, so nothing is read twice or lost.  The queue-id join is saved beside it
(``<state_file>.join``).  Without a cursor the source starts at the journal's end (or its start
with ``from_start``).

Isolation: an entry that is not JSON, or a line whose handling raises, is recorded in the
quarantine and skipped.  If ``journalctl`` exits (it is missing, a match is refused, it is killed),
:meth:`JournalSource.run` raises with its status and last error line, and the node's supervisor
restarts the source after a back-off, reporting it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mailpulse.config.node import JournalSettings

from .events import Event
from .logformats import journal_entry
from .postfix import PostfixParser
from .quarantine import Quarantine

#: Fields journalctl is asked for (it always adds the cursor and the timestamps).
OUTPUT_FIELDS = ("MESSAGE", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "_PID", "_COMM", "_HOSTNAME",
                 "_SOURCE_REALTIME_TIMESTAMP")


class JournalSource:
    """Follows the journal for Postfix and emits delivery events (see the module docstring)."""

    name = "journal"

    def __init__(self, settings: JournalSettings, node: str, *, year: int | None = None,
                 max_queue_ids: int = 100_000, max_lines: int = 5000, join_save_s: float = 5.0,
                 quarantine: Quarantine | None = None) -> None:
        self.settings = settings
        self.node = node
        self.year, self.max_queue_ids = year, max_queue_ids
        self.max_lines, self.join_save_s = max_lines, join_save_s
        self.state_file = Path(settings.state_file) if settings.state_file else None
        self.quarantine = quarantine or Quarantine()
        self.entries = 0
        self.bad_entries = 0
        self.parser: PostfixParser | None = None
        self.cursor: str | None = None

    def counters(self) -> dict[str, int]:
        c = self.parser.counters if self.parser is not None else None
        return {"entries": self.entries, "bad_entries": self.bad_entries, "events": c.events if c else 0,
                "unparsed": c.unparsed if c else 0, "errors": c.errors if c else 0}

    # -- state --------------------------------------------------------------------------------
    @property
    def join_file(self) -> Path | None:
        return None if self.state_file is None else Path(str(self.state_file) + ".join")

    def _load(self, parser: PostfixParser) -> None:
        if self.state_file is None:
            return
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            doc = json.loads(self.state_file.read_text(encoding="utf-8"))
            cursor = doc.get("cursor")
            if isinstance(cursor, str) and cursor:
                self.cursor = cursor
            join = self.join_file
            if join is not None:
                parser.load_state(join)
            if "occurrences" in doc:
                parser.restore_occurrences(doc["occurrences"])

    def _commit(self, parser: PostfixParser) -> None:
        if self.state_file is None or self.cursor is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"cursor": self.cursor, "occurrences": parser.occurrence_state()}),
                       encoding="utf-8")
        os.replace(tmp, self.state_file)

    # -- journalctl ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The ``journalctl`` command line (with the saved cursor, if any)."""
        s = self.settings
        cmd = [s.journalctl, "--output=json", "--follow", "--no-pager", "--all",
               "--output-fields=" + ",".join(OUTPUT_FIELDS)]
        if s.namespace:
            cmd.append(f"--namespace={s.namespace}")
        if s.directory:
            cmd.append(f"--directory={s.directory}")
        if s.identifiers:
            cmd += [f"--identifier={t}" for t in s.identifiers]
        else:
            cmd += [f"--unit={u}" for u in s.units]
        if self.cursor is not None:
            cmd.append(f"--after-cursor={self.cursor}")
        else:
            cmd.append("--lines=all" if s.from_start else "--lines=0")
        return cmd

    def _entries(self, raw: Sequence[bytes]) -> list[str]:
        """Canonical lines of raw JSON entries; the cursor advances to the last entry read."""
        out = []
        for b in raw:
            self.entries += 1
            try:
                doc = json.loads(b)
            except (ValueError, RecursionError) as e:
                self.bad_entries += 1
                self.quarantine.record(self.name, "journalctl", f"a journal entry that is not JSON: {e}", b[:1024])
                continue
            if not isinstance(doc, dict):
                self.bad_entries += 1
                continue
            cur = doc.get("__CURSOR")
            if isinstance(cur, str) and cur:
                self.cursor = cur
            line = journal_entry(doc)
            if line is None:
                self.bad_entries += 1
                self.quarantine.record(self.name, self.cursor or "", "a journal entry without a message, "
                                       "program or time", b[:1024])
                continue
            out.append(line)
        return out

    def run(self, emit: Callable[[Sequence[Event]], None], stop: threading.Event) -> None:
        """Source protocol: follow until ``stop`` is set; raise when journalctl exits."""
        parser = PostfixParser(self.node, year=self.year, max_queue_ids=self.max_queue_ids,
                               on_error=lambda line, why: self.quarantine.record(self.name, self.cursor or "", why,
                                                                                 line))
        if self.parser is not None:
            parser.counters = self.parser.counters
        self.parser = parser
        self._load(parser)
        proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        buf = b""
        saved = time.monotonic()
        try:
            while not stop.is_set():
                pending: list[bytes] = []
                deadline = time.monotonic() + self.settings.poll_s
                eof = False
                while len(pending) < self.max_lines and not stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0 or not sel.select(left):
                        break
                    data = os.read(fd, 1 << 16)
                    if not data:
                        eof = True
                        break
                    lines = (buf + data).split(b"\n")
                    buf = lines.pop()
                    pending += [x for x in lines if x]
                if pending:
                    emit(list(parser.feed(self._entries(pending))))
                    self._commit(parser)
                    join = self.join_file
                    if join is not None and time.monotonic() - saved >= self.join_save_s:
                        parser.save_state(join)
                        saved = time.monotonic()
                if eof:
                    proc.wait(5)
                    err = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
                    raise RuntimeError(f"journalctl exited with status {proc.returncode}"
                                       + (f": {err[-1][:300]}" if err else ""))
        finally:
            sel.close()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            join = self.join_file
            if join is not None:
                parser.save_state(join)


__all__ = ["OUTPUT_FIELDS", "JournalSettings", "JournalSource"]
