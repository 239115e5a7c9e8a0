"""What operators said about incidents: acknowledged, silenced until a time - kept across restarts.

:class:`IncidentActions` holds one entry per incident id (``acked``/``acked_by``, ``silenced_until``/
``silenced_by``, ``note``, the incident's ``root_cause``) in a JSON file in the collector's state
folder (``<archive>/state/incident-actions.json``), written whole on every change (temporary file,
fsync, rename), so a crash leaves the old or the new file, never half of one.

What the alerts make of it (:meth:`IncidentActions.mute`):

* **silenced**: no alert mail or webhook for that incident until ``silenced_until`` - and none for a
  new incident at the same root cause while the silence lasts (a flapping relay stays quiet); after
  it the incident's transitions are mailed again;
* **acknowledged**: someone works on it - no more mails about it except its resolution.

A file that cannot be read, is not JSON or does not hold what is written here is set aside as
``incident-actions.json.bad`` with one warning sentence, and the collector starts with no
actions; entries with wrong fields are skipped one by one.  At most :data:`MAX_ENTRIES` entries
are kept (expired silences without an acknowledgement go first, then the oldest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["MAX_ENTRIES", "MAX_SILENCE_S", "IncidentActions"]

#: Most incidents with an action kept.
MAX_ENTRIES = 1000
#: Longest silence (seconds): a week.
MAX_SILENCE_S = 7 * 86400.0
_MAX_TEXT = 200


def _text(v: Any) -> str:
    return str(v)[:_MAX_TEXT] if isinstance(v, str) else ""


def _time(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


class IncidentActions:
    """Acknowledgements and silences by incident id (see the module docstring).

    Parameters
    ----------
    path : path, optional
        The state file (None: in memory only, tests).
    clock : callable
        Wall-clock time source (tests).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self.lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        self.load_error: str | None = None
        if self.path is not None:
            self._load()

    # -- persistence ------------------------------------------------------------------------------

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_bytes())
            if not isinstance(doc, dict) or doc.get("schema") != 1 or not isinstance(doc.get("incidents"), dict):
                raise ValueError("it is not an incident actions file (schema 1)")
        except (OSError, ValueError, RecursionError) as e:
            self.load_error = (f"incident actions file {self.path} cannot be used ({str(e)[:120]}); it was set aside "
                               f"as {self.path.name}.bad and the collector starts with no acknowledgements or "
                               "silences")
            log.warning("%s", self.load_error)
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_name(self.path.name + ".bad"))
            return
        for iid, raw in list(doc["incidents"].items())[:MAX_ENTRIES]:
            entry = self._clean(raw)
            if isinstance(iid, str) and iid and len(iid) <= _MAX_TEXT and entry is not None:
                self.entries[iid] = entry

    @staticmethod
    def _clean(e: Any) -> dict[str, Any] | None:
        if not isinstance(e, dict):
            return None
        out = {"root_cause": _text(e.get("root_cause")), "acked": _time(e.get("acked")),
               "acked_by": _text(e.get("acked_by")), "silenced_until": _time(e.get("silenced_until")),
               "silenced_by": _text(e.get("silenced_by")), "note": _text(e.get("note")),
               "changed": _time(e.get("changed")) or 0.0}
        if out["acked"] is None and out["silenced_until"] is None:
            return None
        return out

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"schema": 1, "incidents": self.entries}, indent=1, sort_keys=True).encode()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def _bound(self) -> None:
        now = self.clock()
        if len(self.entries) <= MAX_ENTRIES:
            return
        for iid in [k for k, e in self.entries.items() if e["acked"] is None and (e["silenced_until"] or 0) < now]:
            del self.entries[iid]
        for iid in sorted(self.entries, key=lambda k: self.entries[k]["changed"])[: len(self.entries) - MAX_ENTRIES]:
            del self.entries[iid]

    # -- changes ----------------------------------------------------------------------------------

    def _entry(self, iid: str, root_cause: str) -> dict[str, Any]:
        e = self.entries.get(iid) or {"root_cause": "", "acked": None, "acked_by": "", "silenced_until": None,
                                      "silenced_by": "", "note": "", "changed": 0.0}
        if root_cause:
            e["root_cause"] = _text(root_cause)
        e["changed"] = self.clock()
        self.entries[iid] = e
        return e

    def acknowledge(self, iid: str, root_cause: str = "", by: str = "", note: str = "") -> dict[str, Any]:
        """Mark ``iid`` acknowledged (no more mails about it but its resolution)."""
        with self.lock:
            e = self._entry(iid, root_cause)
            e["acked"], e["acked_by"] = self.clock(), _text(by)
            if note:
                e["note"] = _text(note)
            self._bound()
            self._save()
            return self.view_one(iid)

    def silence(self, iid: str, duration_s: float, root_cause: str = "", by: str = "",
                note: str = "") -> dict[str, Any]:
        """Silence ``iid`` (and its root cause) for ``duration_s`` seconds (at most :data:`MAX_SILENCE_S`)."""
        if not (isinstance(duration_s, int | float) and math.isfinite(duration_s) and 0 < duration_s <= MAX_SILENCE_S):
            raise ValueError(f"a silence lasts more than 0 s and at most {MAX_SILENCE_S:.0f} s, not {duration_s!r}")
        with self.lock:
            e = self._entry(iid, root_cause)
            e["silenced_until"], e["silenced_by"] = self.clock() + float(duration_s), _text(by)
            if note:
                e["note"] = _text(note)
            self._bound()
            self._save()
            return self.view_one(iid)

    def clear(self, iid: str) -> dict[str, Any]:
        """Forget the acknowledgement and silence of ``iid``."""
        with self.lock:
            if self.entries.pop(iid, None) is not None:
                self._save()
            return self.view_one(iid)

    # -- questions --------------------------------------------------------------------------------

    def view_one(self, iid: str) -> dict[str, Any]:
        """What the dashboard shows for ``iid`` (``silenced`` only while the silence lasts)."""
        e = self.entries.get(iid)
        if e is None:
            return {"id": iid, "acked": None, "silenced": False}
        until = e["silenced_until"]
        return {"id": iid, **e, "silenced": until is not None and until > self.clock()}

    def view(self) -> dict[str, dict[str, Any]]:
        """Every entry, by incident id (the dashboard's ``actions``)."""
        with self.lock:
            return {iid: self.view_one(iid) for iid in self.entries}

    def mute(self, kind: str, inc: dict[str, Any]) -> str | None:
        """Why the ``kind`` transition of ``inc`` sends no alert (``silenced``, ``acknowledged``), else None."""
        now = self.clock()
        iid, cause = str(inc.get("id", "")), str(inc.get("root_cause", ""))
        with self.lock:
            e = self.entries.get(iid)
            if e is not None and (e["silenced_until"] or 0) > now:
                return "silenced"
            if cause and any(x["root_cause"] == cause and (x["silenced_until"] or 0) > now
                             for x in self.entries.values()):
                return "silenced"
            if e is not None and e["acked"] is not None and kind != "resolved":
                return "acknowledged"
        return None
