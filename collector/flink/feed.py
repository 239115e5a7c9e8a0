"""Reading the Flink job's incident log (no pyflink here): the ``mailpulse flink run --follow``
printer and the collector's dashboard and alerts (``[flink] incidents_dir``) use it.

The job's FileSink writes ``incidents-<id>-<subtask>-<part>.jsonl`` files into the folder and
makes a file visible (renames it from a hidden in-progress name) only when the checkpoint that
holds its lines has completed, so what is visible is exactly once.  Change records carry ``seq``
(0, 1, ... over the job's life, across restarts); :class:`IncidentFeed` releases them in that
order, each once, and the progress records as they come.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mailpulse.collector.correlate import Change

__all__ = ["IncidentFeed", "as_change"]

log = logging.getLogger(__name__)


class IncidentFeed:
    """Polls an incident log folder for records not seen yet (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.offsets: dict[str, int] = {}
        self.next_seq = 0
        self._held: dict[int, dict[str, Any]] = {}
        self.progress: dict[str, Any] | None = None

    def poll(self) -> list[dict[str, Any]]:
        """New records: changes in ``seq`` order without gaps, progress records; bad lines are logged."""
        out: list[dict[str, Any]] = []
        try:
            names = sorted(n for n in os.listdir(self.folder) if n.startswith("incidents-"))
        except OSError:
            return out
        for name in names:
            path = self.folder / name
            at = self.offsets.get(name, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(at)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1
            self.offsets[name] = at + end
            for line in data[:end].splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    log.error("incident log %s: a line that is not JSON, skipped", path)
                    continue
                if rec.get("type") == "change" and isinstance(rec.get("seq"), int):
                    if rec["seq"] >= self.next_seq:
                        self._held[rec["seq"]] = rec
                elif rec.get("type") == "progress":
                    self.progress = rec
                    out.append(rec)
        while self.next_seq in self._held:
            out.append(self._held.pop(self.next_seq))
            self.next_seq += 1
        return out


def as_change(rec: dict[str, Any]) -> Change:
    """A change record of the log as the correlator's :class:`Change` (what the collector publishes)."""
    return Change(rec["kind"], rec["incident"], rec.get("previous_severity"))
